"""The dataset ``detlab predict`` runs on user files: the recipe's val preprocessing by default.

``data.predict`` is optional. Without it, plain image files are read by
:class:`~detlab.data.datasets.image_files.ImageFiles` built from the val dataset's
``input_spec()`` (channels, mean/std, :class:`~detlab.data.geometry.InputGeometry`, pixel
type), so ``predict`` builds the tensor ``eval`` builds. An explicit ``data.predict`` still
works, but when its preprocessing differs from ``data.val``'s it is an error naming both keys:
predictions made with another geometry or normalization than the checkpoint was validated
with are not the ones ``eval`` measured.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from torch.utils.data import Dataset

from ..checks import is_number
from ..errors import ConfigError, DetlabError
from ..registry import DATASETS

log = logging.getLogger(__name__)

__all__ = ["input_spec_of", "spec_differences", "build_predict_dataset", "val_input_spec"]


def input_spec_of(dataset: Any) -> dict[str, Any] | None:
    """``dataset.input_spec()`` (looking through wrappers with a ``dataset`` attribute), or
    ``None`` when the dataset does not describe its preprocessing."""
    for _ in range(8):
        if dataset is None:
            return None
        if callable(getattr(dataset, "input_spec", None)):
            return dict(dataset.input_spec())
        dataset = getattr(dataset, "dataset", None)
    return None


def _flat(spec: Mapping[str, Any]) -> dict[str, Any]:
    from .geometry import InputGeometry

    out = {k: v for k, v in spec.items() if k != "geometry"}
    geometry = InputGeometry.from_config(spec.get("geometry")).to_config()
    out.update({f"geometry.{k}": v for k, v in geometry.items()})
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if is_number(a) and is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def spec_differences(predict: Mapping[str, Any], val: Mapping[str, Any]) -> list[str]:
    """``"data.predict.<key>=<value> but data.val gives <value>"`` for every preprocessing
    setting that differs (``geometry.<field>`` for the geometry)."""
    p, v = _flat(predict), _flat(val)
    return [f"data.predict.{k}={p.get(k)!r} but data.val gives {v.get(k)!r}"
            for k in sorted(set(p) | set(v)) if not _same(p.get(k), v.get(k))]


def _val_spec(cfg: Any, val_dataset: Callable[[], Dataset]) -> dict[str, Any] | None:
    """data.val's input spec; from its config alone when its files cannot be read (a
    checkpoint used on a machine without the training data)."""
    if cfg is None:
        return None
    try:
        return input_spec_of(val_dataset())
    except DetlabError as err:  # files moved, paths unset: the config still says it all
        while isinstance(cfg, Mapping) and isinstance(cfg.get("dataset"), Mapping):
            cfg = cfg["dataset"]  # wrappers (MosaicDataset, LesionPatches …)
        cls = DATASETS.get(cfg.get("type")) if isinstance(cfg, Mapping) else None
        from_config = getattr(cls, "input_spec_from_config", None)
        if from_config is None:
            log.info("data.val cannot be read (%s) and has no input_spec_from_config()", err)
            return None
        log.info("data.val cannot be read (%s); predict takes its preprocessing from the "
                 "data.val config", err)
        return dict(from_config(dict(cfg)))


def val_input_spec(data_cfg: Mapping[str, Any], val_dataset: Callable[[], Dataset]
                   ) -> dict[str, Any]:
    """data.val's preprocessing (``input_spec()``, or from its config when its files cannot be
    read): what an in-memory image gets in the Python API, as a file gets it in predict.

    Raises:
        ConfigError: no data.val, or one that does not describe its preprocessing.
    """
    spec = _val_spec(data_cfg.get("val"), val_dataset)
    if spec is None:
        raise ConfigError("predicting on an image needs data.val's preprocessing, but "
                          + ("data.val does not describe it (no input_spec())"
                             if data_cfg.get("val") is not None else "the recipe has no data.val"))
    return spec


def build_predict_dataset(
    data_cfg: Mapping[str, Any], val_dataset: Callable[[], Dataset], paths: list[str]
) -> Dataset:
    """The dataset over ``paths`` for ``detlab predict`` (module docstring).

    Args:
        data_cfg: the recipe's ``data`` section.
        val_dataset: builds (or returns) the val dataset; called only when needed.
        paths: the user's files and folders.

    Raises:
        ConfigError: no ``data.predict`` and a val dataset that does not describe its
            preprocessing, or a ``data.predict`` that disagrees with ``data.val``.
    """
    cfg = data_cfg.get("predict")
    val_type = (data_cfg.get("val") or {}).get("type") if isinstance(
        data_cfg.get("val"), Mapping) else None
    val_name = getattr(val_type, "__name__", val_type)
    spec = _val_spec(data_cfg.get("val"), val_dataset)
    if cfg is None:
        if spec is None:
            raise ConfigError(
                "detlab predict on image files: the recipe has no 'data.predict' dataset and "
                + (f"data.val ({val_name}) does not say how a plain image becomes its input "
                   "(no input_spec())" if data_cfg.get("val") is not None else "no 'data.val'")
                + "; add e.g. data['predict'] = dict(type='ImageFiles', channels=1, "
                "mean=(...), std=(...))"
            )
        return DATASETS.get("ImageFiles")(list(paths), **spec)
    dataset = DATASETS.build(cfg, key="data.predict", paths=list(paths))
    own = input_spec_of(dataset)
    if spec is not None and own is not None:
        diffs = spec_differences(own, spec)
        if diffs:
            raise ConfigError(
                f"data.predict preprocesses images differently from data.val ({val_name}): "
                + "; ".join(diffs)
                + ". Remove data.predict (predict then uses data.val's preprocessing) or make "
                "them agree"
            )
    return dataset
