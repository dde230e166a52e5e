"""Run an exported model with onnxruntime: ``detlab predict MODEL.onnx IMAGES...``.

The ``.onnx`` file alone is enough: its ``detlab.*`` metadata (:mod:`detlab.export.onnx`) say
how an image file becomes the input (the val split's channels, mean/std and
:class:`~detlab.data.geometry.InputGeometry`, read by
:class:`~detlab.data.datasets.image_files.ImageFiles`), which head made the outputs and its
recipe dict. Raw-output files go through the head's own ``postprocess`` (the head is rebuilt
from that dict, registered types only: nothing in the file is imported or executed); files
with post-processing in the graph are mapped back to the original image like the head does.
The prediction files are the ones ``detlab predict CKPT`` writes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..structures import Batch, Prediction
from .onnx import read_metadata
from .parity import session

__all__ = ["OnnxPredictor", "db_polygons", "predict_command"]


def db_polygons(prob_map: Any, meta: Mapping[str, Any], postprocessor: Any
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """DB's polygon step over an exported probability map: ``(polygons, scores)`` of one
    image in original pixels.

    Args:
        prob_map: ``(H, W)`` probabilities of the padded network input (``prob_map[i, 0]`` of a
            ``--with-postprocess`` DB export, or the sigmoid of raw ``prob_logits``).
        meta: the image's meta (``scale``, ``pad``, ``input_size``, ``orig_size``), as
            :class:`~detlab.data.geometry.InputGeometry` writes it.
        postprocessor: a :class:`~detlab.postprocess.db_polygons.DBPostProcessor` (e.g.
            ``OnnxPredictor(path).head.postprocessor.for_stage("test")``).
    """
    from ..ops.coords import content_region

    prob = np.asarray(prob_map, dtype=np.float32)
    top, left, h, w = content_region(meta, prob.shape[-2:])
    orig = meta.get("orig_size")
    polygons, scores = postprocessor(
        np.ascontiguousarray(prob[top : top + h, left : left + w]),
        scale=tuple(meta.get("scale", (1.0, 1.0))), pad=(0.0, 0.0),  # cropped at the content
        orig_size=None if orig is None else tuple(int(v) for v in orig))
    return list(polygons), np.asarray(scores, dtype=np.float32)


def _build_head(info: Mapping[str, Any], path: Path) -> Any:
    """The head of the exported model, rebuilt from its stored recipe dict (weights unused:
    only its post-processing runs)."""
    from ..recipe import component_types
    from ..registry import HEADS, REGISTRIES, discover

    discover()
    cfg = dict(info["config"])
    unknown = [f"model.head.{key}={type_!r}" for key, type_ in component_types(cfg)
               if not any(type_ in registry for registry in REGISTRIES.values())]
    if unknown:
        raise CheckpointError(
            f"{path}: its head uses types that are not registered ({'; '.join(unknown)}); an "
            "ONNX file is data, so detlab does not import code it names. Predict with the "
            "checkpoint instead")
    return HEADS.build(cfg, key="model.head", in_channels=list(info["in_channels"]),
                       strides=list(info["strides"])).eval()


class OnnxPredictor:
    """An exported model, its preprocessing and its post-processing (module docstring).

    Args:
        path: a ``.onnx`` file written by ``detlab export``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self.family: str = self.meta["detlab.head_family"]
        self.graph_postprocess = self.meta.get("detlab.postprocess") == "graph"
        if self.family == "faster_rcnn" and not self.graph_postprocess:
            raise ConfigError(
                f"{self.path}: a Faster R-CNN exported without --with-postprocess holds the "
                "RPN proposals and RoI outputs of one image, not boxes; export it again with "
                "--with-postprocess to predict with it")
        self.input_size = tuple(int(v) for v in self.meta["detlab.input_size"])
        self.class_names: list[str] | None = self.meta.get("detlab.class_names")
        self.category_ids: list[int] | None = self.meta.get("detlab.category_ids")
        self.num_classes = int(self.meta.get("detlab.num_classes") or 0)
        self.head = _build_head(self.meta["detlab.head"], self.path)
        self.session = session(self.path)
        self.names = [o.name for o in self.session.get_outputs()]

    def dataset(self, paths: Sequence[str | Path]) -> Any:
        """``ImageFiles`` over ``paths`` with the exported val preprocessing."""
        from ..data.datasets.image_files import ImageFiles

        spec = self.meta.get("detlab.input_spec")
        if not spec:
            raise ConfigError(f"{self.path}: the exported recipe's val dataset did not say how "
                              "an image file becomes its input (no input_spec)")
        return ImageFiles(list(paths), **spec)

    def loader(self, paths: Sequence[str | Path]) -> Any:
        """Batches of one image over ``paths``."""
        from torch.utils.data import DataLoader

        from ..data.collate import Collate

        return DataLoader(self.dataset(paths), batch_size=1, shuffle=False, num_workers=0,
                          collate_fn=Collate(int(self.meta.get("detlab.size_divisor", 32))))

    def run(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The session's named outputs for ``images`` ``(B, C, H, W)`` (padded to the export
        size; image by image for a fixed-batch file)."""
        from .checkpoint import pad_to
        from .parity import run_session

        images = pad_to(images.float(), self.input_size, "an input image (after resizing)")
        per_image = not self.meta.get("detlab.dynamic_batch") or self.family == "faster_rcnn"
        batched = self.meta.get("detlab.batched_outputs")
        return dict(zip(self.names, run_session(self.session, images, per_image, batched)))

    def predict(self, batch: Batch) -> list[Prediction]:
        """One :class:`Prediction` per image of ``batch``, in original image pixels."""
        from ..ops.coords import boxes_to_original, maps_to_original

        got = self.run(batch.images)
        batch = Batch(images=torch.zeros((len(batch), 1, *self.input_size)), meta=batch.meta)
        if not self.graph_postprocess:
            return self.head.postprocess(self._raw(got), batch, stage="test")
        preds = []
        for i, meta in enumerate(batch.meta):
            if self.family in ("yolo", "faster_rcnn"):
                if self.family == "yolo":
                    n = int(got["num_detections"][i])
                    boxes, scores, labels = (got[k][i, :n] for k in ("boxes", "scores", "labels"))
                else:
                    boxes, scores, labels = got["boxes"], got["scores"], got["labels"]
                preds.append(Prediction(
                    boxes=boxes_to_original(torch.from_numpy(np.array(boxes)), meta),
                    scores=torch.from_numpy(np.array(scores)),
                    labels=torch.from_numpy(np.array(labels)).long()))
            elif self.family == "db":
                prob = got["prob_map"][i, 0]
                polygons, scores = db_polygons(prob, meta, self.head.postprocessor.for_stage(
                    "test"))
                from ..ops.coords import content_region

                top, left, h, w = content_region(meta, prob.shape)
                preds.append(Prediction(polygons=polygons, scores=torch.from_numpy(scores),
                                        extras={"prob_map": torch.from_numpy(
                                            np.array(prob[top:top + h, left:left + w]))}))
            else:
                post = self.head.postprocessor.for_stage("test")
                probs = maps_to_original(torch.from_numpy(np.array(got["probs"][i])), meta,
                                         mode="bilinear")
                preds.append(Prediction(probs=probs, mask=post(probs, activation=getattr(
                    self.head, "activation", "sigmoid")), extras={"threshold": post.threshold}))
        return preds

    def _raw(self, got: dict[str, np.ndarray]) -> dict[str, Any]:
        """The head's raw output dict from the session's flat outputs (``name.i`` -> lists)."""
        out: dict[str, Any] = {}
        for name in self.names:
            value = torch.from_numpy(np.array(got[name]))
            key, _, index = name.partition(".")
            if index:
                out.setdefault(key, []).append(value)
            else:
                out[key] = value
        if self.family == "yolo":  # the per-level counts are not a tensor output
            out.setdefault("num_anchors_per_level", [])
        return out


def predict_command(args: argparse.Namespace) -> int:
    """``detlab predict MODEL.onnx IMAGES... --out DIR``: the files ``detlab predict CKPT``
    writes (``<stem>.json`` / masks, overlays, ``results.json`` + ``categories.json`` for
    boxes), from onnxruntime."""
    from ..engine.outputs import categories, coco_results, write_prediction, write_yolo_txt

    inputs = [item for item in args.items if Path(item).exists() or "=" not in item]
    overrides = [item for item in args.items if item not in inputs]
    for flag, bad in (("KEY=VALUE overrides", overrides), ("--split", args.split),
                      ("--recipe", args.recipe), ("--trust-recipe", args.trust_recipe)):
        if bad:
            raise ConfigError(
                f"detlab predict {args.checkpoint}: {flag} do(es) not apply to an exported "
                "ONNX model (its preprocessing and post-processing are fixed at export); give "
                "image files or folders")
    if not inputs:
        raise ConfigError("detlab predict: give at least one input image file or folder")
    predictor = OnnxPredictor(args.checkpoint)
    boxes = predictor.family in ("yolo", "faster_rcnn")
    head = predictor.meta.get("detlab.head_type")
    if args.save_probs and boxes:
        raise ConfigError(f"--save-probs: this model's head ({head}) predicts boxes, which "
                          "have no probability map to save; drop --save-probs")
    if args.yolo_txt and not boxes:
        raise ConfigError(f"--yolo-txt writes boxes, but this model's head ({head}) "
                          "predicts none")
    out_dir = Path(args.out)
    names, ids = predictor.class_names, predictor.category_ids
    coco: list[dict[str, Any]] = []
    count = 0
    with torch.inference_mode():
        for batch in predictor.loader(inputs):
            for pred, meta in zip(predictor.predict(batch), batch.meta):
                write_prediction(pred, meta, out_dir, names, save_probs=args.save_probs,
                                 overlay_threshold=args.overlay_threshold)
                if args.yolo_txt:
                    write_yolo_txt(pred, meta, out_dir)
                coco.extend(coco_results(pred, meta, names, ids))
                count += 1
    if coco or boxes:
        (out_dir / "results.json").write_text(json.dumps(coco))
        (out_dir / "categories.json").write_text(
            json.dumps(categories(predictor.num_classes, names, ids), indent=1))
    print(f"wrote predictions for {count} image(s) to {out_dir}")
    return 0
