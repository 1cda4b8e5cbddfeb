"""Every coded concept the result objects use, standard and private, in one place (listed in docs/conformance.md)."""
from __future__ import annotations

import typing

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

from dicomnode.config import LGEConfig

#: private coding scheme of this project; every code below with this designator is documented in conformance.md
PRIVATE_SCHEME = "99DICOMNODE"
PRIVATE_SCHEME_NAME = "dicomnode private codes"
PRIVATE_SCHEME_RESPONSIBLE = "dicomnode project"

# --- IHE AI Results (AIR) ------------------------------------------------------------------------------------
PROCESSING_ALGORITHM = Code("Newcode1", "99IHE", "Processing Algorithm")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # algorithm family (CID 7162)

# --- SEG segment categories and types ------------------------------------------------------------------------
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
#: the older code for the same category; accepted on read, never written
ANATOMICAL_STRUCTURE_LEGACY = Code("123037004", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LEFT_VENTRICLE = Code("87878005", "SCT", "Left ventricle")
RIGHT_VENTRICLE = Code("53085002", "SCT", "Right ventricle")
LV_MYOCARDIUM = Code("49848007", "SCT", "Left ventricle myocardium")
SCAR_TISSUE = Code("12402003", "SCT", "Scar tissue")
MVO = Code("MVO", PRIVATE_SCHEME, "Microvascular obstruction")
HEART = Code("80891009", "SCT", "Heart")

# --- SR: document, procedure, findings -------------------------------------------------------------------------
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
#: TID 1500 row 4 "Procedure reported" takes its value from CID 100 (pixelmed checks it as closed)
MRI_UNSPECIFIED_BODY_REGION = Code("25056-3", "LN", "MRI unspecified body region")
#: the specific procedure: study-level Procedure Code Sequence (0008,1032) of the SR
MR_OF_HEART = Code("241620005", "SCT", "Magnetic resonance imaging of heart")
LATE_CONTRAST_ENHANCEMENT = Code("122664", "DCM", "Late Contrast Enhancement")
SCARRED_MYOCARDIUM = Code("122113", "DCM", "Scarred Myocardium")
NORMAL_MYOCARDIUM = Code("122112", "DCM", "Normal Myocardium")
CARDIAC_CYCLE_PHASE = Code("246092007", "SCT", "Cardiac cycle phase")
END_DIASTOLE = Code("416190007", "SCT", "End diastole")
END_SYSTOLE = Code("416430001", "SCT", "End systole")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
#: a yes/no finding the node cannot state (the large-burden flag within the model's known error of its cut-off)
UNDETERMINED = Code("373068000", "SCT", "Undetermined")
PAPILLARY_MUSCLE_EXCLUDED = Code("122620", "DCM", "Papillary Muscle Excluded")
PAPILLARY_MUSCLE_INCLUDED = Code("122621", "DCM", "Papillary Muscle Included")

# --- SR: measurement concepts ----------------------------------------------------------------------------------
VOLUME = Code("118565006", "SCT", "Volume")
LV_EF_MR = Code("8811-2", "LN", "Left ventricular Ejection fraction by MR")
RV_EF_MR = Code("8818-7", "LN", "Right ventricular Ejection fraction by MR")
LV_EDV = Code("8821-1", "LN", "Left ventricular end-diastolic volume")
LV_ESV = Code("8823-7", "LN", "Left ventricular end-systolic volume")
RV_EDV = Code("8822-9", "LN", "Right ventricular end-diastolic volume")
RV_ESV = Code("8824-5", "LN", "Right ventricular end-systolic volume")
STROKE_VOLUME = Code("90096001", "SCT", "Stroke Volume")
LV_MASS = Code("18087-7", "LN", "Left ventricle mass")
BODY_SURFACE_AREA = Code("8277-6", "LN", "Body Surface Area")
#: CID 3663 Body Surface Area Equations
BSA_DUBOIS = Code("122241", "DCM", "BSA = 0.007184*WT^0.425*HT^0.725")
BSA_MOSTELLER = Code("122244", "DCM", "BSA = (HT*WT/36)^0.5")
BSA_FORMULAS = {"dubois": BSA_DUBOIS, "mosteller": BSA_MOSTELLER}

#: CID 3717 Myocardial Wall Segments (AHA 17-segment model), codes as in PS3.16 (pydicom's CID 3717 table)
AHA_SEGMENTS = {
    1: Code("264850008", "SCT", "left ventricle basal anterior segment"),
    2: Code("396482007", "SCT", "left ventricle basal anteroseptal segment"),
    3: Code("396646008", "SCT", "left ventricle basal inferoseptal segment"),
    4: Code("264846001", "SCT", "left ventricle basal inferior segment"),
    5: Code("396652009", "SCT", "left ventricle basal inferolateral segment"),
    6: Code("396654005", "SCT", "left ventricle basal anterolateral segment"),
    7: Code("264848000", "SCT", "left ventricle mid anterior segment"),
    8: Code("396647004", "SCT", "left ventricle mid anteroseptal segment"),
    9: Code("396649001", "SCT", "left ventricle mid inferoseptal segment"),
    10: Code("264847005", "SCT", "left ventricle mid inferior segment"),
    11: Code("396655006", "SCT", "left ventricle mid inferolateral segment"),
    12: Code("396656007", "SCT", "left ventricle mid anterolateral segment"),
    13: Code("264844003", "SCT", "left ventricle apical anterior segment"),
    14: Code("264845002", "SCT", "left ventricle apical septal segment"),
    15: Code("264849008", "SCT", "left ventricle apical inferior segment"),
    16: Code("264853005", "SCT", "left ventricle apical lateral segment"),
    17: Code("128564006", "SCT", "Apex of left ventricle"),
}

# private measurement concepts (no standard code exists for these)
#: %LGE of the deep-learning segmentation (summary.json `lge_percent`); the threshold methods' %LGE have concepts of
#: their own, so a viewer that shows only concept names and values (OHIF v3) tells the three apart
LGE_PERCENT = Code("LGEPCT", PRIVATE_SCHEME, "LGE extent, % of LV myocardial volume")
#: %LGE of the n-SD threshold method, one concept per n the configuration allows (analysis.lge.nsd_n): a 2-SD %LGE
#: is about twice a 5-SD one, so a viewer listing concept names (OHIF) or a registry aggregating by code must not
#: read them as one quantity. No standard code exists (DCM and SNOMED CT name no threshold-based LGE extent).
LGE_PERCENT_NSD_BY_N = {n: Code(f"LGEPCT{n}SD", PRIVATE_SCHEME, f"LGE extent by {n}-SD threshold, % of LV myocardial "
                                                                "volume")
                        for n in typing.get_args(LGEConfig.model_fields["nsd_n"].annotation)}
#: the n-SD concept before it was one per n; written only for an n the configuration no longer allows
LGE_PERCENT_NSD = Code("LGEPCTNSD", PRIVATE_SCHEME, "LGE extent by n-SD threshold, % of LV myocardial volume")


def lge_percent_nsd(n) -> Code:
    """The NUM concept of the n-SD %LGE for `n` standard deviations (LGE_PERCENT_NSD_BY_N; LGE_PERCENT_NSD for an n
    outside it)."""
    return LGE_PERCENT_NSD_BY_N.get(n, LGE_PERCENT_NSD)


LGE_PERCENT_FWHM = Code("LGEPCTFWHM", PRIVATE_SCHEME, "LGE extent by FWHM threshold, % of LV myocardial volume")
LARGE_LGE_BURDEN = Code("LGEBURDEN", PRIVATE_SCHEME, "Large LGE burden")
#: no longer written: the cut-off NUM now names the rule's verdict and caveat in its concept (LGEBURDENYES /
#: LGEBURDENNO), as a viewer listing only NUM concepts showed "Large LGE burden cut-off: 15.00 %" like a measurement
LARGE_LGE_BURDEN_CUTOFF = Code("LGEBURDENCUT", PRIVATE_SCHEME, "Large LGE burden cut-off")
#: NUM, %: the cut-off of the large-burden rule, its concept saying the verdict (the coded LGEBURDEN Yes/No says it
#: too) and that the rule is an HCM risk rule (not validated in myocardial infarction); "cut-off" first, as OHIF shows
#: "<meaning>: <value>": "Large LGE burden no; …: 15.00 %" read as a 15 % burden on a 0.6 % heart (break49b #8)
LARGE_LGE_BURDEN_CUTOFF_MET = Code("LGEBURDENYES", PRIVATE_SCHEME,
                                   "HCM cut-off (MET: large LGE burden; not validated in MI)")
LARGE_LGE_BURDEN_CUTOFF_NOT_MET = Code("LGEBURDENNO", PRIVATE_SCHEME,
                                       "HCM cut-off (not met: no large LGE burden; not validated in MI)")
LV_EDV_INDEX = Code("LVEDVI", PRIVATE_SCHEME, "LV end-diastolic volume index")
LV_ESV_INDEX = Code("LVESVI", PRIVATE_SCHEME, "LV end-systolic volume index")
LV_SV_INDEX = Code("LVSVI", PRIVATE_SCHEME, "LV stroke volume index")
RV_EDV_INDEX = Code("RVEDVI", PRIVATE_SCHEME, "RV end-diastolic volume index")
RV_ESV_INDEX = Code("RVESVI", PRIVATE_SCHEME, "RV end-systolic volume index")
RV_SV_INDEX = Code("RVSVI", PRIVATE_SCHEME, "RV stroke volume index")
LV_MASS_INDEX = Code("LVMI", PRIVATE_SCHEME, "LV mass index")
#: 1-based, as the PDF and the SEG descriptions count phases (summary.json keeps the 0-based index); replaces
#: PHASEIDX ("Cardiac phase index in the cine series (0-based)"), which is no longer written: a private code keeps
#: its meaning, so the 1-based number has a code of its own
PHASE_NUMBER = Code("PHASENUM", PRIVATE_SCHEME, "Cardiac phase number in the cine series (1-based)")
AHA_SCAR_EXTENT = Code("AHASCAR", PRIVATE_SCHEME, "Scar extent, % of the segment's myocardium")
TRANSMURALITY_MAX = Code("TMURMAX", PRIVATE_SCHEME, "Scar transmurality, maximum over the segment")
TRANSMURALITY_MEAN = Code("TMURMEAN", PRIVATE_SCHEME, "Scar transmurality, mean over the segment")
WALL_THICKNESS = Code("WALLTHK", PRIVATE_SCHEME, "End-diastolic wall thickness, mean over the segment")
#: the maximal ED LV wall thickness (analysis/wall_thickness.py): DCM "Wall Thickness" (PS3.16 CID 12300 Cardiac
#: Measurements family; pydicom's concept dictionary) with the TID 300 derivation (121401, DCM) "Maximum" (CID 3488)
WALL_THICKNESS_STANDARD = Code("122445", "DCM", "Wall Thickness")
MAXIMUM = Code("56851009", "SCT", "Maximum")
#: volumes of an LGE finding the segmentation did not find (0 mL), measured on the region searched (the LV
#: myocardium): a plain Volume (118565006, SCT) there would read as the volume of the myocardium (see sr.py)
ENHANCED_VOLUME = Code("LGEVOL", PRIVATE_SCHEME, "Volume of late gadolinium enhancement incl. MVO")
SCAR_VOLUME = Code("SCARVOL", PRIVATE_SCHEME, "Volume of late gadolinium enhancement without MVO")
MVO_VOLUME = Code("MVOVOL", PRIVATE_SCHEME, "Volume of microvascular obstruction")
NONENHANCED_VOLUME = Code("NEMYOVOL", PRIVATE_SCHEME, "Volume of non-enhanced LV myocardium")

# private method codes
METHOD_DEEP_LEARNING = Code("DLSEG", PRIVATE_SCHEME, "Deep-learning segmentation")
METHOD_NSD = Code("NSD", PRIVATE_SCHEME, "n-SD threshold above remote myocardium")
METHOD_FWHM = Code("FWHM", PRIVATE_SCHEME, "Full width at half maximum threshold")

# report-text suggestions (separate Comprehensive SR, see sr.py)
REPORT_TEXT_SUGGESTIONS = Code(
    "RTSUGG", PRIVATE_SCHEME, "Text suggestions from other patients' reports (unverified)"
)
SUGGESTED_REPORT_TEXT = Code("RTTEXT", PRIVATE_SCHEME, "Suggested report text")
RETRIEVAL_SCORE = Code("RTSCORE", PRIVATE_SCHEME, "Retrieval similarity score")
PRIOR_REPORT_ID = Code("RTREPORTID", PRIVATE_SCHEME, "Report bank identifier (another patient's report)")

NOT_APPLICABLE = Code("385432009", "SCT", "Not applicable")
#: CID 241 Present-Absent Only: value of a finding the segmentation did not find
ABSENT = Code("272519000", "SCT", "Absent")
#: free-text remark on a measurement group (here: the stack warnings of the analysed series)
COMMENT = Code("121106", "DCM", "Comment")

# --- UCUM units ------------------------------------------------------------------------------------------------
#: every volume of the SR (blood pools, myocardium, scar, MVO): one unit, as summary.json and the PDF say mL
UNIT_ML = Code("mL", "UCUM", "milliliter")
UNIT_G = Code("g", "UCUM", "gram")
UNIT_PERCENT = Code("%", "UCUM", "percent")
#: NUM, mm: the LV length the stack holds (summary `coverage.lv_extent_mm`) of a stack missing part of the LV, first in
#: each group whose volumes or mass are lower bounds / whose EF and SV cover the slices present: its concept says so
#: where a viewer lists only NUM concepts (OHIF), while the measured quantities keep their standard concepts
LOWER_BOUNDS_LV_EXTENT = Code("LVPARTLB", PRIVATE_SCHEME,
                              "Lower bounds, LV partly outside the stack: LV length in stack")
PARTIAL_STACK_LV_EXTENT = Code("LVPARTFN", PRIVATE_SCHEME, "Partial stack, LV partly outside it: LV length in stack")
#: ... in an LV / RV function group that repeats the ESV and EDV (sr.cine_groups): EF and SV cover the slices
#: present, the ESV and EDV beside them are lower bounds as in their ES and ED groups (review48b #8, break49b #8)
PARTIAL_STACK_ESV_LOWER = Code("LVPARTFNLB", PRIVATE_SCHEME, "Partial stack, EDV/ESV lower bounds: LV length in stack")
#: NUM, m2: the BSA the other images' PatientSize / PatientWeight give (summary `cine.bsa_other_m2`) where the
#: study's images disagree on them, first in each cine group holding a BSA-indexed value or the BSA (break48b #4)
BSA_DISAGREEMENT = Code("BSADISAGR", PRIVATE_SCHEME, "Height/weight differ between images, BSA uncertain: other BSA")
#: the same NUM where the stack's only coverage reason is that its base is not confirmed covered
#: (cine_metrics.base_unconfirmed_only): the LV may be whole, or its base cut off
BASE_UNCONFIRMED_LV_EXTENT = Code("LVBASENC", PRIVATE_SCHEME,
                                  "Base unconfirmed, LV may be partly outside: LV length in stack")
#: NUM, no unit: the pixel aspect ratio (row spacing / column spacing, PixelSpacing (0028,0030)) of the images a
#: group's outline is drawn on, first in each group with measurements where the pixels are not square
#: (regions.non_square_aspect): OHIF v3 (cornerstone) turns a 2-D SCOORD into patient coordinates with the row and
#: column spacings exchanged, so it draws such an outline stretched and shifted off the structure measured (break43d);
#: the concept says so where OHIF shows text (NUM concepts), the SEG on the same images is placed right
NON_SQUARE_PIXELS = Code("PXASPECT", PRIVATE_SCHEME, "Non-square pixels, outline may be misplaced: pixel aspect ratio")
#: NUM, no unit: the cine phases sent (phase_text.cycle_phases), first (after LVPARTLB / LVPARTFN) in each cine group
#: whose ED / ES were chosen among phases that are not a whole cycle (an ED + ES export: "2 of 30 phases"), so the
#: reader of OHIF, which shows NUM concepts only, learns beside EDV / ESV / EF that ED and ES may not be the true ones;
#: short enough that OHIF's label does not run off the viewport (break48b #7): the full caveat is a TEXT comment
#: (sr.partial_cycle_comment)
PARTIAL_CYCLE = Code("CYCLEPART", PRIVATE_SCHEME, "ED/ES of a partial cycle: phases sent")
#: NUM, unit 1: the Series Number of the measurement SR a re-analysis replaces, first in the first group with numbers
#: of each analysis (sr.supersede_measurements): OHIF shows no Predecessor Documents Sequence nor a report comment,
#: so its reader learns there that these numbers replace the earlier report's (break48b #8)
SUPERSEDES_SR = Code("SUPERSEDES", PRIVATE_SCHEME, "Re-analysis, replaces AI report SR series")
#: NUM, unit 1: the number of earlier reports replaced, in place of SUPERSEDES_SR where not every destination
#: received the latest (provenance.supersede_text's "partial": no series number to name)
SUPERSEDES_COUNT = Code("SUPERSEDESN", PRIVATE_SCHEME, "Re-analysis, replaces earlier AI reports: count")
#: NUM, unit 1: how many series of the study were recognised but not measured by this version (T1 / T2 maps, MOLLI
#: source images, perfusion: phase_text.maps_not_measured), first in the first group with numbers of the report
#: (sr.not_analysed_measurement), so that a reader of OHIF does not take missing T1 or perfusion numbers for normal
#: (break48b #5); the report's comments and PDF name each
NOT_ANALYSED = Code("NOTANALYSED", PRIVATE_SCHEME, "Not analysed (maps, perfusion): series")
#: NUM, unit 1: the AHA segment's number (1-17, as its finding site codes it), first in each AHA-segment group of a
#: result whose segments carry a geometry caveat (aha.MIRRORED_CAVEAT / MIDLINE_CAVEAT / unusual_turn_caveat): OHIF v3
#: shows a group's NUMs and then its finding site, in five lines, so the concept says beside the numbers that the
#: segment names are to be confirmed, and the value names the segment where the finding site falls past the fifth line
AHA_MIRRORED = Code("AHAMIRROR", PRIVATE_SCHEME, "RV left of LV (situs inversus?): confirm AHA segment number")
AHA_MIDLINE = Code("AHAMIDLINE", PRIVATE_SCHEME, "RV neither left nor right of LV: confirm AHA segment number")
AHA_UNUSUAL_TURN = Code("AHATURN", PRIVATE_SCHEME, "Heart unusual for patient axes: confirm AHA segment number")
#: NUM, first in each cine group with numbers where the adult reference ranges are not applied
#: (reference_age.adult_ranges_note): the patient's age (UCUM a), or for a patient of unknown age with a child's body
#: size that size (BSA, else height, else weight); OHIF shows the adult-looking volumes with it
CHILD_AGE = Code("PAEDAGE", PRIVATE_SCHEME, "Child: adult ranges not applied, use paediatric ones: age")
CHILD_BSA = Code("PAEDBSA", PRIVATE_SCHEME, "Child size, age unknown: adult ranges not applied: BSA")
CHILD_HEIGHT = Code("PAEDHEIGHT", PRIVATE_SCHEME, "Child size, age unknown: adult ranges not applied: height")
CHILD_WEIGHT = Code("PAEDWEIGHT", PRIVATE_SCHEME, "Child size, age unknown: adult ranges not applied: weight")
#: NUM, %: first in the MVO group where the model card does not validate the MVO (summary `mvo_validation`): how
#: often 'MVO present' from the volume agreed with the expert (`presence_accuracy`); without such figures the MVO
#: volume itself under MVO_NOT_VALIDATED_VOLUME
MVO_NOT_VALIDATED_AGREEMENT = Code("MVONVAGREE", PRIVATE_SCHEME,
                                   "MVO not validated: presence agreed with expert, % of cases")
MVO_NOT_VALIDATED_VOLUME = Code("MVONVVOL", PRIVATE_SCHEME, "MVO not validated (no figures on record): MVO volume")
#: NUM, %: the cut-off of the large-burden rule where %LGE lies within the model's known error of it (the coded
#: LGEBURDEN answer is then Undetermined): the scar group says so where OHIF shows NUMs only
LARGE_LGE_BURDEN_CUTOFF_UNDETERMINED = Code("LGEBURDENUND", PRIVATE_SCHEME,
                                            "Large LGE burden undetermined: %LGE within error of HCM cut-off")
#: NUM, %: the large-burden cut-off where the flag is withheld for a child (summary `lge.large_scar_burden_reason`,
#: analysis.lge.child_burden_reason: the cut-off is an adult risk marker), in the scar group where the verdict NUM would
#: be: OHIF shows NUMs only, and the reason is a report comment (break51c #6)
LARGE_LGE_BURDEN_WITHHELD_CHILD = Code("LGEBURDENPAED", PRIVATE_SCHEME,
                                       "Large-burden flag withheld (child): adult cut-off")
#: NUM, %: the model's validated RVEF error (summary `cine.flag_validation.rv_ef_percent.mae`, EF points), first in
#: each RV group (RV blood pool ED / ES, RV function) where the cine flags say the RV is less reliable than the LV
#: (cine_metrics.rv_accuracy_note): OHIF shows RVEDV / RVEF without that flag otherwise
RV_LESS_RELIABLE = Code("RVLESSREL", PRIVATE_SCHEME, "RV less reliable than LV, review RV contours: RVEF error MAE")
#: NUM, first in each LGE group with numbers where the LGE stack warnings question the input (analysis/lge.py): the
#: contrast is not an LGE's (NOT_LGE_CONTRAST_NOTE) or a dark-blood LGE's (DARK_BLOOD_NOTE), both valued with the
#: blood / healthy myocardium median ratio (summary `lge.input_checks.blood_myocardium_ratio`, unit 1); a field of
#: view smaller than the model knows (`input_checks.field_of_view_mm`, mm); a child's heart (the patient's age, a)
NOT_LGE_CONTRAST = Code("NOTLGE", PRIVATE_SCHEME, "Check series, maybe T1 map, not LGE: blood/myocardium ratio")
DARK_BLOOD_LGE = Code("DARKBLOOD", PRIVATE_SCHEME, "Dark-blood LGE, %LGE may be too high: blood/myocardium ratio")
SMALL_FIELD = Code("SMALLFOV", PRIVATE_SCHEME, "Small field of view, scar may be under-read: field size")
CHILD_LGE = Code("PAEDLGE", PRIVATE_SCHEME, "Child: LGE model validated in adults only: age")
#: NUM, unit 1: right before a threshold method's %LGE computed though the model card does not validate it
#: (analysis.lge.threshold_methods = 'always'; summary `nsd` / `fwhm` `validated` false): its agreement r with expert
#: %LGE, the caveat the PDF and the console give beside the value, where OHIF shows NUMs only
NSD_NOT_VALIDATED = Code("NSDNOTVAL", PRIVATE_SCHEME, "n-SD %LGE NOT VALIDATED: agreement r with expert %LGE")
FWHM_NOT_VALIDATED = Code("FWHMNOTVAL", PRIVATE_SCHEME, "FWHM %LGE NOT VALIDATED: agreement r with expert %LGE")
#: coded value of a threshold method (METHOD_NSD / METHOD_FWHM) withheld because the model card does not validate it
#: (threshold_methods = 'validated'): not NOT_APPLICABLE, which is for an input the method cannot measure
NOT_VALIDATED_WITHHELD = Code("NOTVALWHLD", PRIVATE_SCHEME, "Not reported: not validated")
#: NUM, %: the cut-off of a site-configured large-burden rule (analysis.lge.large_burden_* other than Chan 2014's
#: >= 15 %), its concept saying the verdict; LGEBURDENYES / LGEBURDENNO name Chan's HCM rule
LARGE_LGE_BURDEN_SITE_CUTOFF_MET = Code("LGEBURDENSITEYES", PRIVATE_SCHEME,
                                        "Site cut-off (MET: large LGE burden; not validated in MI)")
LARGE_LGE_BURDEN_SITE_CUTOFF_NOT_MET = Code("LGEBURDENSITENO", PRIVATE_SCHEME,
                                            "Site cut-off (not met: no large LGE burden; not validated in MI)")
#: NUM, unit 1: the 1-based phase RV EDV / ESV were read at (summary `cine.timing.rv_ed_phase` / `rv_es_phase`,
#: cine_metrics.rv_cardiac_phases) where it is not the LV's ED / ES, first in each group stating RV EDV / ESV: the RV
#: is outlined at that phase too (an RV SEG of its own, "RV blood pool; RV at ES (phase 8)", on which the RV blood
#: pool ED / ES group is drawn, its phase-number NUM that phase); the LV's ED / ES SEGs hold the RV at the LV's phase
RV_EDV_OTHER_PHASE = Code("RVEDPHASE", PRIVATE_SCHEME, "RV EDV read at phase (not LV ED; RV also outlined at it)")
RV_ESV_OTHER_PHASE = Code("RVESPHASE", PRIVATE_SCHEME, "RV ESV read at phase (not LV ES; RV also outlined at it)")
#: NUM, first in each group stating the number a cine flag changes the reading of (analysis.cine_metrics
#: reading_caveats; break51c #3: the flags were report-level text, which OHIF does not show): RV EDV / ESV read at a
#: phase whose RV volume jumps from its neighbours (unit 1: that phase, 1-based), in the RV blood pool ED / ES group
#: and RV function; ES to confirm on the images (%: the LVEF an ES at the smallest LV volume would give), in the LV
#: blood pool ES group and LV function; LV and RV stroke volumes disagree (mL: the difference), in LV and RV function
RV_EDV_UNCERTAIN = Code("RVEDVUNC", PRIVATE_SCHEME, "RV EDV and RVEF uncertain: RV volume jumps at phase")
RV_ESV_UNCERTAIN = Code("RVESVUNC", PRIVATE_SCHEME, "RV ESV and RVEF uncertain: RV volume jumps at phase")
ES_UNCERTAIN = Code("ESCONFIRM", PRIVATE_SCHEME, "Confirm ES on the images: LVEF if ES at smallest LV volume")
SV_MISMATCH = Code("SVMISMATCH", PRIVATE_SCHEME, "LV and RV stroke volumes disagree, check contours: by")
#: NUM, mm2: the largest LV myocardium section segmented on a slice of an LGE stack whose numbers are withheld
#: (summary `lge.determined` false), first in each of its groups: OHIF v3 shows NUMs only, and the outlines of such a
#: stack would otherwise read as a measured result
LGE_NOT_DETERMINED = Code("LGENOTDET", PRIVATE_SCHEME,
                          "LGE NOT DETERMINED, SEG unreliable: largest myocardium section")
#: NUM, unit 1: the AHA segment's number (1-17), first in an AHA (LGE) group whose scar extent and transmurality are
#: all 0 %: OHIF v3 draws a NUM of value 0 without its number ("Scar extent ...: %"), read as "not measured"; the
#: segment's finding is coded Absent beside it (CID 241), the 0 % NUMs follow for machine readers
AHA_NO_SCAR = Code("AHANOSCAR", PRIVATE_SCHEME, "No scar (extent and transmurality 0 %): AHA segment")
#: NUM, %: the %LGE under which the node states no significant LGE (summary `lge.lge_presence`, low edge of
#: lge_metrics.LGE_PRESENCE_BAND_PERCENT), first in each AHA (LGE) group whose segment holds scar voxels in a study
#: the node states no significant LGE by its automatic count (kind "absent": %LGE under the level normal hearts read
#: in cross-validation and no AHA segment at lge_metrics.FOCAL_SEGMENT_EXTENT_PERCENT scar or more): a statement on
#: the measurement, not a diagnosis; a small focal scar can still be missed (1 of 99 scarred hearts read under it)
LGE_NOT_SIGNIFICANT = Code("LGENOTSIG", PRIVATE_SCHEME, "No significant LGE by automatic count: %LGE under")
UNIT_MM2 = Code("mm2", "UCUM", "square millimeter")
UNIT_YEAR = Code("a", "UCUM", "year")
UNIT_KG = Code("kg", "UCUM", "kilogram")
UNIT_M = Code("m", "UCUM", "meter")
UNIT_ML_PER_M2 = Code("mL/m2", "UCUM", "milliliter per square meter")
UNIT_G_PER_M2 = Code("g/m2", "UCUM", "gram per square meter")
UNIT_M2 = Code("m2", "UCUM", "square meter")
UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_NONE = Code("1", "UCUM", "no units")

#: every private code, for the Coding Scheme Identification Sequence and the conformance statement
PRIVATE_CODES = [
    MVO, LGE_PERCENT, *LGE_PERCENT_NSD_BY_N.values(), LGE_PERCENT_NSD, LGE_PERCENT_FWHM, LARGE_LGE_BURDEN, LARGE_LGE_BURDEN_CUTOFF_MET,
    LARGE_LGE_BURDEN_CUTOFF_NOT_MET, LV_EDV_INDEX, LV_ESV_INDEX, LV_SV_INDEX, RV_EDV_INDEX, RV_ESV_INDEX,
    RV_SV_INDEX, LV_MASS_INDEX, PHASE_NUMBER, AHA_SCAR_EXTENT, TRANSMURALITY_MAX, TRANSMURALITY_MEAN,
    WALL_THICKNESS, ENHANCED_VOLUME, SCAR_VOLUME, MVO_VOLUME, NONENHANCED_VOLUME, LOWER_BOUNDS_LV_EXTENT,
    PARTIAL_STACK_LV_EXTENT, PARTIAL_STACK_ESV_LOWER, BASE_UNCONFIRMED_LV_EXTENT, NON_SQUARE_PIXELS, PARTIAL_CYCLE, SUPERSEDES_SR,
    SUPERSEDES_COUNT, NOT_ANALYSED, AHA_MIRRORED, AHA_MIDLINE, AHA_UNUSUAL_TURN,
    CHILD_AGE, CHILD_BSA, CHILD_HEIGHT, CHILD_WEIGHT, BSA_DISAGREEMENT, MVO_NOT_VALIDATED_AGREEMENT,
    MVO_NOT_VALIDATED_VOLUME,
    LARGE_LGE_BURDEN_CUTOFF_UNDETERMINED, LARGE_LGE_BURDEN_WITHHELD_CHILD, RV_LESS_RELIABLE, NOT_LGE_CONTRAST, DARK_BLOOD_LGE, SMALL_FIELD, CHILD_LGE,
    NSD_NOT_VALIDATED, FWHM_NOT_VALIDATED, NOT_VALIDATED_WITHHELD, LARGE_LGE_BURDEN_SITE_CUTOFF_MET,
    LARGE_LGE_BURDEN_SITE_CUTOFF_NOT_MET, METHOD_DEEP_LEARNING, METHOD_NSD, METHOD_FWHM, REPORT_TEXT_SUGGESTIONS,
    SUGGESTED_REPORT_TEXT, RETRIEVAL_SCORE, PRIOR_REPORT_ID, RV_EDV_OTHER_PHASE, RV_ESV_OTHER_PHASE, RV_EDV_UNCERTAIN, RV_ESV_UNCERTAIN,
    ES_UNCERTAIN, SV_MISMATCH, LGE_NOT_DETERMINED,
    AHA_NO_SCAR, LGE_NOT_SIGNIFICANT,
]


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """Coding Scheme Identification items for the private schemes the result objects use."""
    return [
        CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME,
                                       responsible_organization=PRIVATE_SCHEME_RESPONSIBLE),
        CodingSchemeIdentificationItem(designator="99IHE", name="IHE private codes", responsible_organization="IHE"),
    ]
