"""Checkpoint / SAM2Model -> ONNX parts: ``parts`` defines the graphs, ``pipeline`` the chain."""
from .cache import ExportedPart, weights_digest
from ..memory_layout import MemoryCapacity, pad_to_capacity
from .parts import PART_NAMES, PartSpec, TensorSpec, part_specs
from .pipeline import ExportedModel, export_model
from .steps import ExportCheckError

__all__ = ["ExportCheckError", "ExportedModel", "ExportedPart", "MemoryCapacity", "PART_NAMES",
           "PartSpec", "TensorSpec", "export_model", "pad_to_capacity", "part_specs",
           "weights_digest"]
