"""Models: architecture registry, safe checkpoint loading, the pixel-space wrapper with query accounting."""

from advkit.models.architectures import ARCHITECTURES, architecture_names, create_architecture
from advkit.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from advkit.models.hooks import LayerInfo, capture, layer_table
from advkit.models.preprocessing import Preprocessing
from advkit.models.wrapper import ModelWrapper, QueryCounter, UnattributedQuery, padded_batch, select_logits

__all__ = [
    "ARCHITECTURES",
    "LayerInfo",
    "LoadedModel",
    "ModelWrapper",
    "Preprocessing",
    "QueryCounter",
    "UnattributedQuery",
    "architecture_names",
    "capture",
    "create_architecture",
    "layer_table",
    "padded_batch",
    "load_checkpoint",
    "save_checkpoint",
    "select_logits",
]
