"""Label values used inside the node for every segmentation (design.md convention)."""
from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0
    LV_BLOOD_POOL = 1
    LV_MYOCARDIUM = 2  # healthy LV myocardium
    SCAR = 3
    MVO = 4
    RV_BLOOD_POOL = 5


#: labels that together make the whole LV myocardium
MYOCARDIUM_LABELS = (Label.LV_MYOCARDIUM, Label.SCAR, Label.MVO)
#: labels counted as enhanced (scar incl. MVO) for %LGE
ENHANCED_LABELS = (Label.SCAR, Label.MVO)

#: dataset label value -> node label
EMIDEC_TO_NODE = {0: Label.BACKGROUND, 1: Label.LV_BLOOD_POOL, 2: Label.LV_MYOCARDIUM, 3: Label.SCAR, 4: Label.MVO}
ACDC_TO_NODE = {0: Label.BACKGROUND, 1: Label.RV_BLOOD_POOL, 2: Label.LV_MYOCARDIUM, 3: Label.LV_BLOOD_POOL}
#: MyoPS 2020: edema (1220) is myocardium that is not enhanced on LGE; MVO is inside its scar label (2221)
MYOPS_TO_NODE = {0: Label.BACKGROUND, 500: Label.LV_BLOOD_POOL, 200: Label.LV_MYOCARDIUM, 1220: Label.LV_MYOCARDIUM,
                 2221: Label.SCAR, 600: Label.RV_BLOOD_POOL}
