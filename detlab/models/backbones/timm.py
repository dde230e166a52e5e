"""``TimmBackbone``: any timm model that supports ``features_only``, as a detlab backbone."""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from timm.models import load_state_dict
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import BACKBONES, closest

__all__ = ["TimmBackbone", "HUB_TIMEOUT_S"]

HUB_TIMEOUT_S = 3.0  #: seconds the weight hub has to accept a connection before detlab gives up


@BACKBONES.register
class TimmBackbone(nn.Module):
    """A timm model built with ``features_only=True``; returns one feature map per level.

    ``channels`` and ``strides`` come from timm's ``feature_info`` (``.channels()`` and
    ``.reduction()``), e.g. ``resnet18``: channels ``[64, 64, 128, 256, 512]``, strides
    ``[2, 4, 8, 16, 32]``.

    Weights: ``checkpoint`` (a local file, no network) is a state dict in timm's own key format
    (``torch.save(timm.create_model(name).state_dict(), path)``, a timm ``.safetensors`` file,
    or a training checkpoint holding it under ``state_dict``/``model``). Keys are checked
    against the architecture before loading; the classifier may be absent. timm then loads it
    (``pretrained_cfg_overlay=dict(file=...)``), so the input conv is adapted when
    ``in_chans`` differs from the checkpoint's 3 channels (e.g. summed for ``in_chans=1``).
    ``pretrained=True`` without ``checkpoint`` uses timm's default weights: a copy in the
    Hugging Face / torch hub cache is loaded without any network request; otherwise the hub
    must answer within :data:`HUB_TIMEOUT_S` seconds, else (offline, ``HF_HUB_OFFLINE=1``) a
    :class:`ConfigError` says at once how to pass a local file instead of waiting on retries.

    Freezing: feature level ``i`` is produced by timm module ``feature_info.module_name(i)``
    (resnet: ``act1``, ``layer1`` … ``layer4``). "Stage ``i``" is every module the input passes
    through after level ``i-1`` up to and including that module, in registration order; so
    stage 0 is the stem (resnet: ``conv1``, ``bn1``), stage 1 adds ``maxpool``+``layer1``.
    ``frozen_stages=N`` freezes stages ``0 … N-1`` (``requires_grad=False``), counted over all
    of the model's levels, not only ``out_indices``; batch norms in them stay in eval mode.

    Args:
        name: timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``).
        pretrained: load timm's default pretrained weights (needs network unless cached).
        checkpoint: path of a local weights file (implies loading weights; no network).
        out_indices: feature levels to return; ``None`` = timm's default (all levels of CNNs).
        in_chans: number of input image channels.
        frozen_stages: number of leading stages to freeze (0 = train everything).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate=0.1``).

    Shapes: ``forward(images (B, in_chans, H, W)) -> [(B, channels[i], H/strides[i],
    W/strides[i]) …]`` (H, W multiples of the largest stride; ``Model`` pads for that).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        checkpoint: str | None = None,
        out_indices: Sequence[int] | None = None,
        in_chans: int = 3,
        frozen_stages: int = 0,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_name(name)
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ConfigError(f"TimmBackbone: in_chans must be a positive int, got {in_chans!r}")
        if out_indices is not None:
            if not (
                isinstance(out_indices, Sequence)
                and out_indices
                and all(isinstance(i, int) for i in out_indices)
            ):
                raise ConfigError(
                    "TimmBackbone: out_indices must be a non-empty list of ints, got "
                    f"{out_indices!r}"
                )
            timm_kwargs["out_indices"] = tuple(out_indices)
        if checkpoint is not None:
            _check_checkpoint(str(checkpoint), name, in_chans, timm_kwargs)
            pretrained = True
            timm_kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint), source="")
        elif pretrained:
            _local_weights_or_reachable_hub(name, timm_kwargs)
        try:
            self.body = _create(name, pretrained, in_chans, timm_kwargs, checkpoint)
        except ConfigError:
            if out_indices is not None:  # timm fails with a bare IndexError on a missing level
                _check_out_indices(name, out_indices, _feature_levels(name, in_chans, timm_kwargs))
            raise
        info = getattr(self.body, "feature_info", None)
        if not isinstance(info, timm.models.FeatureInfo):
            raise ConfigError(f"TimmBackbone: timm model {name!r} does not support features_only")
        if out_indices is not None:  # timm accepts unordered/duplicate levels, mislabelling them
            _check_out_indices(name, out_indices, info.info)
        self.channels: list[int] = [int(c) for c in info.channels()]
        self.strides: list[int] = [int(s) for s in info.reduction()]
        self.frozen_stages = frozen_stages
        self._frozen_norms = self._freeze(info, frozen_stages)

    def _freeze(self, info: Any, frozen_stages: int) -> list[str]:
        """Freeze the first ``frozen_stages`` stages; return names of their batch norms."""
        module_names = [d["module"] for d in info.info]
        present = [m for m in module_names if _find_feature(m, self.body) is not None]
        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= len(present):
            raise ConfigError(
                f"TimmBackbone: frozen_stages must be an int in [0, {len(present)}] (this model "
                f"has {len(present)} stages: {present}), got {frozen_stages!r}"
            )
        frozen_norms = []
        last_level = -1  # highest feature level whose module has been walked into
        for mod_name, module in self.body.named_modules():
            level = next((i for i, m in enumerate(module_names) if _under(mod_name, m)), None)
            if level is not None:
                last_level = max(last_level, level)
            stage = level if level is not None else last_level + 1
            if stage >= frozen_stages:
                continue
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                frozen_norms.append(mod_name)
        return frozen_norms

    def train(self, mode: bool = True) -> TimmBackbone:
        """Set train/eval mode; batch norms of frozen stages always stay in eval mode."""
        super().train(mode)
        for name in self._frozen_norms:
            self.body.get_submodule(name).eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps, finest first: ``[(B, channels[i], H/strides[i], W/strides[i])]``."""
        feats = self.body(images)
        return list(feats.values()) if isinstance(feats, Mapping) else list(feats)


def _feature_levels(name: str, in_chans: int, kwargs: dict) -> list[dict]:
    """timm's ``feature_info`` dicts of every level of ``name`` (shapes only, no weights)."""
    extra = {k: v for k, v in kwargs.items() if k not in ("out_indices", "pretrained_cfg_overlay")}
    try:
        with torch.device("meta"):  # no memory, no init cost
            body = timm.create_model(name, features_only=True, in_chans=in_chans, **extra)
    except Exception:  # some models compute values (.item()) at init: build on CPU instead
        body = _create(name, False, in_chans, extra, None)
    return list(body.feature_info.info)


def _check_out_indices(name: str, out_indices: Sequence[int], levels: list[dict]) -> None:
    """Raise ConfigError unless ``out_indices`` are distinct, increasing levels of the model.

    Negative indices count from the last level (timm's convention). Order matters: timm returns
    maps in network order but reports channels in the given order, so unordered indices would
    give the neck wrong channel counts.
    """
    n = len(levels)
    ok = all(-n <= i < n for i in out_indices)
    positive = [i % n for i in out_indices] if ok else []
    if ok and all(a < b for a, b in zip(positive, positive[1:])):
        return
    table = "; ".join(f"{i}: stride {d['reduction']}, {d['num_chs']} ch" for i, d in
                      enumerate(levels))
    last3 = tuple(range(max(0, n - 3), n))
    raise ConfigError(
        f"TimmBackbone: out_indices {tuple(out_indices)!r} are not valid for timm model "
        f"{name!r}: it has {n} feature levels, so out_indices must be distinct, increasing "
        f"ints in 0..{n - 1} (or -{n}..-1 from the end); levels: {table}. E.g. "
        f"out_indices={last3!r} for strides "
        f"{', '.join(str(levels[i]['reduction']) for i in last3)}"
    )


def _under(mod_name: str, feature_module: str) -> bool:
    """Whether ``mod_name`` is ``feature_module`` or inside it (timm's feature wrappers rename
    ``stages.0`` to ``stages_0`` or nest the model under ``model.``)."""
    for prefix in (feature_module, feature_module.replace(".", "_"), "model." + feature_module):
        if mod_name == prefix or mod_name.startswith(prefix + "."):
            return True
    return False


def _find_feature(feature_module: str, body: nn.Module) -> str | None:
    names = dict(body.named_modules())
    for prefix in (feature_module, feature_module.replace(".", "_"), "model." + feature_module):
        if prefix in names:
            return prefix
    return None


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not timm.is_model(name):
        hint = closest(str(name), timm.list_models(), n=5)
        raise ConfigError(
            f"TimmBackbone: unknown timm model name {name!r}"
            + (f"; did you mean: {', '.join(hint)}?" if hint else "")
            + " (timm.list_models() lists them all)"
        )


def _create(
    name: str,
    pretrained: bool,
    in_chans: int,
    kwargs: dict,
    checkpoint: str | None,
    features_only: bool = True,
) -> nn.Module:
    try:
        return timm.create_model(
            name, pretrained=pretrained, features_only=features_only, in_chans=in_chans, **kwargs
        )
    except Exception as err:  # timm raises many kinds (TypeError, AssertionError, Runtime…)
        shown = {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}
        what = (
            f"loading checkpoint {checkpoint!r}" if checkpoint
            else "downloading timm's pretrained weights (offline? pass checkpoint=<file>)"
            if pretrained else "building it"
        )
        raise ConfigError(
            f"TimmBackbone: timm model {name!r} with features_only={features_only}, "
            f"in_chans={in_chans}, "
            f"{shown} failed while {what}: {type(err).__name__}: {err}"
        ) from err


def _check_checkpoint(path: str, name: str, in_chans: int, kwargs: dict) -> None:
    """Raise ConfigError unless ``path`` holds a state dict whose keys fit timm's ``name``."""
    if not os.path.isfile(path):
        raise ConfigError(f"TimmBackbone: checkpoint file {path!r} does not exist")
    try:
        state = load_state_dict(path)
    except Exception as err:
        raise ConfigError(
            f"TimmBackbone: checkpoint file {path!r} is not a loadable torch/safetensors state "
            f"dict: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(
            f"TimmBackbone: checkpoint file {path!r} does not hold a state dict of tensors"
        )
    extra = {k: v for k, v in kwargs.items() if k != "out_indices"}
    try:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            reference = timm.create_model(name, pretrained=False, in_chans=in_chans, **extra)
    except Exception:  # some models compute values (.item()) at init: build on CPU instead
        reference = _create(name, False, in_chans, extra, None, features_only=False)
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    cfg = reference.pretrained_cfg
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    optional = {k for k in expected for h in heads if k.startswith(h + ".")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected) - optional)
    first_conv = cfg.get("first_conv")
    first_convs = {first_conv} if isinstance(first_conv, str) else set(first_conv or ())
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(s)}"
        for k, s in expected.items()
        if k in state and k not in optional and state[k].shape != s
        and k.rsplit(".", 1)[0] not in first_convs  # timm adapts the input conv's channels
    ]
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" … ({len(keys)} in all)" if len(keys) > 5 else "")

        parts = [
            f"missing keys: {show(missing)}" if missing else "",
            f"unexpected keys: {show(unexpected)}" if unexpected else "",
            f"wrong shapes: {show(wrong)}" if wrong else "",
        ]
        raise ConfigError(
            f"TimmBackbone: checkpoint file {path!r} does not match timm model {name!r} "
            f"({'; '.join(p for p in parts if p)}). It must be a state dict in timm's key format."
        )


# -- pretrained weights without a local file ----------------------------------------------------
def _local_weights_or_reachable_hub(name: str, kwargs: dict) -> None:
    """For ``pretrained=True`` without ``checkpoint``: point timm at a cached copy of its
    weights (no network request at all), or check in seconds that the hub is reachable.

    Raises:
        ConfigError: not cached and offline (``HF_HUB_OFFLINE``, or no connection within
            :data:`HUB_TIMEOUT_S`), with the local-file alternatives.
    """
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if overlay.get("file") or overlay.get("state_dict") is not None:
        return  # the user gave timm a local file already
    try:
        from timm.models._builder import _resolve_pretrained_source

        cfg = timm.models.get_pretrained_cfg(name)
        source, location = _resolve_pretrained_source({**cfg.to_dict(), **overlay})
    except Exception:  # an unknown tag or a timm without these helpers: timm reports it
        return
    if source not in ("hf-hub", "url"):
        return
    cached = _cached_weights(source, location)
    if cached is not None:
        kwargs["pretrained_cfg_overlay"] = {**overlay, "file": cached, "source": ""}
        return
    where = f"Hugging Face repo {location[0] if isinstance(location, tuple) else location}" \
        if source == "hf-hub" else location
    if source == "hf-hub" and _env_flag("HF_HUB_OFFLINE"):
        problem = "HF_HUB_OFFLINE is set"
    else:
        problem = _unreachable(_endpoint(source, location))
    if problem is None:
        return
    raise ConfigError(
        f"TimmBackbone: pretrained=True needs timm's weights for {name!r} ({where}); they are "
        f"not in the local cache and {problem}. Offline, give a local weights file instead: "
        f"model.backbone.checkpoint=/path/{name.split('.')[0]}.pth (a timm state dict, saved "
        f"where there is network with torch.save(timm.create_model({name!r}, pretrained=True)"
        ".state_dict(), path), or timm's .safetensors file; same as pretrained_cfg_overlay="
        "dict(file=path)), or model.backbone.pretrained=False to train from scratch"
    )


def _cached_weights(source: str, location: Any) -> str | None:
    """Path of an already downloaded weights file for timm's ``(source, location)``."""
    if source == "url":
        path = os.path.join(torch.hub.get_dir(), "checkpoints",
                            os.path.basename(urllib.parse.urlparse(location).path))
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    repo, filename = location if isinstance(location, tuple) else (location, None)
    repo, _, revision = repo.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for fn in names:
        found = try_to_load_from_cache(repo, fn, cache_dir=constants.HF_HUB_CACHE,
                                       revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _endpoint(source: str, location: Any) -> tuple[str, int]:
    """``(host, port)`` the download would connect to first (the proxy when one is set)."""
    if source == "hf-hub":
        url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    else:
        url = str(location)
    parsed = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme or "https")
    if proxy:
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def _unreachable(endpoint: tuple[str, int]) -> str | None:
    """None when ``endpoint`` accepts a TCP connection within :data:`HUB_TIMEOUT_S`, else why."""
    host, port = endpoint
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as err:
        return f"{host}:{port} cannot be reached ({type(err).__name__}: {err})"
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "on", "yes", "true")
