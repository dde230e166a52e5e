"""``torch.onnx.export`` of a detlab model, with the metadata a deployed model needs.

The ONNX file alone is enough for ``detlab predict MODEL.onnx``: its ``metadata_props`` hold
(keys ``detlab.*``, values JSON text) the head family and class, the val input spec (channels,
mean/std, :class:`~detlab.data.geometry.InputGeometry`, pixel type: how an image file becomes
the input tensor), the class names and COCO category ids, the fixed input size, whether
post-processing is in the graph, the output names, and the head's recipe dict with its input
channels and strides (so predict can rebuild the head's post-processing for raw outputs).

The exporter is torch's TorchScript-based one (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which is not a dependency.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a model is exported: `detlab --help` stays fast
    from torch import Tensor, nn

__all__ = ["MIN_OPSET", "DEFAULT_OPSET", "max_opset", "require", "export_onnx", "read_metadata"]

#: RoIAlign with ``aligned=True`` (Faster R-CNN) needs opset 16; one floor for every head.
MIN_OPSET = 16
DEFAULT_OPSET = 17
INSTALL_HINT = "pip install 'detlab[export]'"


def max_opset() -> int:
    """The newest opset torch's TorchScript-based exporter writes."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def require(*modules: str) -> None:
    """Import ``modules`` (``"onnx"``, ``"onnxruntime"``) or raise a ``ConfigError`` naming
    the extra to install."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export and inference need {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")


def check_opset(opset: int) -> int:
    """``opset`` if torch can write it and detlab's graphs need no newer, else ConfigError."""
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(
            f"detlab export: --opset {opset!r} is not supported: detlab's graphs need opset >= "
            f"{MIN_OPSET} (RoIAlign with aligned=True, used by Faster R-CNN), and this torch "
            f"writes at most {top}; use e.g. --opset {DEFAULT_OPSET}")
    return opset


def export_onnx(graph: nn.Module, images: Tensor, out: str | Path, *, output_names: list[str],
                metadata: dict[str, Any], opset: int = DEFAULT_OPSET,
                batched: list[bool] | None = None) -> Path:
    """Trace ``graph`` on ``images`` ``(B, C, H, W)`` and write ``out`` with ``metadata``.

    Args:
        graph: a module of :mod:`detlab.export.graphs` (eval mode).
        images: an example input; H and W are fixed in the file, B too unless ``batched``.
        out: the ``.onnx`` path (parent folders are created).
        output_names: one name per graph output.
        metadata: ``detlab.*`` key -> JSON-able value, stored as ``metadata_props``.
        opset: ONNX opset (:func:`check_opset`).
        batched: dynamic batch: per output, whether its first axis is the batch (those and
            the input get a symbolic ``batch`` axis); ``None``: fixed batch.
    """
    require("onnx")
    import onnx
    import torch

    check_opset(opset)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = None
    if batched is not None:
        dynamic_axes = {"images": {0: "batch"}}
        dynamic_axes.update({name: {0: "batch"} for name, b in zip(output_names, batched) if b})
    with warnings.catch_warnings(), torch.no_grad():
        # tracer warnings about Python ints taken from shapes: the input size is fixed on purpose
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (images,), str(out), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=list(output_names),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    model = onnx.load(str(out))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(out))
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``detlab.*`` metadata of an exported file (JSON values decoded).

    Raises:
        ConfigError: the file is missing, not ONNX, or was not written by ``detlab export``.
    """
    require("onnx")
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ConfigError(f"cannot read ONNX model {path}: {type(err).__name__}: {err}") from err
    meta = {p.key: json.loads(p.value) for p in model.metadata_props if p.key.startswith("detlab.")}
    if "detlab.head_family" not in meta:
        raise ConfigError(f"{path} was not written by `detlab export` (no detlab.* metadata: "
                          "input geometry, normalization and head are unknown)")
    return meta
