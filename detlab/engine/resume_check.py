"""Resume that checks what it resumes: the recipe being resumed against the one stored in the
checkpoint.

The stored recipe is read as data only (``ckpt["detlab_recipe"]`` → JSON → ``"resolved"`` →
JSON); no recipe code from the checkpoint runs. Both recipes are flattened to dotted keys
(``train.optimizer.lr``) and compared:

* a change under ``model`` (the architecture) is refused with a :class:`ConfigError` listing
  the differences: the weights in the checkpoint do not fit another network (Lightning would
  fail later with a raw ``RuntimeError`` about state-dict shapes). Keys that do not change the
  network's weights are allowed: post-processing (``…postprocess…``) and how the backbone was
  initialised (``pretrained``, ``checkpoint``: the checkpoint's weights replace them);
* ``train.max_epochs`` not above the epochs already trained is refused with a clear
  :class:`ConfigError` (Lightning would raise ``MisconfigurationException`` or train nothing);
* any other change (learning rate, data, schedule…) is allowed with a warning listing it;
  bookkeeping keys (:data:`QUIET_KEYS`: ``max_epochs``, ``work_dir``, ``num_workers``…) are only
  listed.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from ..checks import is_int
from ..errors import CheckpointError, ConfigError

__all__ = ["QUIET_KEYS", "flatten", "recipe_diff", "check_resume", "stored_resolved"]

# Keys that change how a run is carried out, not what it learns: listed, never warned about.
QUIET_KEYS = frozenset({
    "train.max_epochs", "train.work_dir", "train.progress_bar", "train.progress_every",
    "train.num_threads",
    "train.diagnostics", "train.log_every_n_steps", "data.num_workers",
    "data.persistent_workers", "data.pin_memory",
})
# Parts of a ``model`` key that leave the weights' shapes and meaning alone.
_NON_ARCH_PARTS = ("postprocess", "postprocessor", "pretrained", "checkpoint")
_MISSING = object()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": value}``; lists and scalars are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def recipe_diff(stored: dict[str, Any], current: dict[str, Any]
                ) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (stored value, current value)}`` for every key whose value differs
    (a key missing on one side has the value ``<unset>``)."""
    a, b = flatten(stored), flatten(current)
    diff = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            diff[key] = (va, vb)
    return diff


def _show(value: Any) -> str:
    return "<unset>" if value is _MISSING else json.dumps(value)


def _format(diff: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in diff.items())


def _is_architecture(key: str) -> bool:
    parts = key.split(".")
    return parts[0] == "model" and not any(p in _NON_ARCH_PARTS for p in parts[1:])


def stored_resolved(ckpt: dict[str, Any], path: Any = "") -> dict[str, Any]:
    """The resolved recipe stored in a checkpoint dict, parsed as JSON (never executed)."""
    try:
        provenance = json.loads(ckpt["detlab_recipe"])
        resolved = json.loads(provenance["resolved"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has no readable stored recipe: {err}") from err
    if not isinstance(resolved, dict):
        raise CheckpointError(f"checkpoint {path}: the stored recipe is not a mapping")
    return resolved


def check_resume(current: dict[str, Any], ckpt: dict[str, Any], path: Any = ""
                 ) -> dict[str, tuple[Any, Any]]:
    """Compare the resolved recipe being resumed (``current``) with the checkpoint's.

    Prints the changed keys; warns about changes outside :data:`QUIET_KEYS`.

    Returns:
        The differences ``{key: (stored, current)}``.

    Raises:
        ConfigError: a change under ``model`` (architecture), or ``train.max_epochs`` not
            above the number of epochs the checkpoint has finished.
    """
    diff = recipe_diff(stored_resolved(ckpt, path), current)
    arch = {k: v for k, v in diff.items() if _is_architecture(k)}
    if arch:
        raise ConfigError(
            f"--resume {path}: the model differs from the one the checkpoint was trained "
            f"with: {_format(arch)}. A run resumes with its architecture; start a new run "
            "(without --resume) to train this model"
        )
    done = int(ckpt.get("epoch", -1)) + 1  # epochs finished (checkpoints are end-of-epoch)
    max_epochs = (current.get("train") or {}).get("max_epochs")
    if is_int(max_epochs) and max_epochs != -1 and max_epochs <= done:
        raise ConfigError(
            f"--resume {path}: train.max_epochs={max_epochs} but the checkpoint has already "
            f"finished {done} epoch(s); set train.max_epochs={done + 1} or more to train on"
        )
    if diff:
        rank_zero_info(f"resume: changed since the checkpoint: {_format(diff)}")
    loud = {k: v for k, v in diff.items() if k not in QUIET_KEYS}
    if loud:
        warnings.warn(
            f"resuming {path} with a changed recipe ({len(loud)} key(s)): {_format(loud)}",
            UserWarning, stacklevel=2,
        )
    return diff
