"""Checkpoint / SAM2Model -> ONNX parts: ``parts`` defines the graphs, ``pipeline`` the chain."""
from ..graph_cache import EXPORT_FORMAT, ExportedModel, ExportedPart, weights_digest
from ..graph_spec import PART_NAMES, PartSpec, TensorSpec, part_specs
from ..memory_layout import MemoryCapacity, pad_to_capacity
from .pipeline import export_model
from .steps import ExportCheckError

__all__ = ["EXPORT_FORMAT", "ExportCheckError", "ExportedModel", "ExportedPart", "MemoryCapacity",
           "PART_NAMES", "PartSpec", "TensorSpec", "export_model", "pad_to_capacity",
           "part_specs", "weights_digest"]
