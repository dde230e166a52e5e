"""The one post-processing slot every head has: a registered post-processor, per-stage settings.

A head takes ``postprocessor=dict(type=..., <settings>, val=dict(...), test=dict(...))``. The
settings outside ``val``/``test`` apply to both stages; ``val`` (validation during training) and
``test`` (``eval``/``predict``/``sweep``) override them. ``detlab sweep`` varies the names a
post-processor class lists in its ``sweepable`` attribute, as ``model.head.postprocessor.<knob>``
(both stages) or ``model.head.postprocessor.test.<knob>``.

A post-processor class may define ``ignored_settings(self) -> dict[str, str]``: the knobs its
current settings make no difference to, with the reason (Gaussian Soft-NMS ignores
``iou_threshold``), so a sweep over them can say why its rows are identical.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..registry import POSTPROCESSORS

__all__ = ["STAGES", "StagedPostprocessor", "sweepable_settings"]

#: ``"val"``: validation inside ``detlab train``; ``"test"``: ``eval``, ``predict``, ``sweep``.
STAGES: tuple[str, ...] = ("val", "test")


def sweepable_settings(obj: Any) -> tuple[str, ...]:
    """Names of the settings of post-processor ``obj`` (class or instance) that ``sweep`` may
    vary: its ``sweepable`` attribute, else every constructor argument."""
    cls = obj if inspect.isclass(obj) else type(obj)
    names = getattr(cls, "sweepable", None)
    if names is None:
        params = inspect.signature(cls.__init__).parameters.values()
        names = tuple(p.name for p in params if p.name != "self"
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    return tuple(names)


class StagedPostprocessor:
    """One built post-processor per stage, from one recipe entry.

    Args:
        cfg: ``dict(type=..., **settings, val=dict(...), test=dict(...))``, ``None`` (use
            ``default``) or an already-built post-processor (used for both stages).
        key: where ``cfg`` sits in the recipe (``"model.head.postprocessor"``), for messages.
        default: the head's default config, used for ``None`` and for keys ``cfg`` leaves out
            when ``cfg`` has the same ``type`` (so ``dict(type=default type, test=dict(x=1))``
            keeps the default's other settings).
        owner: the head's class name, for messages.
    """

    def __init__(self, cfg: Any, *, key: str, default: Mapping[str, Any], owner: str) -> None:
        self.key, self.owner = key, owner
        if cfg is None:
            cfg = default
        if not isinstance(cfg, Mapping):
            if not callable(cfg):
                raise ConfigError(f"{owner}: {key} must be a post-processor config dict "
                                  f"(type=...) or a callable, got {cfg!r}")
            self.config: dict[str, Any] | None = None
            self._stages = {stage: cfg for stage in STAGES}
            return
        cfg = dict(cfg)
        if "type" not in cfg:
            raise ConfigError(f"{owner}: {key} has no 'type' key (got keys: {sorted(cfg)}); "
                              f"the default is type={default.get('type')!r}")
        if cfg["type"] == default.get("type"):
            cfg = _merge(default, cfg)
        self.config = cfg
        common = {k: v for k, v in cfg.items() if k not in STAGES}
        self._stages = {}
        for stage in STAGES:
            override = cfg.get(stage) or {}
            if not isinstance(override, Mapping):
                raise ConfigError(f"{owner}: {key}.{stage} must be a dict of settings, "
                                  f"got {override!r}")
            if "type" in override and override["type"] != common["type"]:
                raise ConfigError(
                    f"{owner}: {key}.{stage} may change settings, not the type "
                    f"({override['type']!r} vs {common['type']!r})")
            self._stages[stage] = POSTPROCESSORS.build(
                {**common, **override}, key=f"{key}.{stage}" if override else key)

    def for_stage(self, stage: str) -> Any:
        """The post-processor built for ``stage`` (``"val"`` or ``"test"``)."""
        if stage not in self._stages:
            raise ConfigError(f"{self.owner}: stage must be one of {STAGES}, got {stage!r}")
        return self._stages[stage]

    def __call__(self, *args: Any, stage: str = "test", **kwargs: Any) -> Any:
        """Run the ``stage`` post-processor on ``args``/``kwargs``."""
        return self.for_stage(stage)(*args, **kwargs)

    @property
    def sweepable(self) -> tuple[str, ...]:
        """Settings ``detlab sweep`` may vary (those of the test-stage post-processor)."""
        return sweepable_settings(self.for_stage("test"))

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={self._stages[s]!r}" for s in STAGES)
        return f"StagedPostprocessor({parts})"


def _merge(default: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(default)
    for k, v in cfg.items():
        if k in STAGES and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out
