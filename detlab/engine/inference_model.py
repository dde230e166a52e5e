"""The model ``detlab eval``, ``predict``, ``sweep``, ``analyze`` and :class:`detlab.Detector`
run: an inference copy of the task's model (:mod:`detlab.models.fuse`: BatchNorm folded into
convolutions, channels-last weights where the head profits), set by the recipe's
``inference`` section::

    inference = dict(fuse_bn=True, channels_last=None, precision="32")   # the defaults

``channels_last=None`` means "yes unless the head sets ``prefers_channels_last = False``"
(every detlab head was faster in NHWC on the 2-core CPU: ``tools/bench_inference.py``).
Predictions equal
those of the training model up to float rounding (~1e-6 relative, tested per head family).
Lightning's validation loop runs the same copy (made once per validation epoch), so val/*
equal ``detlab eval``'s numbers.

``precision="bf16"`` (CPU or CUDA) or ``"16"`` (CUDA) runs the backbone and neck under
autocast and hands float32 feature maps to the head, whose box decoding and post-processing
stay float32. It changes the numbers (2 % of the largest logit on the helmet YOLO; Faster R-CNN's proposals
reorder) for speed (1.3-1.7x per forward on top of folding, AVX512-BF16 CPU): check the
metrics with ``detlab eval`` before using it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..checks import check_bool
from ..errors import ConfigError
from ..checks import check_choice
from ..models.fuse import AutocastFeatures, FusionReport, inference_copy

__all__ = ["drop_inference_copy", "inference_options", "inference_task", "InferenceTask"]

_CACHE = "_detlab_inference_copy"
log = logging.getLogger(__name__)


PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def inference_options(recipe: Any, head: nn.Module) -> tuple[bool, bool, str]:
    """``(fuse_bn, channels_last, precision)`` from the recipe's ``inference`` section
    (defaults above).

    Raises:
        ConfigError: a value that is not a bool (``channels_last`` may also be ``None``), a
            precision outside ``"32"``, ``"bf16"``, ``"16"``.
    """
    from ..postprocess.slicing import inference_section

    section = inference_section(recipe) if recipe is not None else {}
    fuse = section.get("fuse_bn", True)
    check_bool("inference", "fuse_bn", fuse)
    cl = section.get("channels_last")
    if cl is None:
        cl = bool(getattr(head, "prefers_channels_last", True))
    else:
        check_bool("inference", "channels_last", cl)
    precision = str(section.get("precision", "32"))
    precision = {"32-true": "32", "bf16-mixed": "bf16", "16-mixed": "16"}.get(precision,
                                                                              precision)
    check_choice("inference", "precision", precision, list(PRECISIONS))
    return bool(fuse), bool(cl), precision


class InferenceTask:
    """The task as the inference loops see it: every attribute of ``task``, with ``model``
    replaced by its inference copy. ``report`` says which BatchNorms were folded."""

    def __init__(self, task: Any, model: nn.Module, report: FusionReport | None) -> None:
        self._task, self.model, self.report = task, model, report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def _example(model: nn.Module) -> torch.Tensor | None:
    """A seeded random image of twice the model's stride on its device: one forward on it
    traces every call (which BatchNorms fold) and checks the folded copy."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    param = next(model.parameters())
    size = 2 * int(getattr(model, "size_divisor", 32))
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, conv.in_channels, size, size, generator=gen).to(param.device,
                                                                        param.dtype)


def _autocast_features(model: nn.Module, precision: str, device: torch.device) -> None:
    """Backbone and neck of ``model`` (a detlab Model) under autocast (module docstring)."""
    if precision == "16" and device.type != "cuda":
        raise ConfigError("inference.precision='16' needs a CUDA device (float16 convolutions "
                          "are slow on CPU); use 'bf16' on CPU")
    if not hasattr(model, "backbone"):
        raise ConfigError(f"inference.precision={precision!r}: {type(model).__name__} has no "
                          "backbone to run under autocast; use '32'")
    dtype = PRECISIONS[precision]
    neck = getattr(model, "neck", None)
    model.backbone = AutocastFeatures(model.backbone, dtype, cast=neck is None)
    if neck is not None:
        model.neck = AutocastFeatures(neck, dtype)


def _weights_key(model: nn.Module) -> tuple[Any, ...]:
    # Optimizer steps and load_state_dict write parameters in place, which bumps their version:
    # a changed model gets a fresh copy.
    # Tensors made under inference_mode (a model loaded inside it) have no version counter;
    # their storage stands in (an in-place write under inference_mode then goes unseen).
    tensors = list(model.parameters()) + list(model.buffers())
    first = next(iter(tensors), None)
    return (id(model), first.device if first is not None else None,
            tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors))


def inference_task(task: Any) -> Any:
    """``task`` with the inference copy of its model (module docstring), made once per model
    state and device and cached on the task; ``task`` itself when both options are off or the
    task has no model. Call it after moving the task to its device."""
    if isinstance(task, InferenceTask):
        return task
    model = getattr(task, "model", None)
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        return task
    fuse, cl, precision = inference_options(getattr(task, "recipe", None),
                                            getattr(model, "head", model))
    if not (fuse or cl) and precision == "32":
        return task
    example = _example(model)
    if example is None:
        return task
    key = (_weights_key(model), fuse, cl, precision)
    cached = task.__dict__.get(_CACHE)
    if cached is None or cached[0] != key:
        try:
            copy, report = inference_copy(model, example, fuse_bn=fuse, channels_last=cl)
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            # An optimisation, not a requirement: a model whose forward does not take one image
            # batch (a custom Model subclass) runs as it is, and says so.
            log.warning("inference runs %s as trained (no BatchNorm folding / channels-last): "
                        "a forward on a %s image failed: %s", type(model).__name__,
                        tuple(example.shape), err)
            return task
        if precision != "32":
            _autocast_features(copy, precision, example.device)
        # __dict__, not setattr: an nn.Module attribute would become a submodule (state_dict).
        task.__dict__[_CACHE] = cached = (key, copy, report)
    return InferenceTask(task, cached[1], cached[2])


def drop_inference_copy(task: Any) -> None:
    """Free the cached inference copy of ``task``'s model (its memory, e.g. on the GPU while
    training goes on); the next :func:`inference_task` makes a fresh one."""
    task.__dict__.pop(_CACHE, None)
