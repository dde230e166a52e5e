"""``DataModule``: datasets, sampler and loaders from the recipe's ``data`` section.

Keys of ``data``::

    train / val / test   dataset configs (test falls back to val)
    predict              optional dataset config of ``detlab predict`` (gets ``paths=[...]``);
                         default: ImageFiles with data.val's preprocessing (input_spec())
    batch_size           training batch size (val_batch_size defaults to it)
    num_workers          loader workers (default: min(2, cpu count))
    size_divisor         pad batches to a multiple of this (default: the model's largest stride)
    sampler              optional sampler config for training (e.g. PositiveOversampler)
    root                 data location given to every train/val/test dataset that takes a
                         ``root`` argument and sets none (``data.root=/data/Task`` on the CLI)
    cache                optional "ram" / "disk" (or dict(mode="disk", dir=...)): decoded,
                         resized, un-augmented images of train/val/test are cached, filled
                         before the loader's workers start, with the memory estimate logged
                         first (:mod:`detlab.data.cache`)
    multi_scale          optional (low, high): each training batch is resized to a random
                         multiple of size_divisor in [low, high] x the train dataset's img_size
                         (:class:`~detlab.data.multiscale.MultiScaleCollate`); with high > 1
                         the train dataset letterboxes at the largest size
                         (:func:`~detlab.data.multiscale.train_multi_scale`)
    uint8_batches        None (default: where the train pipeline allows it) / True / False:
                         the training loader's workers send uint8 images, normalized on the
                         training device after the batch got there (on_after_batch_transfer;
                         :mod:`detlab.data.uint8_batches`); val/test/predict stay float

Same seed, same run: the data module gets ``train.seed`` (``seed``); the training dataset is
wrapped in :class:`~detlab.data.seeding.SeededDataset` (augmentation seeded per sample from
seed, epoch and index), shuffled by :class:`~detlab.data.samplers.EpochShuffleSampler` and a
``data.sampler`` that takes a ``seed`` gets this one unless the recipe sets it.

A training dataset with ``set_epoch(epoch)`` (e.g. ``MosaicDataset`` and its close-mosaic
switch) gets it called with the trainer's epoch when the training loader is built and at every
training epoch start by :class:`~detlab.engine.callbacks.DatasetEpochSetter`, which the trainer
always adds.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ..checks import check_choice
from ..defaults import DATA_DEFAULTS
from ..errors import ConfigError, DataError
from ..registry import DATASETS, SAMPLERS
from .collate import Collate
from .multiscale import train_multi_scale
from .samplers import EpochShuffleSampler, NoSingletonBatchSampler
from .seeding import SeededDataset
from .uint8_batches import Uint8Collate, normalize_batch_images, uint8_unsupported
from .validation import recipe_key

__all__ = ["DataModule", "build_dataset", "set_dataset_epoch"]

_KNOWN_KEYS = set(DATA_DEFAULTS)
log = logging.getLogger(__name__)


def set_dataset_epoch(dataset: Any, epoch: int) -> bool:
    """Call ``set_epoch(epoch)`` on ``dataset`` or the first dataset it wraps (``.dataset``
    chain, e.g. ``Subset``) that has one; returns whether one was found."""
    for _ in range(8):
        if dataset is None:
            return False
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(int(epoch))
            return True
        dataset = getattr(dataset, "dataset", None)
    return False


def build_dataset(cfg: Any, key: str, **defaults: Any) -> Dataset:
    """Build a registered dataset from its config, naming ``key`` in errors."""
    if cfg is None:
        raise ConfigError(f"recipe has no dataset at {key!r}")
    return DATASETS.build(cfg, key=key, **defaults)


def _case_ids(dataset: Any) -> list[str] | None:
    """``dataset.case_ids()`` (looking through wrappers with a ``dataset`` attribute), or None."""
    while dataset is not None:
        if callable(getattr(dataset, "case_ids", None)):
            return list(dataset.case_ids())
        dataset = getattr(dataset, "dataset", None)
    return None


class DataModule(pl.LightningDataModule):
    """Lightning data module over the recipe's ``data`` section (see module docstring)."""

    def __init__(self, cfg: dict[str, Any], size_divisor: int = 32, seed: int = 0) -> None:
        super().__init__()
        unknown = set(cfg) - _KNOWN_KEYS
        if unknown:
            from ..registry import closest

            parts = [
                f"{k!r}" + (f" (did you mean {closest(k, sorted(_KNOWN_KEYS), 1)[0]!r}?)"
                            if closest(k, sorted(_KNOWN_KEYS), 1) else "")
                for k in sorted(unknown)
            ]
            raise ConfigError(f"unknown key(s) in recipe 'data': {', '.join(parts)}")
        self.cfg = cfg
        self.uint8_batches: bool | None = check_choice(
            "data", "uint8_batches", cfg.get("uint8_batches"), (None, True, False))
        self.batch_size = int(cfg.get("batch_size", 8))
        self.val_batch_size = int(cfg.get("val_batch_size") or self.batch_size)
        workers = cfg.get("num_workers")
        self.num_workers = int(min(2, os.cpu_count() or 1) if workers is None else workers)
        self.size_divisor = int(cfg.get("size_divisor") or size_divisor)
        self.collate = Collate(self.size_divisor)
        self.seed = int(seed)
        # first epoch of a resumed run (set by fit from the checkpoint), else None
        self.start_epoch: int | None = None
        self._datasets: dict[str, Dataset] = {}
        self._caches: dict[int, Any] = {}

    def check(self) -> None:
        """Build the train dataset (and val when set), the train sampler and collate: every
        path, class name and data key is checked here, before the model is built."""
        dataset = self.dataset("train")
        if self.cfg.get("cache") is not None:
            from .cache import build_cache

            build_cache(self.cfg["cache"])  # a bad data.cache fails before the model is built
        if self.cfg.get("val") is not None:
            self.dataset("val")
        if self.cfg.get("sampler") is not None:
            SAMPLERS.build(self.cfg["sampler"], key="data.sampler", dataset=dataset,
                           seed=self.seed)
        self.train_collate(dataset)
        self.train_uint8(dataset)

    def set_size_divisor(self, size_divisor: int) -> None:
        """Use the model's largest stride for padding, unless ``data.size_divisor`` is set."""
        self.size_divisor = int(self.cfg.get("size_divisor") or size_divisor)
        self.collate = Collate(self.size_divisor)

    def dataset(self, split: str) -> Dataset:
        """The dataset for ``split`` (``train``/``val``/``test``), built once."""
        if split not in self._datasets:
            cfg = self.cfg.get(split)
            if split == "test" and cfg is None:
                return self.dataset("val")
            cfg = self._with_root(cfg, split)
            # the dataset's one DataReport log line names the split: "data.train (Coco… )"
            with recipe_key(f"data.{split}"):
                self._datasets[split] = build_dataset(cfg, key=f"data.{split}")
            self._check_disjoint_cases()
        return self._datasets[split]

    def _check_disjoint_cases(self) -> None:
        """Datasets that know their cases (CT studies) must not share one between train and
        val: slices of one patient in both would make validation measure memory."""
        ids = {s: _case_ids(self._datasets.get(s)) for s in ("train", "val")}
        if ids["train"] is None or ids["val"] is None:
            return
        shared = sorted(set(ids["train"]) & set(ids["val"]))
        if shared:
            raise DataError(
                f"{len(shared)} case(s) are in both data.train and data.val: {shared[:10]}; give "
                "both the same split settings (val_fraction, seed, val_cases)"
            )

    def _with_root(self, cfg: Any, split: str) -> Any:
        """``cfg`` with ``root`` filled from ``data.root`` (an error if its dataset takes none:
        a root that is silently ignored would train on something else)."""
        root = self.cfg.get("root")
        if root is None or not isinstance(cfg, dict) or cfg.get("root") is not None:
            return cfg
        cls = DATASETS.get(cfg.get("type"))
        try:
            takes_root = "root" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            takes_root = False
        if not takes_root:
            raise ConfigError(
                f"data.root={root!r} is set but data.{split} ({getattr(cls, '__name__', cls)}) "
                "takes no root; for CT studies use recipes/fracture_unet_ct.py data.root=..."
            )
        return {**cfg, "root": root}

    def _fill_cache(self, dataset: Dataset, split: str) -> None:
        """``data.cache``: attach an :class:`~detlab.data.cache.ImageCache` to the detection
        dataset inside ``dataset`` and fill it, in this process, before workers start. Called
        when a loader is built, so the geometry is final (multi-scale may change it)."""
        if self.cfg.get("cache") is None:
            return
        from .cache import build_cache
        from .wrappers import base_detection_dataset

        try:
            base = base_detection_dataset(dataset)
        except ConfigError:
            raise ConfigError(
                f"data.cache={self.cfg['cache']!r} caches detection datasets' images, but "
                f"data.{split} is {type(dataset).__name__}; set data.cache=None") from None
        cache = self._caches.get(id(base))
        if cache is None:
            cache = self._caches[id(base)] = build_cache(self.cfg["cache"])
            base.image_cache = cache
        cache.ensure(base, f"data.{split}")

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool,
                sampler: Any = None, collate: Any = None) -> DataLoader:
        batching: dict[str, Any] = {"batch_size": batch_size, "sampler": sampler,
                                    "drop_last": False}
        if shuffle:  # training
            if sampler is None:
                sampler = EpochShuffleSampler(len(dataset), self.seed)  # type: ignore[arg-type]
            batches = NoSingletonBatchSampler(sampler, batch_size)
            if batches.drops_one():
                log.warning(
                    "data.train: %d samples per epoch with batch_size=%d leave a final batch of "
                    "1 sample; it is dropped each epoch (BatchNorm cannot train on one sample; "
                    "the order changes every epoch)", len(sampler), batch_size)
            batching = {"batch_sampler": batches}
        return DataLoader(
            dataset,
            **batching,
            num_workers=self.num_workers,
            # worker base seeds from train.seed, not from the global generator's state
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=collate or self.collate,
            pin_memory=bool(self.cfg.get("pin_memory", False)),
            persistent_workers=bool(
                self.num_workers > 0 if self.cfg.get("persistent_workers") is None
                else self.cfg["persistent_workers"]
            ),
        )

    def train_dataloader(self, uint8: bool | None = None) -> DataLoader:
        """Shuffled loader over ``data.train``, or ordered by ``data.sampler`` when set.

        ``uint8``: yield :class:`~detlab.data.uint8_batches.Uint8Batch` es (uint8 images,
        normalized by :meth:`on_after_batch_transfer`). Default: per ``data.uint8_batches``
        when a Lightning trainer drives this data module (it calls that hook before every
        training step), else float batches as the validation loader's: a loader read outside
        Lightning (``detlab show-data``, tools) needs no normalization step of its own."""
        dataset = self.dataset("train")
        if uint8 is None:
            uint8 = getattr(self, "trainer", None) is not None and self.train_uint8(dataset)
        elif uint8:
            self.train_uint8(dataset, required=True)
        seeded = SeededDataset(dataset, self.seed, uint8=bool(uint8))
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        # Lightning builds (and, with workers, starts iterating) this loader while a resumed
        # run's epoch is not restored yet (a step-based scheduler asks for its length), and
        # sets the sampler's epoch only afterwards: start at the resumed epoch already.
        epoch = max(epoch, self.start_epoch or 0)
        seeded.set_epoch(epoch)
        sampler = None
        if self.cfg.get("sampler") is not None:
            sampler = SAMPLERS.build(self.cfg["sampler"], key="data.sampler", dataset=dataset,
                                     seed=self.seed)
        collate = self.train_collate(dataset)
        if uint8:
            from .wrappers import base_detection_dataset

            base = base_detection_dataset(dataset)
            collate = Uint8Collate(self.size_divisor, base.mean, base.std)
        self._fill_cache(dataset, "train")
        loader = self._loader(seeded, self.batch_size, shuffle=True, sampler=sampler,
                              collate=collate)
        set_epoch = getattr(loader.batch_sampler.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        return loader

    def train_uint8(self, dataset: Dataset, required: bool = False) -> bool:
        """Whether the training loader sends uint8 images (``data.uint8_batches``): False when
        set so, else whether ``dataset`` allows it
        (:func:`~detlab.data.uint8_batches.uint8_unsupported`); a ConfigError naming why not
        when ``data.uint8_batches=True`` (or ``required``) and it does not."""
        if self.uint8_batches is False and not required:
            return False
        reason = uint8_unsupported(dataset, self.cfg.get("multi_scale"))
        if reason is not None and (required or self.uint8_batches):
            raise ConfigError(f"data.uint8_batches=True: {reason}, so its batches must be "
                              "normalized on the loader workers; set data.uint8_batches=None "
                              "(uint8 where possible) or False")
        return reason is None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning hook: normalize a uint8 training batch on its device
        (:func:`~detlab.data.uint8_batches.normalize_batch_images`); other batches unchanged."""
        return normalize_batch_images(batch)

    def train_collate(self, dataset: Dataset) -> Any:
        """``Collate``, or ``MultiScaleCollate`` when ``data.multi_scale`` is set."""
        scale_range = self.cfg.get("multi_scale")
        if scale_range is None:
            return self.collate
        # sizes above img_size: the train dataset letterboxes at the largest one (multiscale)
        return train_multi_scale(dataset, scale_range, self.size_divisor)

    def val_dataloader(self) -> DataLoader:
        """Loader over ``data.val`` in dataset order (batch size ``val_batch_size``), passed
        through ``val_loader_wrapper`` when set (sliced validation during training:
        :meth:`detlab.engine.task.DetlabTask.setup`)."""
        self._fill_cache(self.dataset("val"), "val")
        loader = self._loader(self.dataset("val"), self.val_batch_size, shuffle=False)
        wrapper = getattr(self, "val_loader_wrapper", None)
        return loader if wrapper is None else wrapper(loader)

    def test_dataloader(self) -> DataLoader:
        """Loader over ``data.test`` (``data.val`` when there is none), in dataset order."""
        self._fill_cache(self.dataset("test"), "test")
        return self._loader(self.dataset("test"), self.val_batch_size, shuffle=False)

    def predict_loader(self, paths: list[str]) -> DataLoader:
        """Loader over user files for ``detlab predict``: ``ImageFiles`` with data.val's
        preprocessing, or ``data.predict`` when set and consistent with data.val
        (:func:`~detlab.data.predict_spec.build_predict_dataset`)."""
        from .predict_spec import build_predict_dataset

        dataset = build_predict_dataset(self.cfg, lambda: self.dataset("val"), list(paths))
        return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0,
                          collate_fn=self.collate)
