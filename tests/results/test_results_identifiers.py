"""Patient identifiers as archives hold them, copied so results stay filed with their images (break45b F4-F6), and
shown on the PDF's header in full (F10, F12)."""
from __future__ import annotations

import datetime as dt
import types

import pydicom
import pytest

from dicomnode.cmr.grouping import read_header
from dicomnode.results.headers import derivable_header
from tests.cmr.test_charsets import _file, _written_by_highdicom


def _header(tmp_path, **values):
    path = _file(tmp_path, "ISO_IR 100", "latin_1", "Doe^John")
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return read_header(path).dataset


def test_an_over_long_identifier_is_copied_as_received_with_a_warning(tmp_path, caplog):
    """F4: a PatientID of 65 characters, a name group of 80 and an accession of 21 (the archive took them with the
    images): never emptied, every one named at WARNING."""
    long_id, long_name, long_accession = "P" * 65, "L" * 80 + "^Ann", "ACC-2024-000000012345"
    header = _header(tmp_path, PatientID=long_id, PatientName=long_name, AccessionNumber=long_accession)
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        back = _written_by_highdicom(derivable_header(header))
    assert (back.PatientID, str(back.PatientName), back.AccessionNumber) == (long_id, long_name, long_accession)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for keyword in ("PatientID", "PatientName", "AccessionNumber"):
        assert f"source {keyword} is longer than VR" in warned


def test_an_over_long_value_that_is_no_identifier_is_still_dropped(tmp_path):
    header = _header(tmp_path, StudyDescription="D" * 70)
    assert "StudyDescription" not in derivable_header(header)


@pytest.mark.parametrize("keyword, value", [
    ("PatientName", "Doe^John\\Roe^Richard"),  # F5: highdicom refused the list ("Invalid type ...")
    ("PatientID", "123\\456"),  # F6: invalid VM 2, but what the archive filed the images under (review45 #1)
    ("AccessionNumber", "A1\\B2"),
])
def test_a_multi_valued_identifier_is_copied_as_received_with_a_warning(tmp_path, caplog, keyword, value):
    """review45 #1: its first value alone ("123") could be another patient of the archive: never one of them."""
    header = _header(tmp_path, **{keyword: value})
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        derived = derivable_header(header)
    back = _written_by_highdicom(derived)
    for dataset in (derived, back):
        element = dataset[keyword]
        assert ("\\".join(str(v) for v in element.value) if element.VM > 1 else str(element.value)) == value
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(f"source {keyword} holds several values" in m and "copied as received" in m for m in warned) == 1


def test_a_multi_valued_attribute_that_is_no_identifier_keeps_its_first_value(tmp_path, caplog):
    header = _header(tmp_path, PatientSex="M\\F")
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        derived = derivable_header(header)
    assert derived["PatientSex"].VM == 1 and derived.PatientSex == "M"
    assert any("source PatientSex holds several values" in r.getMessage() for r in caplog.records)


def test_the_page_header_shows_control_characters_and_several_values_as_text():
    """F10: CR LF in a name is one space (nothing overprints); F6: several values joined by a backslash."""
    from pydicom.dataset import Dataset

    from dicomnode.results.report import identification_line

    header = Dataset()
    header.PatientName = "Line\r\nBreak^Name"
    header.PatientID = ["123", "456"]
    line = identification_line(header)
    assert line.startswith("Patient: Line Break, Name   Patient ID: 123\\456   Birth date: not given")
    assert "\r" not in line and "\n" not in line and "[" not in line


def test_a_character_beyond_the_fonts_is_a_question_mark_not_left_out(monkeypatch):
    """F10: 𠮷 (U+20BB7) is in no report font: its ideographic group is shown with '?', not dropped."""
    from dicomnode.results import report

    monkeypatch.setattr(report, "_font_glyphs", lambda: frozenset(range(0x20000)))
    assert report.person_name("Yoshino^Ie=𠮷野^家") == "Yoshino, Ie (𠮷野 家)"  # mark_undrawable makes 𠮷 '?'
    monkeypatch.setattr(report, "_font_glyphs", lambda: frozenset(range(0x3000)))
    assert report.person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"  # a group no font draws at all


@pytest.mark.parametrize("characters, package", [
    ("สมชาย", "fonts-thai-tlwg"), ("山田", "fonts-wqy-microhei"), ("𠮷", "fonts-hanazono"), ("ሰላም", "fonts-noto-core")])
def test_the_missing_font_banner_names_a_package_for_the_script(characters, package):
    from dicomnode.results.report import UNDRAWABLE_NOTE, undrawable_note

    note = undrawable_note(characters)
    assert f"install the Debian package {package}" in note
    assert undrawable_note("山田") == UNDRAWABLE_NOTE


def test_a_long_valid_header_wraps_and_keeps_every_field_on_the_page():
    """F12: a 64-character alphabetic group + 24 ideographs + 16 kana and a 64-character PatientID: every field
    (the ID in full) is on the page and within its width."""
    import warnings

    from pydicom.dataset import Dataset

    from dicomnode.results.report import _page, report_fonts

    header = Dataset()
    header.SpecificCharacterSet = "ISO_IR 192"
    header.PatientName = ("Wolfeschlegelsteinhausenbergerdorff-Montgomery^Alexandra Maximil"
                          "=山田川本森林木村中島小林高橋佐藤鈴木伊藤渡辺^花子美咲陽菜結衣さくら=やまだかわもともりばやし^はなこ")
    header.PatientID, header.PatientBirthDate, header.PatientSex = "M" * 64, "19600229", "M"
    header.StudyDate, header.AccessionNumber = "20240131", "A" * 16
    context = types.SimpleNamespace(started_at=dt.datetime(2026, 12, 7, 4, 25))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        figure = _page("", header, context, [])
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
    patient = next(t for t in figure.texts if t.get_text().startswith("Patient: "))
    shown = patient.get_text()
    for field in ("Patient ID: " + "M" * 64, "Birth date: 1960-02-29", "Sex: male", "Study date: 2024-01-31",
                  "Accession no.: " + "A" * 16):
        assert field in shown
    box = patient.get_window_extent(renderer)
    assert box.x1 <= figure.bbox.width and patient.get_fontsize() >= 5.0
    credits = next(t for t in figure.texts if t.get_text().startswith("Algorithms: "))
    assert credits.get_window_extent(renderer).y1 <= box.y0  # the line below is moved, not overprinted
    assert len(report_fonts()) >= 1


def test_half_width_katakana_reads_once_in_the_pdf_text_layer(tmp_path):
    """break45b #10: JIS X 0201 half-width katakana (ISO_IR 13) "ﾔﾏﾀﾞ" was drawn right but read "ﾔﾏﾀﾞﾀﾞ" in the PDF's
    text layer (search / copy found a doubled name): the PDF writer maps both glyphs of a letter with its separate
    voiced mark to the pair. The page shows the name full-width ("ヤマダ"), one glyph per letter, read once."""
    import shutil
    import subprocess
    import warnings

    from pydicom.dataset import Dataset

    from dicomnode.results.report import _font_glyphs, _page, full_width_katakana, mark_undrawable

    assert full_width_katakana("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎") == "ヤマダ^タロウ=山田^太郎"
    assert full_width_katakana("ﾊﾟﾝ ｶﾞ and Müller") == "パン ガ and Müller"
    header = Dataset()
    header.SpecificCharacterSet = "ISO_IR 13"
    header.PatientName, header.PatientID = "ﾔﾏﾀﾞ^ﾀﾛｳ", "KANA1"
    context = types.SimpleNamespace(started_at=dt.datetime(2026, 12, 7, 4, 25))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        figure = _page("", header, context, [])
        figure.text(0.1, 0.5, "series ｼﾈ ﾀﾞﾌﾞﾙ")  # any page text, not only the header
        mark_undrawable(figure)
        texts = [t.get_text() for t in figure.texts]
        assert any(t.startswith("Patient: ヤマダ, タロウ") for t in texts), texts
        assert not any("\uff9e" in t or "\uff9f" in t for t in texts)
        if ord("ダ") not in _font_glyphs() or shutil.which("pdftotext") is None:
            return  # drawn as '?' (no CJK font): nothing to read back
        path = tmp_path / "page.pdf"
        figure.savefig(path)
    layer = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "ヤマダ, タロウ" in layer and "ダダ" not in layer and "シネ ダブル" in layer, layer
