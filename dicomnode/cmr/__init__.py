"""CMR study understanding: series grouping, sequence and view recognition, volumes with geometry, resampling."""
from dicomnode.cmr.recognize import Recognizer, RecognizerRegistry, SeriesEvidence, StudyContext, default_registry
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.study import CMRStudy, PatientInfo, load_studies, understand_study
from dicomnode.cmr.types import AnalysisSeries, FrameRef, InstanceHeader, Recognition, StudyError, Volume
from dicomnode.cmr.volume import build_volume

__all__ = [
    "AnalysisSeries", "CMRStudy", "FrameRef", "InplaneResampler", "InstanceHeader", "PatientInfo", "Recognition",
    "Recognizer", "RecognizerRegistry", "SeriesEvidence", "StudyContext", "StudyError", "Volume", "build_volume",
    "default_registry", "load_studies", "understand_study",
]
