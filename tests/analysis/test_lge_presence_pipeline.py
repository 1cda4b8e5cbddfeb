"""The LGE pipeline decides LGE presence once, on the stored %LGE, and the suggestions read that decision (review49
#1); on a field smaller than the model was trained on no absence is stated and the reason is the field's, not the
coverage's (review49 #4). The shipped model runs on an EMIDEC-derived study; its %LGE is set at a band edge."""
from __future__ import annotations

import dataclasses

import pytest

import dicomnode.analysis.lge as lge_module
from dicomnode.analysis.lge import LGEPipeline
from dicomnode.analysis.suggestions import node_lge_findings
from dicomnode.config import Config
import test_lge_pipeline
from test_lge_pipeline import context

# the shipped model's runtime and the EMIDEC Case_P043 study (siemens variant), as the pipeline's own tests use them
runtime = test_lge_pipeline.runtime
siemens_study = test_lge_pipeline.siemens_study


def _run_at(percent, study, runtime, monkeypatch, small_field=None):
    measured = lge_module.lge_volumes

    def at_percent(*args, **kwargs):
        return dataclasses.replace(measured(*args, **kwargs), lge_percent=percent)

    monkeypatch.setattr(lge_module, "lge_volumes", at_percent)
    if small_field:
        monkeypatch.setattr(lge_module, "small_field_reason", lambda stack, spacing: small_field)
    config = Config()
    return LGEPipeline(config, runtime).run(study, context(config, runtime)).summary


@pytest.mark.parametrize("percent, stored, significant, uncertain", [
    (1.4999, 1.5, None, True),  # stored 1.50: in the band, not 'no significant LGE (1.50 % < 1.5 %)'
    (3.996, 4.0, True, False),  # stored 4.00: present, not 'uncertain: 4.00 % lies in 1.5-4 %'
])
def test_presence_is_decided_on_the_stored_percent_and_the_suggestions_read_it(
        percent, stored, significant, uncertain, siemens_study, runtime, monkeypatch):
    _, study = siemens_study
    summary = _run_at(percent, study, runtime, monkeypatch)
    presence = summary["lge_presence"]
    assert summary["lge_percent"] == stored
    assert presence["significant"] is significant and presence["uncertain"] is uncertain
    assert f"%LGE {stored:.2f} %" in presence["text"]
    findings = node_lge_findings(summary)
    assert findings.significant_lge is significant and findings.presence_uncertain is uncertain
    # every scarred LGE segment carries the transmurality of its scarred part (review49 #5)
    scarred = [v for v in summary["aha_segments"]["segments"] if v["scar_voxels"] and v["segment"] != 17]
    assert scarred and all(v["transmurality_scarred_mean_percent"] >= v["transmurality_mean_percent"] for v in scarred)


def test_a_small_field_states_no_absence_and_gives_its_own_reason(siemens_study, runtime, monkeypatch):
    _, study = siemens_study
    reason = "small field of view (140 x 157 mm, smaller than the 229 mm of any stack the model was trained on)"
    summary = _run_at(0.8, study, runtime, monkeypatch, small_field=f"{reason}: scar is under-read")
    presence = summary["lge_presence"]
    assert presence["significant"] is None and presence["kind"] == "not_stated"
    assert presence["text"] == f"LGE presence not stated (%LGE 0.80 %): {reason}"
    # this stack's base may also be missing: the field's reason comes first, not "on the slices present"
    assert "slices present" not in presence["text"] and summary["large_scar_burden"] is None
    assert node_lge_findings(summary).significant_lge is None
