"""The Python API: predict from a checkpoint in one line, train a recipe in one call.

::

    from detlab import Detector
    model = Detector.from_checkpoint("runs/x/version_0/checkpoints/best.ckpt")
    preds = model("image.png")            # or a folder, a numpy/torch image, PIL, or a list
    preds[0].boxes, preds[0].plot()       # original pixels; plot() is the predict overlay

``Detector`` serves all four families: boxes (YOLO, Faster R-CNN), masks (Attention U-Net)
and text polygons (DB) come back in the same :class:`ImagePrediction`. Inputs go through the
loop ``detlab predict`` runs (:mod:`detlab.engine.inference`) with the preprocessing of the
checkpoint's data.val (geometry, normalization), so a file gives the same predictions here and
on the command line. Checkpoints load under the trust rules of :mod:`detlab.engine.checkpoint`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, DataError
from .structures import Prediction

__all__ = ["Detector", "ImagePrediction", "TrainResult", "train"]


@dataclass
class ImagePrediction(Prediction):
    """A :class:`~detlab.structures.Prediction` (original image pixels) that knows its image.

    Attributes:
        image_id: the file name (relative to a folder given) or ``image<i>`` for arrays.
        source: the file path, or the image as ``(H, W, 3)`` uint8 RGB for in-memory input.
        orig_size: ``(h, w)`` of the original image in pixels.
        class_names: the recipe's ``evaluator.class_names`` (``None``: labels are numbers).
    """

    image_id: str = ""
    source: Any = None
    orig_size: tuple[int, int] = (0, 0)
    class_names: list[str] | None = None

    def image(self) -> Image.Image:
        """The original image as an RGB PIL image (a copy: drawing on it changes nothing)."""
        from .engine.outputs import load_display_image

        if isinstance(self.source, np.ndarray):
            return Image.fromarray(self.source)
        return load_display_image(self.source or "", self.orig_size)

    def plot(self, score_threshold: float = 0.25) -> Image.Image:
        """This prediction drawn on its image: the overlay ``detlab predict`` writes (masks in
        class colours, boxes scoring at least ``score_threshold`` with name and score,
        polygons outlined)."""
        from .engine.outputs import render_prediction

        return render_prediction(self.image(), self, self.class_names, score_threshold)


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` uint8 or [0, 1] float → ``(H, W, 3)`` uint8 RGB, for display."""
    arr = image if image.ndim == 3 else image[..., None]
    if arr.dtype != np.uint8:
        arr = np.rint(np.clip(arr.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def _hwc(image: Any, index: int) -> np.ndarray:
    """One in-memory image → ``(H, W, C)`` numpy (uint8, or float in [0, 1]).

    numpy: ``(H, W)``/``(H, W, C)`` (as PIL and OpenCV give; uint8), or ``(C, H, W)`` float
    (C = 1 or 3, as a network input before normalization); torch tensors are ``(C, H, W)``
    (torchvision's convention), uint8 or float in [0, 1]; PIL images in any mode.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I", "F"):
            arr = np.asarray(image, dtype=np.float32)
            return (arr / 65535.0 if image.mode != "F" else arr)[..., None]
        return np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        arr = t.numpy()
    else:
        arr = np.asarray(image)
        if (arr.ndim == 3 and arr.dtype != np.uint8 and arr.shape[0] in (1, 3)
                and arr.shape[-1] not in (1, 3, 4)):
            arr = arr.transpose(1, 2, 0)  # CHW float
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise DataError(f"image {index}: shape {tuple(np.shape(image))} is not an image "
                        "(numpy: (H, W) or (H, W, C); torch: (C, H, W); C = 1, 3 or 4)")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"image {index}: dtype {arr.dtype} is not uint8 or float")
    arr = arr.astype(np.float32)
    if arr.size and (float(arr.min()) < 0 or float(arr.max()) > 1):
        raise DataError(f"image {index}: float pixels must be in [0, 1] (got "
                        f"{float(arr.min()):.4g}..{float(arr.max()):.4g}); pass uint8 for "
                        "0-255 values")
    return arr


def _flatten(images: Any) -> list[Any]:
    """A single input or a (nested) list of them, batches split into images."""
    if isinstance(images, (list, tuple)):
        return [x for item in images for x in _flatten(item)]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


class Detector:
    """A trained detlab model for notebooks and scripts: boxes, masks or text polygons.

    Build it with :meth:`from_checkpoint`; call it on images. The name covers all four
    families (it also segments and finds text).

    Args:
        task: a :class:`~detlab.engine.task.DetlabTask` with weights loaded (what
            :func:`~detlab.engine.checkpoint.load_task` returns).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …; ``None``: CUDA when available.
        settings: default post-processing settings for every call (see :meth:`__call__`).
    """

    def __init__(self, task: Any, device: str | torch.device | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        from .engine.inference import data_module, default_device

        self.task = task
        self.device = default_device(device)
        self.settings = dict(settings or {})
        self._variants: dict[tuple[tuple[str, str], ...], Any] = {}
        self._data = data_module(task)
        #: ``(tasks, names, EnsembleSettings, TTASettings | None)`` of an ensemble made by
        #: :meth:`from_checkpoints`, else ``None``.
        self.ensemble: tuple[Any, ...] | None = None
        task.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None, *,
                        trust_recipe: bool = False, recipe: str | Path | None = None,
                        overrides: Sequence[str] | None = None, **settings: Any) -> Detector:
        """Load a ``.ckpt`` written by ``detlab train``.

        Args:
            path: the checkpoint.
            device: where the model runs (``None``: CUDA when available, else CPU).
            trust_recipe: also run code the checkpoint's recipe names (dotted types, recipe
                files); as ``--trust-recipe`` (:mod:`detlab.engine.checkpoint`).
            recipe: your own recipe file to build the model from (``--recipe``).
            overrides: dotted ``key=value`` recipe overrides, as on the command line.
            settings: post-processing settings, e.g. ``score_threshold=0.5`` (see
                :meth:`__call__`), applied to every call.

        Raises:
            CheckpointError: not a detlab checkpoint, or one that would run code untrusted.
        """
        from .engine.checkpoint import load_task

        task = load_task(path, list(overrides or []), trust=trust_recipe, recipe=recipe)
        return cls(task, device=device, settings=settings)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], weights: Sequence[float] | None = None,
                         device: str | torch.device | None = None, *, method: str | None = None,
                         tta: Any = None, trust_recipe: bool = False,
                         overrides: Sequence[str] | None = None) -> Detector:
        """An ensemble of ``.ckpt`` files of one task (:mod:`detlab.engine.ensemble`), as
        ``detlab predict A.ckpt B.ckpt ...``; one checkpoint with ``tta`` is plain TTA.

        Args:
            paths: the checkpoints; the first one's recipe gives the post-processing,
                evaluator and ``inference.ensemble`` / ``inference.tta`` settings.
            weights: one per checkpoint (default 1 each).
            device: where the models run.
            method: box heads: ``"wbf"`` (default), ``"nms"`` or ``"soft_nms"``.
            tta: ``True`` (flips none, h), or ``dict(flips=..., scales=...)``.
            trust_recipe: as in :meth:`from_checkpoint`.
            overrides: dotted ``key=value`` overrides applied to every checkpoint's recipe.

        Raises:
            ConfigError: checkpoints of different tasks (naming both), weights that do not fit.
        """
        from .engine.checkpoint import load_task
        from .engine.ensemble import check_compatible, resolve_settings

        names = [str(p) for p in paths]
        if not names:
            raise ConfigError("Detector.from_checkpoints: give at least one checkpoint")
        tasks = [load_task(p, list(overrides or []), trust=trust_recipe) for p in names]
        check_compatible(tasks, names)
        detector = cls(tasks[0], device=device)
        detector.ensemble = (tasks, names, *resolve_settings(
            tasks[0].recipe, weights=weights, method=method, tta=tta))
        detector.ensemble[2].member_weights(len(tasks), names)  # fail now, not on first call
        for task in tasks[1:]:
            task.to(detector.device).eval()
        return detector

    # -- properties ---------------------------------------------------------------------------
    @property
    def recipe(self) -> Any:
        """The resolved recipe the model was built from (a :class:`~detlab.recipe.Recipe`)."""
        return self.task.recipe

    @property
    def class_names(self) -> list[str] | None:
        """``evaluator.class_names`` of the recipe, or ``None``."""
        names = (self.task.recipe.get("evaluator") or {}).get("class_names")
        return list(names) if names else None

    # -- settings -----------------------------------------------------------------------------
    def setting_key(self, name: str) -> str:
        """The recipe key a post-processing setting ``name`` changes: in the head's
        ``postprocessor`` slot (postprocess/staged.py), its ``test`` section when it has one
        (predictions run the test stage; without one the common settings are the test ones)."""
        slot = (self.task.recipe["model"].get("head") or {}).get("postprocessor")
        staged = isinstance(slot, Mapping) and isinstance(slot.get("test"), Mapping)
        return f"model.head.postprocessor.{'test.' if staged else ''}{name}"

    def _task_for(self, settings: Mapping[str, Any]) -> Any:
        """The task with ``settings`` applied: a copy of the model built from the recipe with
        those overrides, holding the same weights (built once per distinct settings)."""
        if not settings:
            return self.task
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        if key not in self._variants:
            from .engine.task import DetlabTask
            from .recipe import apply_overrides

            recipe = copy.deepcopy(self.task.recipe)
            head = recipe["model"]["head"]
            if not isinstance(head.get("postprocessor"), Mapping):
                # the head's default post-processor: overrides of one setting keep the others
                built = self.task.model.head.postprocessor.for_stage("test")
                head["postprocessor"] = {"type": type(built).__name__}
            slot = head["postprocessor"]
            section = slot["test"] if isinstance(slot.get("test"), Mapping) else slot
            # "+": a setting the recipe leaves at the post-processor's default is a new key
            texts = [f"{'' if k in section else '+'}{self.setting_key(k)}={v}" for k, v in key]
            apply_overrides(recipe, texts)
            recipe.overrides = list(recipe.overrides) + texts
            variant = DetlabTask(recipe)
            variant.load_state_dict(self.task.state_dict())
            self._variants[key] = variant.to(self.device).eval()
        return self._variants[key]

    # -- prediction ---------------------------------------------------------------------------
    def __call__(self, images: Any, **settings: Any) -> list[ImagePrediction]:
        """Predict on one image or many; one :class:`ImagePrediction` per image, in order.

        Args:
            images: an image file or a folder of them (``str`` / ``Path``), a PIL image, a
                numpy array (``(H, W[, C])`` uint8 as PIL/OpenCV give, or ``(C, H, W)``
                float in [0, 1]), a torch tensor (``(C, H, W)`` or ``(B, C, H, W)``, uint8 or
                float in [0, 1]), or a list of these. Channels are converted to what the
                model takes (RGB → grey as reading a file does).
            settings: post-processing settings for this call (``score_threshold=0.5``,
                ``iou_threshold=0.6``, ``threshold=0.3`` for the U-Net …), on top of the
                ones given to :meth:`from_checkpoint`; :meth:`setting_key` says where each
                goes in the recipe.

        Returns:
            Predictions in original image pixels (boxes xyxy, polygons, masks).

        Raises:
            DataError: an unreadable file, a missing path, or an array that is not an image.
            ConfigError: a CT volume (use ``detlab predict``, which writes NIfTI), or a
                setting the head does not have.
        """
        from .engine.inference import array_loader, file_loader, predictions

        task = self._task_for({**self.settings, **settings})
        out: list[ImagePrediction] = []
        items = _flatten(images)
        runs = [(loader, sources, None) for loader, sources in
                self._loaders(items, array_loader, file_loader)]
        if self.ensemble is not None:
            from .engine.ensemble import ensemble_predictions
            from .engine.inference import data_module

            if settings or self.settings:
                raise ConfigError("Detector: an ensemble takes its settings as overrides of "
                                  "from_checkpoints(...), not per call")
            tasks, names, merge, tta = self.ensemble
            others = [list(self._loaders(items, array_loader, file_loader, data_module(t)))
                      for t in tasks[1:]]
            runs = [(loader, sources, [loader, *(o[i][0] for o in others)])
                    for i, (loader, sources, _) in enumerate(runs)]
        for loader, sources, members in runs:
            if members is None:
                stream = predictions(task, loader, self.device, data=self._data)
            else:
                stream = ensemble_predictions(tasks, members, self.device, names, merge, tta)
            with torch.inference_mode():
                for preds, batch in stream:
                    for pred, meta in zip(preds, batch.meta):
                        source = sources.get(str(meta.get("image_id")), meta.get("path"))
                        out.append(self._wrap(pred, meta, source))
        return out

    def _loaders(self, items: list[Any], array_loader: Any, file_loader: Any, data: Any = None
                 ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """A loader per run of consecutive paths / in-memory images (input order kept), with
        the display source of each in-memory image by its ``image_id``; ``data``: whose
        preprocessing (default this detector's model's)."""
        data = self._data if data is None else data
        from .commands.predict_volume import check_not_dicom_file, is_volume_path

        run: list[Any] = []
        kind = None
        offset = 0
        for item in [*items, None]:
            this = None if item is None else (
                "path" if isinstance(item, (str, Path)) else "array")
            if run and this != kind:
                if kind == "path":
                    yield file_loader(data, [str(p) for p in run]), {}
                else:
                    arrays = [_hwc(a, offset + i) for i, a in enumerate(run)]
                    names = [f"image{offset + i}" for i in range(len(run))]
                    yield (array_loader(data, arrays, names),
                           {n: _rgb_uint8(a) for n, a in zip(names, arrays)})
                offset += len(run)
                run = []
            if item is None:
                break
            if this == "path":
                check_not_dicom_file(str(item))
                if is_volume_path(str(item)):
                    raise ConfigError(f"Detector: {item} is a CT volume; predict volumes with "
                                      "`detlab predict CKPT VOLUME --out DIR` (writes NIfTI)")
            kind = this
            run.append(item)

    def _wrap(self, pred: Prediction, meta: Mapping[str, Any], source: Any) -> ImagePrediction:
        values = {name: getattr(pred, name) for name in (
            "boxes", "scores", "labels", "polygons", "probs", "mask")}
        values = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                  for k, v in values.items()}
        extras = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                  for k, v in pred.extras.items()}
        return ImagePrediction(**values, extras=extras, image_id=str(meta.get("image_id", "")),
                               source=source, class_names=self.class_names,
                               orig_size=tuple(int(v) for v in meta.get("orig_size", (0, 0))))

    @staticmethod
    def plot(prediction: ImagePrediction, score_threshold: float = 0.25) -> Image.Image:
        """``prediction.plot(score_threshold)``: the prediction drawn on its image."""
        return prediction.plot(score_threshold)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """The recipe evaluator's metrics on ``split`` (``"val"`` / ``"test"``), as
        ``detlab eval`` computes them."""
        from .engine.inference import evaluate

        if self.ensemble is not None:
            from .engine.ensemble import evaluate_members

            tasks, names, merge, tta = self.ensemble
            return evaluate_members(tasks, names, split, merge, tta, device=self.device)
        return evaluate(self._task_for(self.settings), split, device=self.device)

    def __repr__(self) -> str:
        head = type(self.task.model.head).__name__
        return f"Detector({head}, recipe={self.task.recipe.name!r}, device={self.device})"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder (``recipe.json``, ``metrics.csv``, ``checkpoints/`` …).
        metrics: the final validation metrics (``{}`` without validation).
        best_checkpoint: ``checkpoints/best.ckpt`` when written, else ``None``.
        last_checkpoint: ``checkpoints/last.ckpt`` when written, else ``None``.
    """

    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


def train(recipe: str | Path | Any, overrides: Sequence[str] | None = None, *,
          resume: str | Path | None = None, work_dir: str | Path | None = None) -> TrainResult:
    """Train a recipe, as ``detlab train RECIPE [overrides] [--resume] [--work-dir]``.

    Args:
        recipe: a recipe file (``"recipes/fracture_unet.py"``) or a loaded
            :class:`~detlab.recipe.Recipe`.
        overrides: dotted ``key=value`` overrides (``["train.max_epochs=3"]``).
        resume: ``"latest"`` or a checkpoint path to continue from.
        work_dir: root of the run folders (default: the recipe's ``train.work_dir``, ``runs/``).

    Raises:
        ConfigError: a recipe or override mistake (the message names the key).
    """
    from .engine.trainer import fit
    from .recipe import Recipe, apply_overrides, load

    if isinstance(recipe, Recipe):
        recipe = copy.deepcopy(recipe)
        apply_overrides(recipe, list(overrides or []))
        recipe.overrides = list(recipe.overrides) + list(overrides or [])
    elif isinstance(recipe, (str, Path)):
        recipe = load(recipe, list(overrides or []))
    else:
        raise ConfigError(f"detlab.train: recipe must be a file path or a Recipe, got "
                          f"{type(recipe).__name__}")
    run_dir, task, _ = fit(recipe, resume=resume, work_dir=work_dir)
    ckpts = Path(run_dir) / "checkpoints"
    return TrainResult(
        run_dir=Path(run_dir), metrics={k: float(v) for k, v in task.last_metrics.items()},
        best_checkpoint=ckpts / "best.ckpt" if (ckpts / "best.ckpt").is_file() else None,
        last_checkpoint=ckpts / "last.ckpt" if (ckpts / "last.ckpt").is_file() else None)
