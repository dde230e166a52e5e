"""Per-trial budget of ``detlab tune``: fewer epochs and a seeded fraction of the train set.

``--fraction F`` wraps ``data.train`` in :class:`TrainFraction` (a registered dataset, by its
dotted path, so a trial's ``recipe.json`` rebuilds without ``detlab.tune`` being imported): the
same ``round(F · len)`` samples, drawn without replacement from ``train.seed``, in every trial,
so trials differ by their parameters only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..checks import is_int, is_number
from ..errors import ConfigError

__all__ = ["TrainFraction", "budget_overrides", "wrap_fraction"]

_TYPE = "detlab.tune.budget.TrainFraction"


class TrainFraction(Dataset):
    """A seeded subset of ``dataset``: ``round(fraction · len(dataset))`` samples (at least 1),
    in index order. Attributes the wrapped dataset has (``class_names``, ``set_epoch``…) are
    looked up there; ``positive_flags()`` and ``annotations(i)`` follow the subset's indices.

    Args:
        dataset: a dataset or its config dict (``dict(type="SyntheticSpineCT", …)``).
        fraction: share of the samples kept, in ``(0, 1]``.
        seed: seed of the draw (``train.seed``).
    """

    def __init__(self, dataset: Any, fraction: float, seed: int = 0) -> None:
        from ..data.datamodule import build_dataset

        if not is_number(fraction) or not 0 < fraction <= 1:
            raise ConfigError(f"TrainFraction: fraction must be in (0, 1], got {fraction!r}")
        if isinstance(dataset, dict):
            dataset = build_dataset(dataset, key="data.train.dataset")
        self.dataset = dataset
        n = len(dataset)
        keep = max(1, int(round(float(fraction) * n)))
        rng = np.random.default_rng(int(seed))
        self.indices = np.sort(rng.choice(n, size=keep, replace=False)).tolist()
        self.fraction = float(fraction)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    def positive_flags(self) -> Any:
        """The wrapped dataset's positive flags at the kept indices."""
        return np.asarray(self.dataset.positive_flags())[self.indices]

    def annotations(self, i: int) -> Any:
        """The wrapped dataset's annotations of kept sample ``i``."""
        return self.dataset.annotations(self.indices[i])

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found here: forward to the wrapped dataset
        if name in ("dataset", "indices", "fraction") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def wrap_fraction(train_cfg: dict[str, Any], fraction: float, seed: int) -> dict[str, Any]:
    """``data.train`` config wrapped in :class:`TrainFraction`."""
    return {"type": _TYPE, "dataset": train_cfg, "fraction": float(fraction), "seed": int(seed)}


def budget_overrides(epochs: int | None) -> list[str]:
    """Override texts of the epoch budget."""
    if epochs is None:
        return []
    if not is_int(epochs) or epochs < 1:
        raise ConfigError(f"--epochs {epochs!r}: expected an integer >= 1")
    return [f"train.max_epochs={epochs}"]
