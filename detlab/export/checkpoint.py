"""From a detlab checkpoint to an exported file checked against it (``detlab export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from ..recipe import to_jsonable
from .graphs import (batched_outputs, build_graph, head_family, output_names,
                     test_postprocessor)
from .onnx import DEFAULT_OPSET, check_opset, export_onnx, require
from .parity import ParityReport, check_parity

__all__ = ["FORMAT_VERSION", "val_batch", "pad_to", "export_metadata", "export_checkpoint"]

FORMAT_VERSION = 1


def pad_to(images: Tensor, size: tuple[int, int], what: str = "the batch") -> Tensor:
    """``images`` ``(B, C, h, w)`` padded bottom/right with zeros to ``size`` (as the collate
    and :meth:`Model.features` pad); DataError when an image is larger than ``size``."""
    h, w = images.shape[-2:]
    if h > size[0] or w > size[1]:
        raise DataError(f"{what} is {h}x{w} pixels but the exported model takes {size[0]}x"
                        f"{size[1]}; export with a larger --img-size H W")
    return F.pad(images, (0, size[1] - w, 0, size[0] - h))


def val_batch(task: Any) -> tuple[Any, dict[str, Any] | None, list[int] | None]:
    """``(batch, input_spec, category_ids)`` of the recipe's val split: its first batch,
    the val dataset's input spec (how an image file becomes the input) and COCO ids."""
    from ..data.datamodule import DataModule
    from ..data.predict_spec import input_spec_of
    from ..errors import DetlabError

    data = DataModule(task.recipe.section("data"), size_divisor=task.model.size_divisor)
    try:
        dataset = data.dataset("val")
        batch = next(iter(data.val_dataloader()))
    except (DetlabError, StopIteration) as err:
        raise DataError(f"detlab export checks the exported model on a batch of the recipe's "
                        f"val split, which cannot be read: {err or 'it is empty'}") from err
    ids = None
    for _ in range(8):  # through wrappers, as cmd_predict's _category_ids
        if dataset is None:
            break
        if getattr(dataset, "category_ids", None) is not None:
            ids = [int(v) for v in dataset.category_ids]
            break
        dataset = getattr(dataset, "dataset", None)
    return batch, input_spec_of(data.dataset("val")), ids


def export_metadata(task: Any, *, family: str, input_spec: dict[str, Any] | None,
                    category_ids: list[int] | None, size: tuple[int, int],
                    with_postprocess: bool, dynamic_batch: bool, names: list[str]
                    ) -> dict[str, Any]:
    """The ``detlab.*`` metadata of an exported model (:mod:`detlab.export.onnx`)."""
    model = task.model
    source = model.neck if model.neck is not None else model.backbone
    head = model.head
    class_names = (task.recipe.get("evaluator") or {}).get("class_names")
    post = test_postprocessor(head) if family in ("yolo", "faster_rcnn") else None
    return {
        "detlab.format_version": FORMAT_VERSION,
        "detlab.head_family": family,
        "detlab.head_type": type(head).__name__,
        "detlab.head": {"config": to_jsonable(task.recipe["model"]["head"]),
                        "in_channels": [int(c) for c in source.channels],
                        "strides": [int(s) for s in source.strides]},
        "detlab.num_classes": int(getattr(head, "num_classes", 0) or 0),
        "detlab.class_names": to_jsonable(class_names),
        "detlab.category_ids": category_ids,
        "detlab.input_spec": to_jsonable(input_spec),
        "detlab.input_size": [int(size[0]), int(size[1])],
        "detlab.size_divisor": int(model.size_divisor),
        "detlab.dynamic_batch": bool(dynamic_batch),
        "detlab.postprocess": "graph" if with_postprocess else "none",
        "detlab.test_postprocessor": repr(post) if post is not None else None,
        "detlab.outputs": names,
        "detlab.recipe_name": task.recipe.name,
    }


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fmt: str = "onnx",
                      dynamic_batch: bool = False, with_postprocess: bool = False,
                      opset: int = DEFAULT_OPSET, img_size: tuple[int, int] | None = None,
                      overrides: list[str] | None = None, trust: bool = False,
                      recipe: str | Path | None = None) -> tuple[Path, ParityReport]:
    """Export ``checkpoint`` to ``out`` and check it against the checkpoint on a val batch.

    Args:
        checkpoint: a ``.ckpt`` written by ``detlab train``.
        out: the file to write.
        fmt: ``"onnx"``, or ``"torchscript"`` (a traced module, :mod:`detlab.export.torchscript`;
            ``opset`` unused).
        dynamic_batch: symbolic batch axis (traced at batch 1, checked on the val batch).
            Faster R-CNN refuses it: its RPN's per-image loop is unrolled by tracing.
        with_postprocess: put the test-stage post-processing in the graph
            (:mod:`detlab.export.graphs`).
        opset: ONNX opset (>= :data:`~detlab.export.onnx.MIN_OPSET`).
        img_size: fixed ``(H, W)`` input; default the val batch's padded size.
        overrides, trust, recipe: as for :func:`detlab.engine.checkpoint.load_task`.

    Returns:
        The written path and the parity report (``report.ok``).
    """
    from ..engine.checkpoint import load_task

    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"detlab export: --format {fmt!r}: expected 'onnx' or 'torchscript'")
    if fmt == "onnx":
        require("onnx", "onnxruntime")
        check_opset(opset)
    task = load_task(checkpoint, overrides, trust=trust, recipe=recipe)
    model = task.model.eval()
    family = head_family(model.head)
    if dynamic_batch and family == "faster_rcnn":
        raise ConfigError(
            "detlab export --dynamic-batch: Faster R-CNN exports at batch 1 only (the RPN "
            "selects proposals image by image in a Python loop, which tracing unrolls for "
            "the traced batch size); drop --dynamic-batch and run one image per call")
    batch, spec, ids = val_batch(task)
    if img_size is not None:
        d = model.size_divisor
        if len(img_size) != 2 or any(int(v) < 1 or int(v) % d for v in img_size):
            raise ConfigError(f"detlab export: --img-size {list(img_size)}: expected H W, "
                              f"positive multiples of the model's stride {d}")
    size = tuple(int(v) for v in (img_size or batch.images.shape[-2:]))
    images = pad_to(batch.images.float(), size, "a val batch")
    graph = build_graph(model, with_postprocess)
    example = images[:1]
    names = output_names(graph, example)
    batched = None if family == "faster_rcnn" else batched_outputs(graph, images)
    meta = export_metadata(task, family=family, input_spec=spec, category_ids=ids, size=size,
                           with_postprocess=with_postprocess, dynamic_batch=dynamic_batch,
                           names=names)
    meta["detlab.batched_outputs"] = batched
    if fmt == "torchscript":
        from .torchscript import check_torchscript, export_torchscript

        path = export_torchscript(graph, example, out, meta)
        per_image = not dynamic_batch or family == "faster_rcnn"
        return path, check_torchscript(graph, path, images, names, per_image)
    with torch.no_grad():
        path = export_onnx(graph, example, out, output_names=names, metadata=meta,
                           opset=opset, batched=batched if dynamic_batch else None)
    return path, check_parity(model, graph, path, images, dynamic_batch, batched)
