"""Sliced inference inside the one inference loop of ``detlab eval``, ``predict`` and ``sweep``.

With ``inference.slicing`` set (:class:`~detlab.postprocess.slicing.SlicedInference`), every
frame of the loader is cut into overlapping tiles of the ORIGINAL image
(:func:`detlab.ops.slicing.tile_grid`). Each tile is preprocessed exactly like a whole val
image (the val dataset's ``input_spec()``: resize, pad, normalization,
:func:`~detlab.data.datasets.image_files.preprocess_pixels`), so sliced ``eval`` and sliced
``predict`` see the same tensors. Tiles of all frames of a batch go through the network
``batch_size`` at a time; the head's usual post-processing maps each tile's predictions to
tile pixels (:mod:`detlab.ops.coords`), which are shifted to the frame and then

* box heads: merged (NMS / NMM / greedy NMM, :func:`~detlab.postprocess.slicing.merge_detections`)
  with the whole-frame predictions when ``full_image``;
* segmentation (``probs``) and DB text (``prob_map``): blended probability maps (weighted
  mean over overlapping tiles), then the head's threshold / polygon extraction on the frame
  (a DB map is then in original pixels: ``extras["map_pixels"] == "original"``).

The frame's ground truth and meta are the dataset's own, so evaluators are unchanged. Sliced
predictions carry no other head extras (the U-Net's attention maps are per tile, not per
frame). Validation during ``detlab train`` runs this same path when the recipe sets
``inference.slicing.during_training=True`` (:meth:`detlab.engine.task.DetlabTask.validation_step`
on the :class:`SlicedBatch` es of :func:`sliced_loader`, :func:`sliced_step`), so its ``val/*``
metrics are the ones ``detlab eval`` reports for the same checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.collate import collate
from ..data.datasets.image_files import _per_channel, preprocess_pixels
from ..data.geometry import InputGeometry
from ..data.predict_spec import input_spec_of
from ..errors import ConfigError
from ..ops.coords import maps_to_original
from ..ops.slicing import blend_weights, shift_boxes, tile_grid
from ..postprocess.slicing import SlicedInference
from ..structures import Batch, Prediction, to_device

__all__ = ["SlicedDataset", "SlicedCollate", "SlicedBatch", "TileOutputs", "sliced_loader",
           "run_tiles", "tile_predictions", "combine", "sliced_step", "sliced_predictions"]


class SlicedDataset(Dataset):
    """Item ``i``: the wrapped dataset's sample ``i`` (targets, meta, whole-frame input) plus
    its tiles: ``tiles`` (list of ``(C, h, w)`` inputs), ``tile_meta`` (their geometry meta,
    tile pixels) and ``windows`` (``(T, 4)`` int64 x1, y1, x2, y2 in frame pixels)."""

    def __init__(self, dataset: Any, settings: SlicedInference) -> None:
        self.dataset, self.settings = dataset, settings
        spec = input_spec_of(dataset)
        name = type(dataset).__name__
        if spec is None:
            raise ConfigError(f"inference.slicing: {name} does not describe its preprocessing "
                              "(no input_spec()), so its tiles cannot be preprocessed like its "
                              "images; remove inference.slicing")
        self.geometry = InputGeometry.from_config(spec.get("geometry"))
        self.pixels = spec.get("pixels", "float")
        channels = int(spec.get("channels", 3))
        self.mean = _per_channel(spec["mean"], channels, "mean")
        self.std = _per_channel(spec["std"], channels, "std")
        # No resize, no padding: the input IS the (normalized) frame, tiles are crops of it.
        self.crop_input = self.geometry.img_size is None and self.geometry.pad == "none"
        if not self.crop_input and not any(
            all(callable(getattr(dataset, m, None)) for m in methods)
            for methods in (("load_raw", "make_sample"), ("load", "prepare"),
                            ("_read", "sample_from"))
        ):
            raise ConfigError(f"inference.slicing: {name} resizes or pads its images but cannot "
                              "give the original pixels to cut tiles from (no load_raw / load "
                              "/ sample_from); remove inference.slicing")

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[np.ndarray | None, dict[str, Any]]:
        """``(original pixels or None when tiles are crops of the input, sample)``."""
        ds = self.dataset
        if self.crop_input:
            return None, ds[index]
        if callable(getattr(ds, "load_raw", None)):  # box datasets: decode once
            image, ann = ds.load_raw(index)
            return image, ds.make_sample(image, ann)
        if callable(getattr(ds, "prepare", None)):  # text datasets
            raw = ds.load(index)
            return raw.image, ds.prepare(raw)
        pixels = ds._read(ds.files[index])  # ImageFiles (predict on files): decode once
        return pixels, ds.sample_from(index, pixels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels, sample = self._load(index)
        if pixels is None:
            frame = sample["image"]
            height, width = (int(v) for v in frame.shape[-2:])
        else:
            height, width = (int(v) for v in pixels.shape[:2])
        th, tw = self.settings.tile_size
        ov = float(self.settings.overlap)
        windows = tile_grid(height, width, th, tw, ov, ov)
        tiles, metas = [], []
        for x1, y1, x2, y2 in windows.tolist():
            if pixels is None:
                tiles.append(frame[:, y1:y2, x1:x2].contiguous())
                size = (y2 - y1, x2 - x1)
                metas.append({"orig_size": size, "scale": (1.0, 1.0), "input_size": size,
                              "pad": (0, 0)})
            else:
                crop = np.ascontiguousarray(pixels[y1:y2, x1:x2])
                tile, meta = preprocess_pixels(crop, self.geometry, self.pixels, self.mean,
                                               self.std)
                tiles.append(tile)
                metas.append(meta)
        return {"sample": sample, "tiles": tiles, "tile_meta": metas, "windows": windows}


@dataclass
class SlicedBatch:
    """A batch of frames (the usual :class:`Batch`) and all their tiles, flattened:
    ``tiles[k]`` belongs to frame ``owners[k]`` at ``windows[k]`` (frame px)."""

    batch: Batch
    tiles: list[Tensor] = field(default_factory=list)
    tile_meta: list[dict[str, Any]] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    windows: list[tuple[int, int, int, int]] = field(default_factory=list)

    # The frame batch's fields: Lightning's validation callbacks (overlays, diagnostics) read
    # ``batch.images / targets / meta`` of the batch they are handed, sliced or not.
    @property
    def images(self) -> Tensor:
        """The frames' ``(B, C, H, W)`` input (the unsliced val input)."""
        return self.batch.images

    @property
    def targets(self) -> list[dict[str, Any]]:
        """The frames' targets (original pixels)."""
        return self.batch.targets

    @property
    def meta(self) -> list[dict[str, Any]]:
        """The frames' meta."""
        return self.batch.meta

    def __len__(self) -> int:
        return len(self.batch)

    def to(self, device: Any) -> SlicedBatch:
        """A copy with the frame batch on ``device`` (tiles move per forward in
        :func:`run_tiles`): what Lightning calls to move a validation batch."""
        return SlicedBatch(self.batch.to(device), self.tiles, self.tile_meta, self.owners,
                           self.windows)


class SlicedCollate:
    """Collate :class:`SlicedDataset` items into a :class:`SlicedBatch` (picklable)."""

    def __init__(self, size_divisor: int = 32) -> None:
        self.size_divisor = size_divisor

    def __call__(self, items: list[dict[str, Any]]) -> SlicedBatch:
        out = SlicedBatch(collate([it["sample"] for it in items], self.size_divisor))
        for i, it in enumerate(items):
            out.tiles.extend(it["tiles"])
            out.tile_meta.extend(it["tile_meta"])
            out.owners.extend([i] * len(it["tiles"]))
            out.windows.extend(tuple(int(v) for v in w) for w in it["windows"])
        return out


def sliced_loader(data: Any, loader: DataLoader, settings: SlicedInference) -> DataLoader:
    """``loader``'s dataset wrapped in :class:`SlicedDataset`, same batch size and workers."""
    return DataLoader(SlicedDataset(loader.dataset, settings), batch_size=loader.batch_size,
                      shuffle=False, num_workers=loader.num_workers,
                      collate_fn=SlicedCollate(data.size_divisor))


@dataclass
class TileOutputs:
    """Raw network outputs of one :class:`SlicedBatch` (on the CPU when cached by ``sweep``):
    ``chunks`` of ``(outputs, tile Batch, owners, windows)`` and the whole-frame outputs."""

    batch: Batch
    chunks: list[tuple[Any, Batch, list[int], list[tuple[int, int, int, int]]]]
    full: Any = None


def run_tiles(model: Any, sliced: SlicedBatch, settings: SlicedInference, device: Any,
              full_image: bool | None = None,
              view: Callable[[Batch], Batch] | None = None) -> TileOutputs:
    """Forward the tiles ``settings.batch_size`` at a time (and the frames when
    ``full_image``, default ``settings.full_image``). ``view`` (a TTA view,
    :func:`detlab.engine.ensemble.view_batch`) transforms every tile batch and the frame batch
    before the forward; the outputs then hold the viewed batches (their meta maps the
    predictions to the viewed tiles' pixels)."""
    full_image = settings.full_image if full_image is None else full_image
    bs, chunks = settings.tiles_per_forward(device), []
    # Tiles of one shape per forward: no tile is padded to another's size, so a tile's outputs
    # do not depend on the batch it lands in (sliced eval == sliced predict, any batch size).
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, tile in enumerate(sliced.tiles):
        by_shape.setdefault(tuple(tile.shape), []).append(k)
    groups = [ks[s:s + bs] for ks in by_shape.values() for s in range(0, len(ks), bs)]
    for part in groups:
        tile_batch = collate([{"image": sliced.tiles[k], "meta": sliced.tile_meta[k]}
                              for k in part], int(getattr(model, "size_divisor", 32)))
        if view is not None:
            tile_batch = view(tile_batch)
        outputs = model(tile_batch.images.to(device))
        chunks.append((outputs, tile_batch, [sliced.owners[k] for k in part],
                       [sliced.windows[k] for k in part]))
    frames = sliced.batch if view is None else view(sliced.batch)
    full = model(frames.images.to(device)) if full_image else None
    return TileOutputs(frames, chunks, full)


def tile_predictions(head: Any, raw: TileOutputs) -> tuple[list[list[tuple[Prediction, Any]]],
                                                         list[Prediction] | None]:
    """Per frame, its tiles' ``(Prediction in tile pixels, window)``; and the whole-frame
    predictions (or None): the head's own post-processing, stage ``"test"``."""
    parts: list[list[tuple[Prediction, Any]]] = [[] for _ in raw.batch.meta]
    for outputs, tile_batch, owners, windows in raw.chunks:
        for pred, owner, window in zip(head.postprocess(outputs, tile_batch, stage="test"),
                                       owners, windows):
            parts[owner].append((pred.to("cpu"), window))
    full = None
    if raw.full is not None:
        full = [p.to("cpu") for p in head.postprocess(raw.full, raw.batch, stage="test")]
    return parts, full


def _blend(maps: list[tuple[Tensor, Any]], size: tuple[int, int], mode: str) -> Tensor:
    """Weighted mean of ``(C, h, w)`` tile maps placed at their windows on a ``size`` frame."""
    channels = maps[0][0].shape[0]
    total = torch.zeros(channels, *size)
    weight = torch.zeros(1, *size)
    for tile_map, (x1, y1, x2, y2) in maps:
        w = blend_weights(y2 - y1, x2 - x1, mode)[None]
        total[:, y1:y2, x1:x2] += w * tile_map.float()
        weight[:, y1:y2, x1:x2] += w
    return total / weight.clamp(min=1e-12)


def _resized(prob: Tensor, size: tuple[int, int]) -> Tensor:
    """A content-cropped ``(h, w)`` or ``(C, h, w)`` map → ``(C, *size)``
    (:func:`detlab.ops.coords.maps_to_original`: bilinear, pixel-edge convention)."""
    prob = prob.float()
    return maps_to_original(prob[None] if prob.ndim == 2 else prob, {"orig_size": size})


def combine(head: Any, parts: list[list[tuple[Prediction, Any]]],
            full: list[Prediction] | None, metas: list[dict[str, Any]],
            settings: SlicedInference) -> list[Prediction]:
    """One frame-level :class:`Prediction` per frame from its tiles (module docstring)."""
    out = []
    for i, (tiles, meta) in enumerate(zip(parts, metas)):
        whole = None if full is None or not settings.full_image else full[i]
        first = tiles[0][0]
        size = tuple(int(v) for v in meta["orig_size"])
        if first.boxes is not None:
            boxes = [shift_boxes(p.boxes, w) for p, w in tiles]
            scores = [p.scores for p, _ in tiles]
            labels = [p.labels for p, _ in tiles]
            if whole is not None:
                boxes.append(whole.boxes)
                scores.append(whole.scores)
                labels.append(whole.labels)
            merged = settings.merge_boxes(torch.cat(boxes), torch.cat(scores), torch.cat(labels))
            out.append(Prediction(boxes=merged[0], scores=merged[1], labels=merged[2]))
        elif first.probs is not None:  # segmentation: probabilities at tile size already
            probs = _blend([(p.probs, w) for p, w in tiles], size, settings.blend)
            if whole is not None:
                probs = (probs + _resized(whole.probs, size)) / 2
            out.append(Prediction(probs=probs, mask=_seg_mask(head, probs),
                                  extras=_seg_extras(head)))
        elif first.extras.get("prob_map") is not None:  # DB text: map at tile input size
            prob = _blend([(_resized(p.extras["prob_map"], (w[3] - w[1], w[2] - w[0])), w)
                           for p, w in tiles], size, settings.blend)
            if whole is not None:
                prob = (prob + _resized(whole.extras["prob_map"], size)) / 2
            polygons, scores = head.postprocessor(prob[0].numpy(), scale=(1.0, 1.0),
                                                  pad=(0.0, 0.0), orig_size=size)
            out.append(Prediction(polygons=list(polygons),
                                  scores=torch.as_tensor(np.asarray(scores, np.float32)),
                                  extras={"prob_map": prob[0], "map_pixels": "original"}))
        else:
            raise ConfigError(f"inference.slicing: {type(head).__name__} predicts neither "
                              "boxes, probabilities nor a text probability map; remove "
                              "inference.slicing")
    return out


def _seg_extras(head: Any) -> dict[str, Any]:
    """``extras["threshold"]`` (the evaluator's Dice / IoU threshold), as unsliced."""
    threshold = getattr(head, "threshold", None)
    return {} if threshold is None else {"threshold": float(threshold)}


def _seg_mask(head: Any, probs: Tensor) -> Tensor:
    """The segmentation head's own decision on blended probabilities: its test
    post-processor (threshold ``>=``, or argmax), as unsliced and ensemble predictions."""
    post = getattr(getattr(head, "postprocessor", None), "for_stage", None)
    if post is not None:
        return post("test")(probs, activation=getattr(head, "activation", "sigmoid"))
    if getattr(head, "activation", "sigmoid") == "sigmoid":
        return probs >= float(getattr(head, "threshold", 0.5))
    return F.one_hot(probs.argmax(0), probs.shape[0]).permute(2, 0, 1).bool()


def sliced_predictions(task: Any, data: Any, loader: DataLoader, settings: SlicedInference,
                       device: Any, limit: int | None = None
                       ) -> Iterator[tuple[list[Prediction], Batch]]:
    """``(frame predictions, frame Batch)`` per batch of ``loader``, sliced: the sliced branch
    of the shared loop of ``eval`` and ``predict`` (callers hold ``torch.inference_mode()``)."""
    for i, sliced in enumerate(sliced_loader(data, loader, settings)):
        if limit is not None and i >= limit:
            break
        yield sliced_step(task.model, sliced, settings, device)


def sliced_step(model: Any, sliced: SlicedBatch, settings: SlicedInference, device: Any
                ) -> tuple[list[Prediction], Batch]:
    """One :class:`SlicedBatch` → ``(frame predictions, frame Batch with CPU targets)``: what
    ``eval`` / ``predict`` and sliced validation during training run per batch."""
    raw = run_tiles(model, sliced, settings, device)
    parts, full = tile_predictions(model.head, raw)
    preds = combine(model.head, parts, full, sliced.batch.meta, settings)
    return preds, Batch(sliced.batch.images, to_device(sliced.batch.targets, "cpu"),
                        sliced.batch.meta)
