"""The cine's indexed values and reference ranges say where the study's instances disagree on the patient's size,
weight, age or sex (cmr.study.study_patient, break47b #1): the line goes beside the numbers it enters (summary
`stack_warnings`, hence the SR's comments and the PDF)."""
import numpy as np

from dicomnode.analysis.cine import CinePipeline
from dicomnode.config import Config
from dicomnode.results.sr import _stack_comments
from tests.analysis.test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc

LINE = ("the study's instances disagree on PatientWeight (95 kg on 10 instance(s), 60 kg on 10 instance(s)): 60 kg is "
        "used for BSA and the indexed values, the value of the instances received last (a corrected re-send is newer "
        "than what it corrects)")


def test_a_disagreement_on_the_weight_is_said_beside_the_cine_numbers():
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase in range(12):
        pixels[phase, :, disc(shape, (79.5, 79.5), 34.0 - abs(phase - 4) * 2.0 if phase <= 8 else 26.0, spacing)] = 400.0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    runtime = FakeRuntime()
    study = FakeStudy(volume)
    study.patient.weight_kg = 60.0
    study.patient.disagreements = [LINE]
    result = CinePipeline(Config(), runtime).run(study, context(runtime))
    assert result.summary["bsa_m2"] == round(np.sqrt(180.0 * 60.0 / 3600.0), 3)
    assert LINE in result.summary["stack_warnings"]
    assert any(LINE in comment for comment in _stack_comments(result))
