"""The inference loops ``detlab eval``, ``detlab predict`` and the Python API
(:class:`detlab.Detector`) share: one loop, one stage (``"test"``), one preprocessing.

* :func:`predictions` runs a loader through the model (sliced when the recipe sets
  ``inference.slicing``, :mod:`detlab.engine.sliced`) and yields ``(predictions, batch)``,
  predictions in original image pixels;
* :func:`evaluate` feeds those to the recipe's evaluator (``detlab eval``);
* :func:`file_loader` and :func:`array_loader` make the loaders for image files (``detlab
  predict``) and for in-memory images (the API): both preprocess with data.val's
  ``input_spec()`` (:mod:`detlab.data.predict_spec`: channels, mean/std,
  :class:`~detlab.data.geometry.InputGeometry`, pixel type), so an array gives the tensor its
  file gives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.datamodule import DataModule
from ..data.datasets.image_files import ImageFiles, _per_channel
from ..data.geometry import InputGeometry
from ..data.predict_spec import val_input_spec
from ..errors import ConfigError
from ..structures import Batch, Prediction

__all__ = ["default_device", "data_module", "is_box_head", "predictions", "evaluate", "file_loader",
           "array_loader", "ArrayImages"]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None``: CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def data_module(task: Any) -> DataModule:
    """The :class:`~detlab.data.datamodule.DataModule` of the task's recipe (no files read)."""
    return DataModule(task.recipe.section("data"), size_divisor=task.model.size_divisor)


def is_box_head(task: Any) -> bool:
    """Whether the task's head predicts boxes (YOLO, Faster R-CNN and their subclasses)."""
    from ..models.heads.faster_rcnn import FasterRCNNHead
    from ..models.heads.yolo import YOLOHead

    return isinstance(task.model.head, (YOLOHead, FasterRCNNHead))


def predictions(task: Any, loader: Any, device: Any, limit: int | None = None,
                data: Any = None) -> Iterator[tuple[list[Prediction], Batch]]:
    """``(predictions, batch)`` per batch of ``loader``: the one inference loop of ``eval``,
    ``predict`` and the API (stage ``"test"``, predictions in original pixels); sliced when the
    recipe sets ``inference.slicing``, with test-time augmentation when it sets
    ``inference.tta`` (:mod:`detlab.engine.ensemble`). Callers hold
    ``torch.inference_mode()``; ``limit`` stops after that many batches."""
    from ..postprocess.slicing import SlicedInference, inference_section
    from .inference_model import inference_task

    task = inference_task(task)  # BatchNorm folded, channels-last: recipe inference.fuse_bn
    settings = SlicedInference.from_recipe(task.recipe)
    if inference_section(task.recipe).get("tta"):  # the recipe's inference.tta
        from .ensemble import ensemble_predictions, ensemble_settings

        merge, tta = ensemble_settings(task.recipe)
        name = str(getattr(task.recipe, "path", None) or task.recipe.name)
        yield from ensemble_predictions([task], [loader], device, [name], merge, tta, limit)
        return
    if settings is not None:
        from .sliced import sliced_predictions

        yield from sliced_predictions(task, data, loader, settings, device, limit)
        return
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        batch = batch.to(device)
        yield task.model.predict(batch, stage="test"), batch


def evaluate(task: Any, split: str = "val", limit: int | None = None,
             device: str | torch.device | None = None) -> dict[str, float]:
    """The recipe evaluator's metrics of ``task`` on ``split`` (``"val"`` or ``"test"``).

    Box post-processing stops at the detections the evaluator reads
    (:func:`~detlab.postprocess.evaluated.evaluated_only`; not for sliced or TTA inference):
    the metrics are those of the full detection lists, but ``task.evaluator`` keeps only what
    :meth:`~detlab.evaluation.base.Evaluator.compute` reads.

    Raises:
        ConfigError: the recipe has no ``evaluator`` section.
    """
    data = data_module(task)
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    if task.evaluator is None:
        raise ConfigError("the checkpoint's recipe has no 'evaluator' section")
    from ..postprocess.evaluated import evaluated_only
    from ..postprocess.slicing import SlicedInference, inference_section
    from .inference_model import inference_task

    dev = default_device(device)
    task.to(dev)
    task.evaluator.reset()
    view = inference_task(task)  # the head predictions() runs
    # Only the metrics leave this function: NMS may stop at the detections the evaluator
    # reads. Not for sliced or TTA runs, whose merges see every tile's detections.
    plain = SlicedInference.from_recipe(task.recipe) is None and not inference_section(
        task.recipe).get("tta")
    with torch.inference_mode(), evaluated_only(view.model.head,
                                                [task.evaluator] if plain else []):
        for preds, batch in predictions(view, loader, dev, limit, data):
            task.evaluator.update(preds, batch)
    return task.evaluator.compute()


def file_loader(data: DataModule, paths: Sequence[str]) -> DataLoader:
    """Loader over image files and folders with data.val's preprocessing (or a consistent
    ``data.predict``), batch size 1: what ``detlab predict`` runs on."""
    return data.predict_loader(list(paths))


class ArrayImages(ImageFiles):
    """In-memory images preprocessed exactly like :class:`ImageFiles` preprocesses files.

    Args:
        images: pixels as :meth:`ImageFiles._read` returns them for the spec's ``pixels``
            (``"uint8"``: ``(H, W, C)`` uint8; ``"float"``: ``(H, W, C)`` float32 in [0, 1]),
            ``C`` = the spec's ``channels``.
        names: an ``image_id`` per image.
        spec: data.val's ``input_spec()`` (channels, mean, std, geometry, pixels).
    """

    def __init__(self, images: Sequence[np.ndarray], names: Sequence[str],
                 spec: dict[str, Any]) -> None:
        # ImageFiles.__init__ insists on files; the settings are the same ones it sets.
        self.channels = int(spec.get("channels", 3))
        self.pixels = str(spec.get("pixels", "float"))
        self.geometry = InputGeometry.from_config(spec.get("geometry"))
        self.img_size = self.geometry.img_size
        self.mean = _per_channel(spec.get("mean", (0.0,)), self.channels, "mean")
        self.std = _per_channel(spec.get("std", (1.0,)), self.channels, "std")
        self.files = list(names)  # keys of _read (the sliced loop reads `_read(files[i])`)
        self.names = list(names)
        self._arrays = dict(zip(self.names, images))

    def _read(self, path: Any) -> np.ndarray:
        return self._arrays[str(path)]


def _to_pixels(image: np.ndarray, channels: int, pixels: str) -> np.ndarray:
    """``(H, W, C')`` uint8 or [0, 1] float → what ``ImageFiles._read`` gives for a file:
    ``channels`` channels (RGB → grey with PIL's ``L`` weights, as reading the file does),
    uint8 for ``pixels="uint8"``, float32 in [0, 1] for ``"float"``."""
    from PIL import Image

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:
        image = image[..., :3]  # alpha dropped, as reading an RGBA file does
    if image.shape[-1] not in (1, 3):
        raise ConfigError(f"image with {image.shape[-1]} channels: expected 1, 3 or 4")
    if image.shape[-1] == 3 and channels == 1:
        if image.dtype == np.uint8:
            image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
        else:
            weights = np.array([0.299, 0.587, 0.114], np.float32)
            image = (image.astype(np.float32) @ weights)[..., None]
    elif image.shape[-1] == 1 and channels == 3:
        image = np.repeat(image, 3, axis=-1)
    if pixels == "uint8":
        if image.dtype != np.uint8:
            image = np.rint(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        return np.ascontiguousarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def array_loader(data: DataModule, images: Sequence[np.ndarray],
                 names: Sequence[str]) -> DataLoader:
    """Loader over in-memory images (``(H, W, C)`` uint8, or float in [0, 1]) preprocessed as
    :func:`file_loader` preprocesses files, batch size 1.

    Raises:
        ConfigError: data.val does not describe its preprocessing (no ``input_spec()``).
    """
    spec = val_input_spec(data.cfg, lambda: data.dataset("val"))
    channels, pixels = int(spec.get("channels", 3)), str(spec.get("pixels", "float"))
    dataset = ArrayImages([_to_pixels(a, channels, pixels) for a in images], names, spec)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0,
                      collate_fn=data.collate)
