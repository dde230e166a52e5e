"""detlab: backbones, necks and heads for segmentation, detection and text detection, built from
Python recipes through registries and trained with Lightning.

The names below are imported on first use (PEP 562), so ``import detlab`` and ``detlab --help``
do not import torch::

    from detlab import Detector          # predict from a checkpoint (all four families)
    from detlab import train             # train a recipe, get the run folder and metrics
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import CheckpointError, ConfigError, DataError, DetlabError

__version__ = "0.1.0"

# name -> module that defines it; imported when first asked for.
_LAZY = {
    **{name: "detlab.registry" for name in (
        "ASSIGNERS", "BACKBONES", "DATASETS", "EVALUATORS", "HEADS", "LOSSES", "MODELS", "NECKS",
        "POSTPROCESSORS", "SAMPLERS", "TRANSFORMS", "Registry")},
    "Batch": "detlab.structures",
    "Prediction": "detlab.structures",
    "Detector": "detlab.api",
    "ImagePrediction": "detlab.api",
    "TrainResult": "detlab.api",
    "train": "detlab.api",
}

__all__ = [
    "ASSIGNERS", "BACKBONES", "DATASETS", "EVALUATORS", "HEADS", "LOSSES", "MODELS", "NECKS",
    "POSTPROCESSORS", "SAMPLERS", "TRANSFORMS", "Registry", "Batch", "Prediction",
    "Detector", "ImagePrediction", "TrainResult", "train",
    "DetlabError", "ConfigError", "DataError", "CheckpointError", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'detlab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
