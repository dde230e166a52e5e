"""Decoded-image cache of a detection dataset (``data.cache="ram"|"disk"|None``).

Decoding a PNG/JPEG and resizing it to the input size are the most expensive steps of a
training sample, and they are the same every epoch. The cache keeps, per image, the decoded
image after the dataset's deterministic resize
(:meth:`~detlab.data.geometry.InputGeometry.resize_image`) and before any augmentation, so
a cached sample goes through the same augmentation, padding and normalization as an uncached
one and is the same tensor (tests/data/test_cache.py). Like Ultralytics' ``cache=``:

* ``"ram"``: filled once in the main process (threads: OpenCV decodes without the GIL) when a
  loader is built (the geometry is final then), before its workers start; forked workers
  share the pages. With the ``spawn`` start method (macOS, Windows) each worker gets a copy.
* ``"disk"``: one ``.npz`` per image under ``dir`` (default ``$XDG_CACHE_HOME/detlab/images``,
  else ``~/.cache/detlab/images``), named by a hash of the image's absolute path, its size and
  modification time and the resize settings, so an edited image or another ``img_size`` is a
  miss, never a stale hit. Only for datasets that read image files.

Before filling, the bytes needed are estimated from the image headers (no decoding) and logged;
``"ram"`` beyond the available memory (``"disk"`` beyond the free disk space) is refused with a
:class:`~detlab.errors.ConfigError`, and above half of it a warning is logged.

``data.cache`` accepts ``"ram"``, ``"disk"``, ``None`` or ``dict(mode="disk", dir=...)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .letterbox import fit_size

__all__ = ["ImageCache", "build_cache", "estimate_bytes", "available_ram", "CACHE_MODES"]

log = logging.getLogger(__name__)
CACHE_MODES = ("ram", "disk")


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/detlab/images`` (``~/.cache/detlab/images`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "detlab" / "images"


def available_ram() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo,
    else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _header_size(path: str) -> tuple[int, int] | None:
    """``(h, w)`` of an image file from its header (PIL opens lazily: no decoding)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception:  # noqa: BLE001 - not an image PIL knows: the caller decodes it
        return None


def cached_shape(geometry: Any, h: int, w: int, channels: int = 3) -> tuple[int, int, int]:
    """``(h', w', C)`` of an ``(h, w)`` image after ``geometry``'s resize (what is cached)."""
    if geometry.img_size is None:
        return h, w, channels
    if geometry.resize == "long_side":
        nh, nw = fit_size(h, w, geometry.img_size, geometry.scale_up)
    else:
        nh = nw = geometry.img_size
        if not geometry.scale_up:
            nh, nw = min(nh, h), min(nw, w)
    return nh, nw, channels


def estimate_bytes(dataset: Any) -> int:
    """Bytes the cache of ``dataset`` takes: sum of ``h' * w' * 3`` (uint8) over its images,
    the sizes from the annotations (``size``) or the file headers; an image whose size cannot
    be read so is decoded."""
    total = 0
    for i in range(len(dataset)):
        ann = dataset.annotations(i)
        size = tuple(ann.size) if ann.size is not None else _header_size(ann.path)
        if size is None:
            size = dataset.load_raw(i)[0].shape[:2]
        total += int(np.prod(cached_shape(dataset.geometry, int(size[0]), int(size[1]))))
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ImageCache:
    """Per-index store of ``(resized uint8 image, original (h, w))`` for one dataset.

    Args:
        mode: ``"ram"`` or ``"disk"``.
        directory: folder of the ``.npy`` files (``"disk"``).
        threads: decoding threads when filling.
    """

    def __init__(self, mode: str = "ram", directory: str | Path | None = None,
                 threads: int | None = None) -> None:
        if mode not in CACHE_MODES:
            raise ConfigError(f"data.cache={mode!r}: expected one of {CACHE_MODES} or None")
        self.mode = mode
        self.directory = Path(directory) if directory is not None else default_dir()
        self.threads = int(threads or min(8, os.cpu_count() or 1))
        self._ram: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        self._files: dict[int, Path] = {}
        self.hits = 0
        self.misses = 0
        self._key: tuple[Any, ...] | None = None  # resize settings the cache was filled with

    def __len__(self) -> int:
        return len(self._ram) if self.mode == "ram" else len(self._files)

    def _disk_name(self, dataset: Any, index: int) -> Path:
        ann = dataset.annotations(index)
        path = Path(ann.path)
        if not path.is_file():
            raise ConfigError(
                f"data.cache='disk' caches image files, but {type(dataset).__name__} image "
                f"{ann.image_id!r} has no file ({ann.path!r}); use data.cache='ram'")
        st = path.stat()
        g = dataset.geometry
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{g.img_size}|{g.resize}|" \
              f"{g.scale_up}|v1"
        return self.directory / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"

    def check_room(self, dataset: Any, name: str) -> int:
        """Log the estimate (:func:`~detlab.data.cache.estimate_bytes`); refuse it beyond the
        free room."""
        need = estimate_bytes(dataset)
        if self.mode == "ram":
            room, where = available_ram(), "available memory"
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            room, where = shutil.disk_usage(self.directory).free, f"free disk in {self.directory}"
        log.info("%s: data.cache=%r needs about %s for %d images (%s: %s)", name, self.mode,
                 _gib(need), len(dataset), where, _gib(room))
        if need > room:
            raise ConfigError(
                f"{name}: data.cache={self.mode!r} needs about {_gib(need)} for {len(dataset)} "
                f"images but the {where} is {_gib(room)}; set data.cache="
                + ("'disk' or None" if self.mode == "ram" else "None or another dir"))
        if need > room / 2:
            log.warning("%s: data.cache=%r takes %s, more than half of the %s (%s)", name,
                        self.mode, _gib(need), where, _gib(room))
        return need

    def _load(self, dataset: Any, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        image, _ = dataset.load_raw(index)
        orig = (int(image.shape[0]), int(image.shape[1]))
        resized, _, _ = dataset.geometry.resize_image(image)
        return np.ascontiguousarray(resized), orig

    def _fill_one(self, dataset: Any, index: int) -> None:
        if self.mode == "ram":
            self._ram[index] = self._load(dataset, index)
            return
        name = self._disk_name(dataset, index)
        if not name.is_file():
            image, orig = self._load(dataset, index)
            tmp = name.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, image=image, orig=np.asarray(orig, np.int64))
            os.replace(tmp, name)  # atomic: a concurrent reader sees all or nothing
        self._files[index] = name

    @staticmethod
    def resize_key(dataset: Any) -> tuple[Any, ...]:
        """The settings a cached image depends on: the geometry's resize (not its padding)."""
        g = dataset.geometry
        return (len(dataset), g.img_size, g.resize, g.scale_up)

    def fill(self, dataset: Any, name: str = "dataset") -> None:
        """Check the room, then decode every image of ``dataset`` into the cache."""
        self.check_room(dataset, name)
        self._ram.clear()
        self._files.clear()
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda i: self._fill_one(dataset, i), range(len(dataset))))
        self._key = self.resize_key(dataset)
        log.info("%s: %d images cached (%s)", name, len(self), self.mode)

    def ensure(self, dataset: Any, name: str = "dataset") -> None:
        """``fill`` unless the cache already holds ``dataset`` at its current geometry."""
        if self._key != self.resize_key(dataset):
            self.fill(dataset, name)

    def get(self, dataset: Any, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """``(resized image, original (h, w))`` of ``index``: a private copy (augmentations may
        write into it), decoded now when it was not cached."""
        if self._key != self.resize_key(dataset):  # geometry changed since the fill
            self.misses += 1
            return self._load(dataset, index)
        if self.mode == "ram" and index in self._ram:
            self.hits += 1
            image, orig = self._ram[index]
            return image.copy(), orig
        if self.mode == "disk" and index in self._files:
            self.hits += 1
            with np.load(self._files[index]) as z:
                return z["image"], (int(z["orig"][0]), int(z["orig"][1]))
        self.misses += 1
        return self._load(dataset, index)


def build_cache(cfg: Any) -> ImageCache | None:
    """``data.cache`` → :class:`~detlab.data.cache.ImageCache` (``None``: no cache)."""
    if cfg is None or cfg is False:
        return None
    if isinstance(cfg, str):
        return ImageCache(cfg)
    if isinstance(cfg, Mapping):
        unknown = set(cfg) - {"mode", "dir", "threads"}
        if unknown:
            raise ConfigError(f"data.cache: unknown key(s) {sorted(unknown)}; expected mode, "
                              "dir, threads")
        return ImageCache(cfg.get("mode", "ram"), cfg.get("dir"), cfg.get("threads"))
    raise ConfigError(f"data.cache={cfg!r}: expected 'ram', 'disk', None or "
                      "dict(mode='disk', dir=...)")
