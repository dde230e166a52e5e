"""detlab: backbones, necks and heads for segmentation, detection and text detection, built from
Python recipes through registries and trained with Lightning."""

from .errors import CheckpointError, ConfigError, DataError, DetlabError
from .registry import (
    ASSIGNERS,
    BACKBONES,
    DATASETS,
    EVALUATORS,
    HEADS,
    LOSSES,
    MODELS,
    NECKS,
    POSTPROCESSORS,
    SAMPLERS,
    TRANSFORMS,
    Registry,
)
from .structures import Batch, Prediction

__version__ = "0.1.0"

__all__ = [
    "ASSIGNERS", "BACKBONES", "DATASETS", "EVALUATORS", "HEADS", "LOSSES", "MODELS", "NECKS",
    "POSTPROCESSORS", "SAMPLERS", "TRANSFORMS", "Registry", "Batch", "Prediction",
    "DetlabError", "ConfigError", "DataError", "CheckpointError", "__version__",
]
