"""ReportBank: reading the folder, incremental refresh, the on-disk index, search rules, and non-blocking swaps."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from dicomnode.analysis import report_bank as report_bank_module
from dicomnode.analysis.report_bank import INDEX_DIRNAME, ReportBank, parse_bank_file, top_k_cosine


def write_bank(folder, reports: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in reports.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


TEXTS = {
    "dcm": "Dilated left ventricle with severely reduced ejection fraction.",
    "hcm": "Asymmetric septal hypertrophy with preserved ejection fraction.",
    "mi": "Transmural inferior infarct with microvascular obstruction.",
    "normal": "Normal study, no late enhancement.",
}


def test_txt_and_jsonl_files_are_read(tmp_path):
    bank = write_bank(tmp_path / "bank", {"one": "First report."})
    (bank / "more.jsonl").write_text("\n".join([
        json.dumps({"id": "a", "text": "Second report.", "metadata": {"site": "x"}}),
        json.dumps({"id": "b", "findings": "LV dilated.", "impression": "DCM."}),
        "not json",
        json.dumps({"text": "no id"}),
        json.dumps({"id": "c"}),
        "",
    ]), encoding="utf-8")
    reports = parse_bank_file(bank / "more.jsonl", "more.jsonl")
    assert [r.id for r in reports] == ["a", "b"]
    assert reports[0].metadata == {"site": "x"}
    assert reports[1].text == "Findings: LV dilated. Impression: DCM." and reports[1].impression == "DCM."
    assert parse_bank_file(bank / "one.txt", "one.txt")[0].id == "one"


def test_refresh_embeds_only_new_and_changed_and_drops_removed(tmp_path, word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    bank = ReportBank(folder, word_encoder)
    first = bank.refresh()
    assert (first.reports, first.embedded, first.changed) == (4, 4, True)
    again = bank.refresh()
    assert (again.embedded, again.changed) == (0, False)

    (folder / "dcm.txt").write_text("Dilated LV, EF 20 percent.", encoding="utf-8")
    (folder / "new.txt").write_text("Apical hypertrophy.", encoding="utf-8")
    (folder / "normal.txt").unlink()
    word_encoder.encoded.clear()
    stats = bank.refresh()
    assert sorted(word_encoder.encoded) == ["Apical hypertrophy.", "Dilated LV, EF 20 percent."]
    assert stats.removed == 2 and stats.reports == 4 and stats.changed  # normal gone, old dcm text replaced
    assert sorted(r.id for r in bank.reports) == ["dcm", "hcm", "mi", "new"]
    assert bank.version == 2


def test_index_on_disk_is_reused_by_a_new_bank_and_invalidated_by_another_encoder(tmp_path, word_encoder, make_word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    ReportBank(folder, word_encoder).refresh()
    index = folder / INDEX_DIRNAME
    assert {p.name for p in index.iterdir()} == {"embeddings.npy", "ids.json", "manifest.json"}
    assert json.loads((index / "ids.json").read_text()) == sorted(TEXTS)
    assert np.load(index / "embeddings.npy").shape == (4, 384)

    reused = make_word_encoder()
    assert ReportBank(folder, reused).refresh().embedded == 0 and reused.encoded == []
    other = make_word_encoder(tag="another-model")
    assert ReportBank(folder, other).refresh().embedded == 4


def test_corrupt_index_is_ignored(tmp_path, word_encoder, make_word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    ReportBank(folder, word_encoder).refresh()
    np.save(folder / INDEX_DIRNAME / "embeddings.npy", np.zeros((4, 384), dtype=np.float32))
    fresh = make_word_encoder()
    assert ReportBank(folder, fresh).refresh().embedded == 4


def test_unwritable_bank_folder_uses_cache_dir_then_memory(tmp_path, word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    (folder / INDEX_DIRNAME).write_text("a file where the index folder would go")  # mkdir fails, even as root
    cache = tmp_path / "cache"
    bank = ReportBank(folder, word_encoder, cache_dir=cache)
    stats = bank.refresh()
    assert stats.index_dir is not None and stats.index_dir.parent == cache
    assert (stats.index_dir / "manifest.json").is_file()

    blocked_cache = tmp_path / "blocked"
    blocked_cache.write_text("not a folder")
    memory_only = ReportBank(folder, word_encoder, cache_dir=blocked_cache)
    assert memory_only.refresh().index_dir is None
    assert memory_only.search_text("dilated ventricle", k=1)[0].report_id == "dcm"


def test_search_orders_floors_and_deduplicates(tmp_path, word_encoder):
    folder = write_bank(tmp_path / "bank", {**TEXTS, "dcm_copy": TEXTS["dcm"] + " "})
    bank = ReportBank(folder, word_encoder)
    bank.refresh()
    hits = bank.search_text("dilated left ventricle reduced ejection fraction", k=3)
    assert hits[0].report_id in {"dcm", "dcm_copy"}
    assert not {"dcm", "dcm_copy"} <= {h.report_id for h in hits}, "near-identical texts must be one suggestion"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score >= 0.3 for h in bank.search_text("dilated left ventricle", k=5, min_similarity=0.3))
    assert bank.search_text("zzz qqq", k=3, min_similarity=0.5) == []
    with_duplicates = bank.search_text("dilated left ventricle reduced ejection fraction", k=2, duplicate_cosine=1.01)
    assert {h.report_id for h in with_duplicates} == {"dcm", "dcm_copy"}


def test_search_refuses_bad_queries(tmp_path, word_encoder):
    bank = ReportBank(write_bank(tmp_path / "bank", TEXTS), word_encoder)
    bank.refresh()
    with pytest.raises(ValueError, match="dimensions"):
        bank.search(np.ones(10), k=1)
    with pytest.raises(ValueError, match="zero"):
        bank.search(np.zeros(384), k=1)
    with pytest.raises(ValueError, match="k must be"):
        bank.search(np.ones(384), k=0)
    with pytest.raises(ValueError, match="empty"):
        bank.search_text("  ")
    with pytest.raises(FileNotFoundError):
        ReportBank(tmp_path / "absent", word_encoder)


def test_empty_bank_searches_to_nothing(tmp_path, word_encoder):
    bank = ReportBank(write_bank(tmp_path / "bank", {}), word_encoder)
    assert bank.refresh().reports == 0
    assert bank.search(np.ones(384), k=3) == []


def test_searches_use_the_last_complete_index_while_a_refresh_runs(tmp_path, word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    bank = ReportBank(folder, word_encoder)
    bank.refresh()
    (folder / "late.txt").write_text("Apical aneurysm with thrombus.", encoding="utf-8")
    word_encoder.gate = threading.Event()
    word_encoder.entered.clear()
    refresher = threading.Thread(target=bank.refresh)
    refresher.start()
    try:
        assert word_encoder.entered.wait(5)
        started = time.perf_counter()
        hits = bank.search(bank.embeddings()[0], k=10)
        assert time.perf_counter() - started < 1.0
        assert len(bank) == 4 and len(hits) == 4 and "late" not in {h.report_id for h in hits}
    finally:
        word_encoder.gate.set()
        refresher.join(10)
    assert len(bank) == 5 and bank.search_text("apical aneurysm thrombus", k=1)[0].report_id == "late"


def test_top_k_cosine_is_exact():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(500, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    query = matrix[7] + 0.01
    indices, scores = top_k_cosine(matrix, query / np.linalg.norm(query), 5)
    full = matrix @ (query / np.linalg.norm(query))
    assert indices.tolist() == np.argsort(-full)[:5].tolist()
    np.testing.assert_allclose(scores, np.sort(full)[::-1][:5], rtol=1e-6)


def _random_bank(tmp_path, n: int):
    lines = [json.dumps({"id": f"r{i}", "text": f"report {i} word{i % 97} term{i % 13} item{i % 7}"}) for i in range(n)]
    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "all.jsonl").write_text("\n".join(lines), encoding="utf-8")
    return folder


def test_large_banks_use_the_approximate_index_when_hnswlib_is_installed(tmp_path, word_encoder):
    pytest.importorskip("hnswlib")
    bank = ReportBank(_random_bank(tmp_path, 300), word_encoder, approximate_above=100)
    bank.refresh()
    assert bank._snapshot.approximate is not None
    for probe in (3, 150, 299):
        query = bank.embeddings()[probe]
        exact, _ = top_k_cosine(bank.embeddings(), query, 1)
        assert bank.search(query, k=1, duplicate_cosine=1.01)[0].score == pytest.approx(1.0, abs=1e-4)
        assert bank.reports[int(exact[0])].text == bank.search(query, k=1, duplicate_cosine=1.01)[0].report.text


def test_without_hnswlib_large_banks_fall_back_to_exact_search(tmp_path, word_encoder, monkeypatch):
    monkeypatch.setattr(report_bank_module, "approximate_index_available", lambda: False)
    bank = ReportBank(_random_bank(tmp_path, 150), word_encoder, approximate_above=100)
    bank.refresh()
    assert bank._snapshot.approximate is None
    assert bank.search(bank.embeddings()[42], k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_file_that_is_not_text_is_skipped_not_fatal(tmp_path, word_encoder):
    folder = write_bank(tmp_path / "bank", TEXTS)
    (folder / "broken.txt").write_bytes(b"\xff\xfe\x00binary")
    (folder / "bom.jsonl").write_text("\ufeff" + json.dumps({"id": "bom", "text": "Apical thrombus."}), encoding="utf-8")
    bank = ReportBank(folder, word_encoder)
    assert bank.refresh().reports == 5
    assert "bom" in {r.id for r in bank.reports}
