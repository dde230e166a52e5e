"""Traceable modules for export: images ``(B, C, H, W)`` in, a tuple of tensors out.

``RawGraph`` returns the head's raw outputs (the dict of :meth:`Head.forward`, lists
flattened as ``name.0``, ``name.1`` …); the ``*PostprocessGraph`` modules add the head's
test-stage post-processing in tensor ops ONNX has (``--with-postprocess``):

========================  ==============================================================
head                      outputs
========================  ==============================================================
YOLOHead                  ``boxes (B, D, 4)`` xyxy input px, ``scores (B, D)``, ``labels
                          (B, D)`` int64, ``num_detections (B,)``; D = ``max_detections``,
                          rows past ``num_detections`` are zeros (labels -1)
FasterRCNNHead            ``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)`` of one image
DBHead                    ``prob_map (B, 1, H, W)`` (sigmoid); polygons: :func:`detlab.export.
                          runtime.db_polygons`
AttentionUNetHead         ``probs (B, C, H, W)`` and ``mask (B, C, H, W)`` bool (threshold, or
                          one-hot argmax for softmax heads)
========================  ==============================================================
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from ..errors import ConfigError

__all__ = ["FAMILIES", "head_family", "test_postprocessor", "RawGraph", "build_graph", "output_names",
           "batched_outputs"]

#: Head class name (or a base class's) -> family name stored in the ONNX metadata.
FAMILIES = {"YOLOHead": "yolo", "FasterRCNNHead": "faster_rcnn", "DBHead": "db",
            "AttentionUNetHead": "segmentation"}


def head_family(head: nn.Module) -> str:
    """``"yolo"``, ``"faster_rcnn"``, ``"db"`` or ``"segmentation"`` for a head (subclasses
    count as their base); ``ConfigError`` for a head export does not know."""
    for cls in type(head).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    raise ConfigError(f"detlab export: head {type(head).__name__} is none of "
                      f"{sorted(FAMILIES)} (or a subclass); export does not know its outputs")


def test_postprocessor(head: nn.Module) -> Any:
    """The head's test-stage post-processor (the one ``postprocessor=`` slot; Faster R-CNN
    heads that still keep ``postprocessors[stage]`` too)."""
    slot = getattr(head, "postprocessor", None)
    if slot is not None and hasattr(slot, "for_stage"):
        return slot.for_stage("test")
    return head.postprocessors["test"]


def _flat(outputs: dict[str, Any]) -> tuple[list[str], list[Tensor]]:
    names, tensors = [], []
    for key, value in outputs.items():
        if isinstance(value, Tensor):
            names.append(key)
            tensors.append(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, Tensor) for v in value):
            names.extend(f"{key}.{i}" for i in range(len(value)))
            tensors.extend(value)
        # ints and lists of ints (num_anchors_per_level, image_size) are fixed by the input size
    return names, tensors


class RawGraph(nn.Module):
    """The model's raw head outputs as a flat tuple (module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = head_family(model.head)

    def outputs(self, images: Tensor) -> dict[str, Any]:
        """The head's output dict (Faster R-CNN: one image's proposals, not a list)."""
        out = dict(self.model(images))
        if self.family == "faster_rcnn":
            out["proposals"] = out["proposals"][0]
        return out

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Flat raw outputs of ``images`` ``(B, C, H, W)``."""
        return tuple(_flat(self.outputs(images))[1])


class YOLOPostprocessGraph(nn.Module):
    """Sigmoid, DFL decode, score threshold, top-k candidates, class-wise NMS and the
    ``max_detections`` best per image, for a whole batch in one ``batched_nms``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.post = model.head.postprocessor.for_stage("test")

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(boxes, scores, labels, num_detections)`` (module docstring)."""
        head, post = self.model.head, self.post
        out = self.model(images)
        scores = out["cls_logits"].float().sigmoid()
        boxes = head.decode(out["box_dist"], out["anchor_points"], out["strides"])
        b, n, c = scores.shape
        k = min(post.pre_nms_topk, n * c if post.multi_label else n)
        values, box_index, labels = post.candidates(scores, k)  # invalid ones are -1
        cand = boxes.gather(1, box_index[..., None].expand(-1, -1, 4)).reshape(-1, 4)
        image = torch.arange(b, device=images.device)[:, None].expand(-1, k).reshape(-1)
        groups = image if post.class_agnostic else image * c + labels.reshape(-1)
        values, labels = values.reshape(-1), labels.reshape(-1)
        keep = box_ops.batched_nms(cand, values, groups, post.iou_threshold)  # by score
        keep = keep[values[keep] >= 0]
        kept_image = image[keep]
        same = kept_image[None, :] == torch.arange(b, device=images.device)[:, None]  # (B, K)
        rank = (same.long().cumsum(dim=1) - 1).gather(0, kept_image[None])[0]
        keep, kept_image, rank = (t[rank < post.max_detections] for t in (keep, kept_image, rank))
        slot = kept_image * post.max_detections + rank
        d = post.max_detections
        det_boxes = cand.new_zeros((b * d, 4)).index_put((slot,), cand[keep])
        det_scores = values.new_zeros((b * d,)).index_put((slot,), values[keep])
        det_labels = torch.full((b * d,), -1, dtype=torch.int64, device=images.device)
        det_labels = det_labels.index_put((slot,), labels[keep])
        num = (kept_image[None, :] == torch.arange(b, device=images.device)[:, None]).sum(dim=1)
        return (det_boxes.reshape(b, d, 4), det_scores.reshape(b, d),
                det_labels.reshape(b, d), num)


class FasterRCNNPostprocessGraph(nn.Module):
    """RPN proposals, RoIAlign, box head, class-specific decode, clip, score threshold,
    pre-NMS top-k, minimum size, class-wise NMS, ``max_detections``: one image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.post = test_postprocessor(model.head)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(boxes (D, 4), scores (D,), labels (D,))`` of the one image in ``images``."""
        head, post = self.model.head, self.post
        out = self.model(images)
        proposals = out["proposals"][0]
        boxes = head.roi.box_coder.decode(out["box_deltas"].float(), [proposals.float()])
        boxes = box_ops.clip_boxes_to_image(boxes, out["image_size"])[:, 1:]
        scores = out["cls_logits"].float().softmax(dim=-1)[:, 1:]
        k = scores.shape[1]
        if not post.multi_label:
            best = scores.argmax(dim=1, keepdim=True)
            scores = torch.zeros_like(scores).scatter(1, best, scores.gather(1, best))
        flat = scores.reshape(-1)
        order = flat.argsort(descending=True)[: post.pre_nms_topk]
        order = order[flat[order] > post.score_threshold]
        cand_boxes, cand_scores, cand_labels = boxes.reshape(-1, 4)[order], flat[order], order % k
        wh = cand_boxes[:, 2:] - cand_boxes[:, :2]
        ok = (wh >= 1e-2).all(dim=1)  # select_detections' min_size
        cand_boxes, cand_scores, cand_labels = cand_boxes[ok], cand_scores[ok], cand_labels[ok]
        groups = torch.zeros_like(cand_labels) if post.class_agnostic else cand_labels
        keep = box_ops.batched_nms(cand_boxes, cand_scores, groups, post.iou_threshold)
        keep = keep[: post.max_detections]
        return cand_boxes[keep], cand_scores[keep], cand_labels[keep]


class DBPostprocessGraph(nn.Module):
    """The probability map ``sigmoid(prob_logits)``; polygons stay in Python."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(prob_map (B, 1, H, W),)``."""
        return (self.model(images)["prob_logits"].float().sigmoid(),)


class SegmentationPostprocessGraph(nn.Module):
    """Class probabilities and the test-stage mask at input resolution."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.post = model.head.postprocessor.for_stage("test")

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(probs (B, C, H, W), mask (B, C, H, W) bool)``."""
        logits = self.model(images)["logits"].float()
        if self.model.head.activation == "sigmoid":
            probs = logits.sigmoid()
            return probs, probs >= self.post.threshold
        probs = logits.softmax(dim=1)
        classes = torch.arange(probs.shape[1], device=probs.device)[None, :, None, None]
        return probs, probs.argmax(dim=1, keepdim=True) == classes


_POSTPROCESS = {"yolo": YOLOPostprocessGraph, "faster_rcnn": FasterRCNNPostprocessGraph,
                "db": DBPostprocessGraph, "segmentation": SegmentationPostprocessGraph}
_POSTPROCESS_NAMES = {"yolo": ["boxes", "scores", "labels", "num_detections"],
                      "faster_rcnn": ["boxes", "scores", "labels"], "db": ["prob_map"],
                      "segmentation": ["probs", "mask"]}


def build_graph(model: nn.Module, with_postprocess: bool) -> nn.Module:
    """The module to export for ``model`` (eval mode): raw outputs, or with post-processing.

    Raises:
        ConfigError: a box post-processor whose NMS method is not ``"standard"`` (Soft-NMS and
            DIoU-NMS are Python loops; export the raw outputs instead).
    """
    family = head_family(model.head)
    if not with_postprocess:
        return RawGraph(model).eval()
    if family in ("yolo", "faster_rcnn"):
        post = test_postprocessor(model.head)
        if post.method != "standard":
            raise ConfigError(
                f"detlab export --with-postprocess: the test post-processor's NMS method is "
                f"{post.method!r}; only 'standard' NMS exports (Soft-/DIoU-NMS are Python "
                "loops). Set model.head.postprocessor.test.method=standard or export without "
                "--with-postprocess")
    return _POSTPROCESS[family](model).eval()


def batched_outputs(graph: nn.Module, images: Tensor) -> list[bool]:
    """Per output of ``graph``: whether its first axis is the batch (it grows from a batch
    of one to two images; anchor points and strides do not)."""
    one = images[:1]
    two = torch.cat([one, one]) if images.shape[0] < 2 else images[:2]
    with torch.no_grad():
        return [a.dim() > 0 and a.shape[0] != b.shape[0] for a, b in zip(graph(one), graph(two))]


def output_names(graph: nn.Module, images: Tensor) -> list[str]:
    """The names of ``graph``'s outputs (raw: from one run on ``images``)."""
    if isinstance(graph, RawGraph):
        with torch.no_grad():
            return _flat(graph.outputs(images))[0]
    family = head_family(graph.model.head)
    return list(_POSTPROCESS_NAMES[family])
