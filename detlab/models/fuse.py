"""Inference-only model rewrites: BatchNorm folded into the convolution before it, and
channels-last weights.

At inference a BatchNorm with running statistics is an affine map per channel, so
``bn(conv(x))`` equals one convolution with rescaled weights and a bias. Folding it removes a
full pass over every feature map (75 BatchNorms in the helmet YOLO); channels-last (NHWC)
weights let oneDNN / cuDNN pick their faster kernels for depthwise and 1x1 convolutions. On the
2-core CPU the helmet YOLO's 640 px forward went from 91.0 to 43.8 ms per image with both
(``python tools/bench_inference.py``; 1.2-1.9x over the four head families).

Which pairs may be folded is decided by what the model *does*, not by module names: one
forward on a small input records every call, and a (Conv2d, BatchNorm) pair is folded only when
each call of the BatchNorm consumes exactly the tensor the convolution's previous call returned
and the two run equally often (a shared RPN conv called per level qualifies; a BatchNorm on a sum,
or a convolution whose output also feeds something else before the BatchNorm, does not).
The rewritten model is a copy; the original keeps training as before.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["AutocastFeatures", "FusionReport", "fuse_conv_bn", "inference_copy", "is_tracing",
           "output_tensors", "to_channels_last"]

log = logging.getLogger(__name__)
_TRACING: ContextVar[bool] = ContextVar("detlab_fuse_tracing", default=False)


def is_tracing() -> bool:
    """Whether the current forward is one of the fold's own (the trace and the output check on
    the example image), e.g. for a hook that counts the network passes of a loop."""
    return _TRACING.get()


@contextmanager
def _tracing() -> Iterator[None]:
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)


@dataclass
class FusionReport:
    """What :func:`fuse_conv_bn` did: ``fused`` pairs, ``batchnorms`` seen in the model, and
    ``skipped`` BatchNorms that run but were not folded (with why, by module name)."""

    fused: int
    batchnorms: int
    skipped: dict[str, str]


def _is_batchnorm(module: nn.Module) -> bool:
    from torchvision.ops.misc import FrozenBatchNorm2d

    if isinstance(module, FrozenBatchNorm2d):
        return True
    # SyncBatchNorm (train.sync_batchnorm) is not a BatchNorm2d; in eval it is one.
    return isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and (
        module.track_running_stats and module.running_mean is not None)


def _trace_pairs(model: nn.Module, example: torch.Tensor
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Run ``model(example)`` once; ``{bn_name: conv_name}`` of the foldable pairs and
    ``{bn_name: reason}`` for BatchNorms that ran but cannot be folded."""
    names = {id(m): n for n, m in model.named_modules()}
    last_output: dict[int, tuple[Any, int]] = {}  # id(conv) -> (latest output, its version)
    conv_calls: dict[int, int] = {}
    producer: dict[int, int] = {}  # id(tensor) -> id(conv) that returned it, latest call
    bn_sources: dict[int, set[Any]] = {}
    bn_calls: dict[int, int] = {}
    handles = []

    def conv_hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        conv_calls[id(mod)] = conv_calls.get(id(mod), 0) + 1
        if isinstance(out, torch.Tensor):
            last_output[id(mod)] = (out, out._version)
            producer[id(out)] = id(mod)

    def bn_hook(mod: nn.Module, inp: Any) -> None:
        bn_calls[id(mod)] = bn_calls.get(id(mod), 0) + 1
        x = inp[0] if inp else None
        src = producer.get(id(x)) if isinstance(x, torch.Tensor) else None
        # The very object that conv returned last (ids get recycled), not changed in place since
        # (``x += shortcut`` between the two keeps the object but not the values).
        if src is not None:
            out, version = last_output[src]
            if out is not x or x._version != version:
                src = None
        bn_sources.setdefault(id(mod), set()).add(src)

    for mod in model.modules():
        if type(mod) is nn.Conv2d:
            handles.append(mod.register_forward_hook(conv_hook))
        elif _is_batchnorm(mod):
            handles.append(mod.register_forward_pre_hook(bn_hook))
    try:
        # Not inference tensors: those have no version counter.
        with torch.inference_mode(False), torch.no_grad(), _tracing():
            model(example.clone())
    finally:
        for h in handles:
            h.remove()
    pairs: dict[str, str] = {}
    skipped: dict[str, str] = {}
    used_convs: dict[int, str] = {}
    for bn_id, sources in bn_sources.items():
        bn_name = names[bn_id]
        if len(sources) != 1 or None in sources:
            skipped[bn_name] = "its input is not always a convolution's output"
            continue
        conv_id = next(iter(sources))
        if conv_calls.get(conv_id) != bn_calls[bn_id]:
            skipped[bn_name] = f"{names[conv_id]} runs more often than the BatchNorm"
        elif conv_id in used_convs:
            skipped[bn_name] = f"{names[conv_id]} also feeds {used_convs[conv_id]}"
            skipped[used_convs[conv_id]] = skipped[bn_name]
            pairs.pop(used_convs[conv_id], None)
        else:
            used_convs[conv_id] = bn_name
            pairs[bn_name] = names[conv_id]
    return pairs, skipped


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What stays of a folded BatchNorm: nothing, or timm's fused ``drop`` + ``act``
    (``BatchNormAct2d`` applies them after the normalisation)."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
            if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def fuse_conv_bn(model: nn.Module, example: torch.Tensor) -> FusionReport:
    """Fold every foldable BatchNorm of ``model`` (in place; call it on an eval-mode copy) into
    the Conv2d that feeds it, as decided by one traced call ``model(example)`` (module
    docstring; ``example``: an input batch ``(B, C, H, W)``). A convolution that feeds two BatchNorms, or a BatchNorm that sometimes
    normalises something else, is left as is and named in the report."""
    pairs, skipped = _trace_pairs(model, example)
    batchnorms = sum(1 for m in model.modules() if _is_batchnorm(m))
    for bn_name, conv_name in pairs.items():
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
            getattr(bn, "weight", None), getattr(bn, "bias", None))
        conv.weight, conv.bias = weight, bias
        _set(model, bn_name, _bn_replacement(bn))
    return FusionReport(fused=len(pairs), batchnorms=batchnorms, skipped=skipped)


class AutocastFeatures(nn.Module):
    """``module`` (a backbone or neck) run under ``torch.autocast(dtype)``, its feature maps
    handed on as float32: the convolutions run in bf16/fp16, the head and its box decoding stay
    float32 (a bf16 coordinate near 1920 px is only good to 8 px)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, cast: bool = True) -> None:
        super().__init__()
        self.module, self.dtype, self.cast = module, dtype, cast
        for name in ("channels", "strides"):  # what Model and the heads read off a backbone
            if hasattr(module, name):
                setattr(self, name, getattr(module, name))

    def forward(self, *args: Any) -> Any:
        """The wrapped module's outputs, floating tensors cast back to float32 (``cast``; off
        for a backbone whose maps go on to an autocast neck)."""
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device, dtype=self.dtype):
            out = self.module(*args)
        return _to_float32(out) if self.cast else out


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float32(v) for v in out)
    return out


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-d parameters and buffers in channels-last (NHWC) memory format (in
    place); values and outputs are unchanged up to float rounding."""
    return model.to(memory_format=torch.channels_last)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a raw model output (nested dicts, lists, tuples), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in output_tensors(v)]
    return []


def _same_outputs(a: Any, b: Any, rtol: float = 1e-3) -> bool:
    """Whether two raw outputs agree: every float tensor within ``rtol`` of its largest value
    (folding changes the rounding, ~1e-6), integer tensors equal."""
    ta, tb = output_tensors(a), output_tensors(b)
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        scale = float(x.abs().max()) if x.numel() else 0.0
        if x.numel() and float((x.float() - y.float()).abs().max()) > rtol * scale + 1e-6:
            return False
    return True


def inference_copy(model: nn.Module, example: torch.Tensor, fuse_bn: bool = True,
                   channels_last: bool = True) -> tuple[nn.Module, FusionReport | None]:
    """An eval-mode deep copy of ``model`` for inference: BatchNorms folded (``fuse_bn``) and
    channels-last weights (``channels_last``). ``example``: a small input batch
    ``(B, C, H, W)`` on the model's device; it decides what is folded, and the copy's outputs
    on it are checked against the original's (a fold the trace could not see through, e.g. a
    convolution output also used raw, is undone: no folding then, reported as skipped).
    Returns the copy and the fusion report (``None`` without ``fuse_bn``)."""
    out = copy.deepcopy(model).eval()
    report = None
    if fuse_bn:
        report = fuse_conv_bn(out, example)
        if report.fused:
            was_training = model.training
            try:
                with torch.inference_mode(False), torch.no_grad(), _tracing():
                    same = _same_outputs(model.eval()(example), out(example))
            finally:
                model.train(was_training)
            if not same:
                log.warning("folding BatchNorms changed %s's outputs: inference runs unfolded",
                            type(model).__name__)
                out = copy.deepcopy(model).eval()
                report = FusionReport(0, report.batchnorms, {
                    "*": "folding changed the model's outputs (a convolution output used "
                         "elsewhere too)"})
        if report.skipped:
            log.debug("BatchNorms not folded: %s", report.skipped)
    if channels_last:
        to_channels_last(out)
    return out, report
