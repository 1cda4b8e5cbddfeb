"""Study descriptors, the feature vector, the numpy projection and SuggestionsPipeline end to end."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dicomnode.analysis.pipeline import AlgorithmInfo, AnalysisContext, PipelineResult, SegmentationResult
from dicomnode.analysis.suggestions import (FEATURE_DIM, FEATURE_NAMES, TITLE, StudyProjection, SuggestionsPipeline,
                                            cine_descriptors, descriptors_from_results, feature_vector, has_measurements,
                                            lge_descriptors, measurement_sentence, only_block,
                                            study_features)
from dicomnode.config import Config
from dicomnode.inference.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
DCM_SUMMARY = {"cine": {"lv_edv_ml": 290, "lv_esv_ml": 220, "lv_ef_percent": 24, "lv_mass_g": 170,
                        "rv_edv_ml": 140, "rv_esv_ml": 60, "rv_ef_percent": 57}}
NORMAL_CINE = {"cine": {"lv_edv_ml": 140, "lv_esv_ml": 52, "lv_ef_percent": 63, "lv_mass_g": 100,
                        "rv_edv_ml": 150, "rv_esv_ml": 60, "rv_ef_percent": 60}}
INFARCT_SUMMARY = {"lge": {"lge_percent": 32.0, "myocardium_volume_ml": 120.0, "mvo_volume_ml": 7.0, "large_scar_burden": True}}


def ring(rows=64, centre=(32, 32), inner=10, outer=16):
    r, c = np.mgrid[:rows, :rows]
    distance = np.hypot(r - centre[0], c - centre[1])
    plane = np.zeros((rows, rows), dtype=np.uint8)
    plane[distance < inner] = 1
    plane[(distance >= inner) & (distance < outer)] = 2
    return plane, r, c, distance


def scar_at_top(plane, r, c):
    """Full-thickness scar in a 90-degree wedge opening upwards from the ring's centre (32, 32)."""
    scarred = plane.copy()
    scarred[(r < 32) & (np.abs(c - 32) < (32 - r)) & (plane == 2)] = 3
    return scarred


def test_lge_descriptors_find_a_transmural_scar_at_the_top_of_the_image():
    plane, r, c, distance = ring()
    scarred = scar_at_top(plane, r, c)
    labels = np.stack([scarred, scarred, plane])
    pixels = np.where(labels == 3, 300.0, np.where(labels == 2, 100.0, 200.0))
    found = lge_descriptors(labels, pixels)
    assert found["scar_anterior_fraction"] > 0.9
    assert found["transmural_extent"] > 0.8  # rays at the wedge's edges cross it only in part
    assert found["scar_slice_fraction"] == pytest.approx(2 / 3)
    assert found["scar_to_remote_signal"] == pytest.approx(3.0)


def test_lge_descriptors_of_a_normal_heart_and_bad_shapes():
    plane, *_ = ring()
    found = lge_descriptors(np.stack([plane, plane]))
    assert found["scar_slice_fraction"] == 0.0 and found["scar_septal_fraction"] is None
    with pytest.raises(ValueError, match="slices, rows, cols"):
        lge_descriptors(plane)


def test_cine_wall_thickness_of_concentric_circles():
    plane, *_ = ring(rows=128, centre=(64, 64), inner=20, outer=30)
    thickness = cine_descriptors(np.stack([plane]), (1.5, 1.5))["max_wall_thickness_mm"]
    assert thickness == pytest.approx(10 * 1.5, rel=0.05)
    with pytest.raises(ValueError, match="pixel_spacing"):
        cine_descriptors(np.stack([plane]), (0.0, 1.0))


def test_features_vector_and_sentence_from_summary_blocks():
    features = study_features({**DCM_SUMMARY, **INFARCT_SUMMARY})
    assert features["lv_ef_percent"] == 24 and features["mvo_percent"] == pytest.approx(100 * 7 / 120)
    assert features["has_lge"] == 1.0 and features["has_cine"] == 1.0 and has_measurements(features)
    vector = feature_vector(features)
    assert vector.shape == (FEATURE_DIM,)
    present = vector[len(FEATURE_NAMES):2 * len(FEATURE_NAMES)]
    assert present[FEATURE_NAMES.index("lv_ef_percent")] == 1.0 and present[FEATURE_NAMES.index("transmural_extent")] == 0.0
    sentence = measurement_sentence(features)
    assert "LV ejection fraction 24%" in sentence and "late gadolinium enhancement 32%" in sentence
    assert not has_measurements(study_features({})) and measurement_sentence(study_features({})) == ""


def test_projection_round_trip_and_refusals(tmp_path, models_dir):
    shipped = StudyProjection.load(models_dir / "retrieval_projection.npz")
    out = shipped(np.stack([feature_vector(study_features(DCM_SUMMARY))] * 2))
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    shipped.save(tmp_path / "copy.npz")
    np.testing.assert_array_equal(StudyProjection.load(tmp_path / "copy.npz").w2, shipped.w2)
    with pytest.raises(ValueError, match="do not chain"):
        StudyProjection(shipped.feature_mean, shipped.feature_std, shipped.w1, shipped.b1, shipped.w2[:10], shipped.b2,
                        shipped.feature_names)
    with pytest.raises(ValueError, match="feature names"):
        StudyProjection(shipped.feature_mean, shipped.feature_std, shipped.w1, shipped.b1, shipped.w2, shipped.b2,
                        tuple(reversed(shipped.feature_names)))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    config = Config()
    config.node.storage_dir = tmp_path_factory.mktemp("storage")
    return SuggestionsPipeline(config, Runtime(config.inference))


def context_for(pipeline, summary, earlier=None):
    return AnalysisContext(config=pipeline.config, runtime=None, started_at=dt.datetime(2026, 11, 21),
                           study_summary_so_far=summary, earlier_results=earlier or [])


def group_of(report_id: str, bank) -> str:
    return next(r.metadata["group"] for r in bank.reports if r.id == report_id)


def test_pipeline_suggests_dcm_reports_for_a_dilated_failing_ventricle(pipeline):
    result = pipeline.run(None, context_for(pipeline, DCM_SUMMARY))
    assert result.name == "suggestions" and not result.declined
    assert len(result.summary) == pipeline.settings.top_k
    assert set(result.summary[0]) == {"text", "score", "report_id"}
    assert group_of(result.summary[0]["report_id"], pipeline.bank) == "DCM"
    assert result.measurements["title"] == TITLE and result.measurements["suggestions"] == result.summary
    assert result.measurements["query_method"] == "joint"
    assert all(s["score"] >= pipeline.settings.min_similarity for s in result.summary)
    assert result.measurements["similar_studies"] and {a.name for a in result.algorithms} == {
        "dicomnode-report-text-encoder", "dicomnode-retrieval-projection"}
    json.dumps(result.summary)


def test_pipeline_separates_normal_from_dcm_and_infarct_from_no_scar(pipeline):
    normal = pipeline.run(None, context_for(pipeline, NORMAL_CINE)).summary[0]["report_id"]
    assert group_of(normal, pipeline.bank) == "NOR"
    infarct = pipeline.run(None, context_for(pipeline, INFARCT_SUMMARY)).summary
    assert all(group_of(s["report_id"], pipeline.bank) == "MI" for s in infarct)
    no_scar = {"lge": {"lge_percent": 0.0, "myocardium_volume_ml": 110.0, "mvo_volume_ml": 0.0, "large_scar_burden": False,
                       "aha_segments": {"applicable": True, "segments": [
                           {"segment": n, "scar_voxels": 0, "scar_extent_percent": 0.0} for n in range(1, 18)]}}}
    assert group_of(pipeline.run(None, context_for(pipeline, no_scar)).summary[0]["report_id"], pipeline.bank) == "normal"


def test_a_study_with_lge_and_cine_gets_suggestions_for_both(pipeline):
    """The demo projection never saw LGE + cine together, so the pipeline queries each block and interleaves."""
    result = pipeline.run(None, context_for(pipeline, {**DCM_SUMMARY, **INFARCT_SUMMARY}))
    assert result.measurements["query_method"] == "joint:lge+joint:cine"
    groups = [group_of(s["report_id"], pipeline.bank) for s in result.summary]
    assert groups[0] == "MI" and groups[1] == "DCM"
    assert len({s["report_id"] for s in result.summary}) == len(result.summary)


def test_only_block_keeps_one_summary_block():
    features = study_features({**DCM_SUMMARY, **INFARCT_SUMMARY})
    lge = only_block(features, "lge")
    assert lge["lge_percent"] == 32.0 and lge["lv_ef_percent"] is None and lge["has_cine"] == 0.0
    cine = only_block(features, "cine")
    assert cine["lge_percent"] is None and cine["lv_ef_percent"] == 24 and cine["has_lge"] == 0.0
    with pytest.raises(ValueError, match="block"):
        only_block(features, "t1")


def test_pipeline_uses_label_maps_of_earlier_results(pipeline):
    plane, r, c, _ = ring()
    labels = np.stack([scar_at_top(plane, r, c)] * 6)[None]

    class FakeVolume:
        pixels = np.where(labels == 3, 250.0, 80.0).astype(np.float32)
        pixel_spacing = (1.5, 1.5)

    algorithm = AlgorithmInfo("x", "1", "m", "2.25.1")
    segmentation = SegmentationResult(series=None, volume=FakeVolume(), labelmap=labels, phases=[0],
                                      phase_names=["late enhancement"], algorithm=algorithm, pipeline="lge")
    earlier = [PipelineResult(name="lge", summary={}, segmentations=[segmentation])]
    lge_extra, cine_extra = descriptors_from_results(earlier)
    assert lge_extra["scar_anterior_fraction"] > 0.9 and cine_extra == {}
    # a segmentation whose numbers the LGE pipeline withheld (heart not found) describes nothing
    withheld = [PipelineResult(name="lge", summary={"determined": False, "reason": "not determined: ..."},
                               segmentations=[segmentation])]
    assert descriptors_from_results(withheld) == ({}, {})
    result = pipeline.run(None, context_for(pipeline, INFARCT_SUMMARY, earlier))
    assert result.measurements["features"]["scar_anterior_fraction"] > 0.9
    assert group_of(result.summary[0]["report_id"], pipeline.bank) == "MI"


def test_pipeline_declines_without_numbers_or_when_disabled(pipeline, tmp_path):
    result = pipeline.run(None, context_for(pipeline, {"series": []}))
    assert result.summary is None and "no LGE or cine measurements" in result.declined[0].reason
    config = Config()
    config.node.storage_dir = tmp_path
    config.analysis.suggestions.enabled = False
    disabled = SuggestionsPipeline(config, Runtime(config.inference))
    assert "disabled" in disabled.run(None, context_for(disabled, DCM_SUMMARY)).declined[0].reason


def test_pipeline_with_a_site_bank_and_no_projection_queries_by_sentence(tmp_path, models_dir):
    models = tmp_path / "models"
    models.mkdir()
    (models / "text_encoder").symlink_to(models_dir / "text_encoder")
    bank = tmp_path / "site-bank"
    bank.mkdir()
    (bank / "r1.txt").write_text("LV ejection fraction 24%, dilated left ventricle. Impression: dilated cardiomyopathy.")
    (bank / "r2.txt").write_text("Late gadolinium enhancement in the inferior wall. Impression: old infarct.")
    config = Config()
    config.node.storage_dir = tmp_path / "storage"
    config.inference.models_dir = models
    config.analysis.suggestions.bank_dir = bank
    config.analysis.suggestions.min_similarity = 0.0
    site = SuggestionsPipeline(config, Runtime(config.inference))
    result = site.run(None, context_for(site, DCM_SUMMARY))
    assert result.measurements["query_method"] == "text" and result.summary[0]["report_id"] == "r1"
    assert (bank / ".dicomnode-index" / "manifest.json").is_file()
    (bank / "r3.txt").write_text("Normal study.")
    assert site.refresh().embedded == 1


def test_pipeline_refuses_a_missing_bank_folder(tmp_path):
    config = Config()
    config.analysis.suggestions.bank_dir = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="bank_dir"):
        SuggestionsPipeline(config, Runtime(config.inference))


def test_pipeline_declines_when_the_text_encoder_is_not_installed(tmp_path):
    config = Config()
    config.node.storage_dir = tmp_path
    config.inference.models_dir = tmp_path
    pipeline = SuggestionsPipeline(config, Runtime(config.inference))
    assert "text encoder not installed" in pipeline.run(None, context_for(pipeline, DCM_SUMMARY)).declined[0].reason


def test_the_node_side_never_imports_torch(tmp_path):
    code = (
        "import sys, datetime as dt\n"
        "from dicomnode.config import Config\n"
        "from dicomnode.inference.runtime import Runtime\n"
        "from dicomnode.analysis.pipeline import AnalysisContext\n"
        "from dicomnode.analysis.suggestions import SuggestionsPipeline\n"
        "c = Config(); c.node.storage_dir = sys.argv[1]\n"
        "p = SuggestionsPipeline(c, Runtime(c.inference))\n"
        "r = p.run(None, AnalysisContext(c, None, dt.datetime.now(), {'cine': {'lv_ef_percent': 30, 'lv_edv_ml': 250}}))\n"
        "assert r.summary, r.declined\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO, timeout=120)


def test_a_report_of_the_study_itself_is_never_suggested_for_it(tmp_path, models_dir):
    """A bank report whose metadata names this study's Study Instance UID (the demo bank's reports of the demo's own
    cases, a site bank fed with the current report) is no prior: left out of suggestions and similar studies."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "text_encoder").symlink_to(models_dir / "text_encoder")
    bank = tmp_path / "site-bank"
    bank.mkdir()
    own = "LV ejection fraction 24%, dilated left ventricle. Impression: dilated cardiomyopathy."
    records = [{"id": "this-study", "text": own, "metadata": {"study_instance_uid": "1.2.3.4"}},
               {"id": "prior-dcm", "text": "Dilated LV, EF 30 %. Impression: dilated cardiomyopathy.",
                "metadata": {"study_instance_uid": ["9.8.7", "9.8.7.1"]}},
               {"id": "prior-mi", "text": "Late gadolinium enhancement in the inferior wall. Impression: old infarct."}]
    (bank / "reports.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    config = Config()
    config.node.storage_dir = tmp_path / "storage"
    config.inference.models_dir = models
    config.analysis.suggestions.bank_dir = bank
    config.analysis.suggestions.min_similarity = -1.0
    site = SuggestionsPipeline(config, Runtime(config.inference))
    other_study = site.run(SimpleNamespace(study_instance_uid="5.5.5"), context_for(site, DCM_SUMMARY))
    assert other_study.summary[0]["report_id"] == "this-study"  # the closest text, for any other study
    assert "own_reports_excluded" not in other_study.measurements
    this_study = site.run(SimpleNamespace(study_instance_uid="1.2.3.4"), context_for(site, DCM_SUMMARY))
    assert "this-study" not in {s["report_id"] for s in this_study.summary}
    assert [s["report_id"] for s in this_study.summary][:1] == ["prior-dcm"]
    assert this_study.measurements["own_reports_excluded"] == ["this-study"]
    assert site.bank.search(site.encoder.encode([own])[0], k=3, exclude_study="9.8.7.1")[0].report_id == "this-study"
    assert "prior-dcm" not in {h.report_id for h in site.bank.search(site.encoder.encode([own])[0], k=3,
                                                                       exclude_study="9.8.7.1")}


def test_the_demo_banks_reports_of_the_demo_studies_name_them():
    """`dicomnode demo` analyses EMIDEC Case_P009 and Sunnybrook SCD0000301: their bank reports name those studies."""
    from engines.retrieval.build_demo import DEMO_STUDIES, demo_study_uid

    records = {json.loads(line)["id"]: json.loads(line) for line in
               (Path(__file__).resolve().parents[2] / "engines/models/report_bank/reports.jsonl").read_text().splitlines()}
    for report_id, zip_name in DEMO_STUDIES.items():
        assert records[report_id]["metadata"]["study_instance_uid"] == demo_study_uid(zip_name)
