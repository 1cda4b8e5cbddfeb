"""Inference runtime: models loaded once and kept warm behind one interface, backend chosen by config."""
from dicomnode.inference.runtime import BackendUnavailable, LoadedModel, ModelCard, Runtime, RuntimeErrorNoModel

__all__ = ["BackendUnavailable", "LoadedModel", "ModelCard", "Runtime", "RuntimeErrorNoModel"]
