"""Inference runtime: models loaded once and kept warm behind one interface, backend chosen by config."""
from dicomnode.inference.runtime import LoadedModel, ModelCard, Runtime, RuntimeErrorNoModel

__all__ = ["LoadedModel", "ModelCard", "Runtime", "RuntimeErrorNoModel"]
