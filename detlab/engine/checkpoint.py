"""Loading detlab checkpoints without running code from them.

Trust model: a checkpoint is data. Reading one (``torch.load(weights_only=True)``) and
rebuilding its model from the stored resolved recipe uses **registered** component types only;
nothing stored in the checkpoint is executed or imported. Two things a checkpoint can carry
would run code, and are used only on an explicit opt-in:

* a dotted ``type`` path (``"my_heads.MyHead"``): importing a module runs it;
* the texts of the recipe files (``files[*].text``): classes defined inside a recipe file come
  back only by executing that text.

Opt in with ``trust=True`` (CLI: ``--trust-recipe``) when you trust where the checkpoint came
from, or pass your own recipe file (``recipe=``; CLI: ``--recipe my_recipe.py``): your file is
executed, as in ``detlab train``, and the checkpoint only provides the weights, which must fit
that recipe's model. Even when trusted, a dotted path must name a class or a function of a
non-standard-library package (:func:`detlab.registry.check_dotted_target`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..recipe import Recipe, apply_overrides, component_types, from_source, load
from ..registry import REGISTRIES
from .task import RECIPE_KEY, DetlabTask

__all__ = [
    "read_checkpoint", "load_checkpoint", "load_task", "untrusted_parts", "add_trust_arguments",
]

_OPT_IN = (
    "If you trust where the checkpoint comes from, pass --trust-recipe (Python: trust=True); "
    "or give your own recipe file with --recipe RECIPE.py (Python: recipe=...), and the "
    "checkpoint only provides the weights"
)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, read with ``weights_only=True``; checked to be detlab's.

    Raises:
        CheckpointError: missing file, or ``not a detlab checkpoint: <path> (<reason>)``
            for a file torch cannot read or one without detlab's entries.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for garbage files
        raise CheckpointError(
            f"not a detlab checkpoint: {path} ({_unreadable(path, err)})") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a detlab checkpoint: {path} (it holds a "
                              f"{type(ckpt).__name__}, not the dict `detlab train` writes)")
    missing = [k for k in (RECIPE_KEY, "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"not a detlab checkpoint: {path} (no {' or '.join(map(repr, missing))} entry; "
            "checkpoints written by `detlab train` carry their recipe and weights)")
    return ckpt


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in a few words instead of torch's text."""
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    with open(path, "rb") as f:
        magic = f.read(4)
    text = str(err)
    if "not an allowed global" in text or "Unsupported global" in text:
        return ("it holds Python objects beyond tensors and plain data, which are not "
                "loaded because loading them runs code; `detlab train` writes none")
    if magic == b"PK\x03\x04" or "central directory" in text:
        return f"truncated or damaged torch zip archive of {size} bytes; copy it again"
    return f"not a file torch.save writes: {size} bytes, {type(err).__name__} on reading"


def load_checkpoint(path: str | Path, *, trust: bool = False) -> tuple[Recipe, dict[str, Any]]:
    """Read a detlab checkpoint and the recipe stored in it.

    Without ``trust`` only the resolved JSON is read (nothing executed, imported or put on
    ``sys.path``); the recipe may still name dotted types, which :func:`load_task` refuses
    (see :func:`untrusted_parts`). With ``trust=True`` the stored recipe files are executed and
    the recipe's folder and user-module folders are put on ``sys.path``.

    Returns:
        The recipe stored in it and the raw checkpoint dict.

    Raises:
        CheckpointError: missing, unreadable, not a detlab checkpoint, corrupt recipe entry.
    """
    ckpt = read_checkpoint(path)
    try:
        provenance = json.loads(ckpt[RECIPE_KEY])
        if not isinstance(provenance, dict) or not isinstance(provenance.get("resolved"), str):
            raise ValueError("no resolved recipe JSON")
        recipe = from_source(provenance, trust=trust)
        if not isinstance(recipe.get("model"), dict):
            raise ValueError("the resolved recipe has no 'model' section")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} has a corrupt recipe entry: {err}") from err
    return recipe, ckpt


def _known_elsewhere(name: str) -> bool:
    """Classes resolved without importing user code: albumentations transforms and
    ``torch.optim`` optimizers (fixed namespaces, see data/transforms.py and engine/optim.py).
    Only classes: those namespaces also hold functions (``albumentations.save``) and modules."""
    import inspect

    import albumentations as A

    return any(inspect.isclass(getattr(ns, name, None)) for ns in (A, torch.optim))


def untrusted_parts(recipe: Recipe) -> list[str]:
    """What rebuilding ``recipe``'s components would import, execute or call beyond registered
    components, one line each: dotted ``type`` paths that are not registered names, and names
    that are neither registered nor an albumentations/``torch.optim`` class (which the stored
    recipe files may define). Empty: the recipe uses registered types only."""
    parts = []
    file_paths = ", ".join(
        sorted(str(info.get("path") or name) for name, info in recipe.files.items())
    )
    for key, type_ in component_types(dict(recipe)):
        if any(type_ in registry for registry in REGISTRIES.values()):
            continue
        if "." in type_:
            module = type_.rpartition(".")[0]
            parts.append(f"{key}={type_!r} would import module {module!r}")
        elif _known_elsewhere(type_):
            continue
        elif recipe.files:
            parts.append(
                f"{key}={type_!r} is not registered; it would come from executing the stored "
                f"recipe file(s) {file_paths}"
            )
        else:
            parts.append(
                f"{key}={type_!r} is neither a registered name nor an albumentations or "
                "torch.optim class"
            )
    return parts


def _check_trusted(recipe: Recipe, path: str | Path) -> None:
    parts = untrusted_parts(recipe)
    if parts:
        raise CheckpointError(
            f"checkpoint {path} would run code from its recipe: {'; '.join(parts)}. A checkpoint "
            f"loads with registered types only by default. {_OPT_IN}."
        )


def _load_weights(task: DetlabTask, ckpt: dict[str, Any], path: str | Path, whose: str) -> None:
    try:
        missing, unexpected = task.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:  # size mismatches
        first = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"checkpoint {path} does not match {whose}: "
            + ("; ".join(first[:3]) or str(err).splitlines()[0])
        ) from err
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match {whose}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )


def load_task(path: str | Path, overrides: list[str] | None = None, *, trust: bool = False,
              recipe: str | Path | Recipe | None = None) -> DetlabTask:
    """Rebuild the task (model + evaluator) from a checkpoint, weights loaded, in eval mode.

    Args:
        path: a ``.ckpt`` written by ``detlab train``.
        overrides: dotted ``key=value`` overrides applied to the recipe (e.g. a threshold).
        trust: also use dotted types and recipe-file code stored in the checkpoint.
        recipe: your own recipe (file path or :class:`Recipe`) to build the model from instead
            of the stored one; the checkpoint then only provides the weights.

    Raises:
        CheckpointError: the stored recipe would run code and ``trust`` is not set (the message
            names each type/module and how to opt in), or the weights do not fit the model.
    """
    if recipe is not None:
        ckpt = read_checkpoint(path)
        if isinstance(recipe, Recipe):
            apply_overrides(recipe, list(overrides or []))
            recipe.overrides = recipe.overrides + list(overrides or [])
            user = recipe
        else:
            user = load(recipe, overrides)
        task = DetlabTask(user)
        _load_weights(task, ckpt, path, f"the model of recipe {user.path or user.name}")
        task.eval()
        return task
    stored, ckpt = load_checkpoint(path, trust=trust)
    if not trust:
        # Checked before overrides: applying one looks up the component types it edits.
        _check_trusted(stored, path)
    if overrides:
        apply_overrides(stored, overrides)
        stored.overrides = stored.overrides + list(overrides)
    task = DetlabTask(stored)
    _load_weights(task, ckpt, path, "its recipe's model")
    task.eval()
    return task


def add_trust_arguments(parser: Any) -> None:
    """Add ``--trust-recipe`` and ``--recipe`` to a CLI subcommand that loads a checkpoint
    (:func:`detlab.commands.cli_args.add_trust_arguments`; kept here for the commands that
    import it from the engine)."""
    from ..commands.cli_args import add_trust_arguments as add

    add(parser)
