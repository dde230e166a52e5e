"""Writing predictions to files for ``detlab predict``: masks, overlays, boxes, polygons.

Files other tools score (boxes in original image pixels):

* ``results.json``: COCO detection results, one dict per box: ``image_id``, ``category_id``,
  ``bbox`` ``[x, y, w, h]``, ``score`` (plus ``file_name``, ``category_name``). Predicting a
  COCO split (``--split val`` on ``CocoDetection``) writes the dataset's own image ids and
  category ids, so pycocotools scores the file against the user's ground-truth JSON. For image
  files, ``image_id`` is the file name relative to the input folder and ``category_id`` the
  val dataset's COCO category id when it has them, else ``label + 1``;
* ``categories.json``: ``[{"id", "name", "label"}]``: the ``category_id`` of each detlab label;
* ``labels/<stem>.txt`` (``--yolo-txt``): YOLO format, one line per box
  ``class cx cy w h score``, ``class`` the 0-based detlab label, the box normalized by the
  original image width/height.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..errors import DataError
from ..structures import Prediction

__all__ = ["coco_results", "categories", "write_yolo_txt", "write_prediction",
           "render_prediction", "overlay_mask", "load_display_image"]

_COLORS = [(255, 40, 40), (40, 200, 40), (40, 120, 255), (255, 200, 0), (200, 0, 200),
           (0, 200, 200), (255, 120, 0), (120, 60, 255), (128, 128, 0), (0, 128, 128)]


def load_display_image(path: str | Path, size: tuple[int, int]) -> Image.Image:
    """The input image as RGB for overlays (a grey canvas of ``size`` (h, w) if unreadable)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(img, dtype=np.float32)
                arr = (255 * (arr - arr.min()) / max(1.0, float(np.ptp(arr)))).astype(np.uint8)
                return Image.fromarray(arr).convert("RGB")
            return img.convert("RGB")
    except (OSError, ValueError):
        return Image.new("RGB", (size[1], size[0]), (128, 128, 128))


def overlay_mask(image: Image.Image, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend class colours over ``image`` where ``mask`` ``(C, H, W)`` bool is set."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = base.copy()
    for c in range(mask.shape[0]):
        color = np.asarray(_COLORS[c % len(_COLORS)], dtype=np.float32)
        m = mask[c].astype(bool)
        out[m] = (1 - alpha) * base[m] + alpha * color
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def _draw_boxes(image: Image.Image, pred: Prediction, names: list[str] | None,
                min_score: float = 0.0) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for box, score, label in zip(pred.boxes.tolist(), pred.scores.tolist(), pred.labels.tolist()):
        if score < min_score:
            continue
        color = _COLORS[int(label) % len(_COLORS)]
        draw.rectangle(box, outline=color, width=2)
        name = names[label] if names and label < len(names) else str(label)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=color)
    return image


def _stamp(image: Image.Image, text: str) -> None:
    """``text`` in the top-left corner on a dark band (the overlay keeps the image size)."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = draw.textbbox((2, 1), text)
    draw.rectangle((0, 0, x1 + 2, y1 + 1), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))


def _draw_polygons(image: Image.Image, pred: Prediction) -> Image.Image:
    draw = ImageDraw.Draw(image)
    for poly in pred.polygons or []:
        pts = [tuple(map(float, p)) for p in np.asarray(poly).reshape(-1, 2)]
        if len(pts) >= 2:
            draw.line(pts + [pts[0]], fill=_COLORS[0], width=2)
    return image


def render_prediction(image: Image.Image, pred: Prediction,
                      class_names: list[str] | None = None,
                      overlay_threshold: float = 0.25) -> Image.Image:
    """The overlay ``detlab predict`` writes (``<stem>_overlay.png``) and
    :meth:`detlab.ImagePrediction.plot` returns: masks in class colours; boxes scoring at
    least ``overlay_threshold`` with class name and score, and an "N of M boxes" stamp;
    polygons outlined. ``image`` is the original RGB image (it is drawn on; pass a copy to
    keep it)."""
    if pred.mask is not None:
        return overlay_mask(image, pred.mask.detach().cpu().numpy().astype(bool))
    overlay = image
    if pred.boxes is not None:
        overlay = _draw_boxes(image, pred, class_names, overlay_threshold)
        scores = pred.scores.detach().cpu()
        shown = int((scores >= overlay_threshold).sum())
        top = f" (max {float(scores.max()):.2f})" if len(scores) else ""
        _stamp(overlay, f"{shown} of {len(scores)} boxes with score >= "
                        f"{overlay_threshold:g}{top}")
    if pred.polygons is not None:
        overlay = _draw_polygons(image, pred)
    return overlay


def write_prediction(pred: Prediction, meta: dict[str, Any], out_dir: Path,
                     class_names: list[str] | None = None, save_probs: bool = False,
                     overlay_threshold: float = 0.25) -> list[Path]:
    """Write one image's prediction; returns the files written.

    The JSON files hold every box the post-processor kept (evaluation settings keep hundreds
    at score 0.001); the overlay draws only boxes scoring at least ``overlay_threshold``, so
    it stays readable.

    Segmentation: ``<stem>_mask.png`` (one per class when C > 1, values 0/255) and
    ``<stem>_overlay.png``; with ``save_probs`` also ``<stem>_probs.npy`` ``(C, H, W)`` float32.
    Detection / text: ``<stem>.json`` (xyxy pixel boxes or polygons, scores, labels) and
    ``<stem>_overlay.png``; text with ``save_probs``: ``<stem>_probs.npy`` ``(1, h, w)`` float32,
    the DB text probability map resized to the original image (``extras["prob_map"]``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(str(meta.get("path", meta.get("image_id", "image")))).stem
    h, w = meta.get("orig_size", (0, 0))
    written: list[Path] = []
    image = load_display_image(meta.get("path", ""), (h, w))
    if pred.mask is not None:
        mask = pred.mask.detach().cpu().numpy().astype(bool)
        if mask.shape[0] == 1:
            paths = [out_dir / f"{stem}_mask.png"]
        else:
            paths = [out_dir / f"{stem}_mask_c{c}.png" for c in range(mask.shape[0])]
        for c, p in enumerate(paths):
            Image.fromarray((mask[c] * 255).astype(np.uint8)).save(p)
            written.append(p)
        overlay = render_prediction(image, pred, class_names, overlay_threshold)
        if save_probs and pred.probs is not None:
            p = out_dir / f"{stem}_probs.npy"
            np.save(p, pred.probs.detach().cpu().numpy().astype(np.float32))
            written.append(p)
    else:
        record: dict[str, Any] = {"image": meta.get("path"), "orig_size": [h, w]}
        if pred.boxes is not None:
            record.update(
                boxes_xyxy=pred.boxes.detach().cpu().tolist(),
                scores=pred.scores.detach().cpu().tolist(),
                labels=pred.labels.detach().cpu().tolist(),
            )
        if pred.polygons is not None:
            record["polygons"] = [np.asarray(p).tolist() for p in pred.polygons]
            record["scores"] = np.asarray(
                pred.scores.cpu() if hasattr(pred.scores, "cpu") else pred.scores
            ).tolist()
        overlay = render_prediction(image, pred, class_names, overlay_threshold)
        p = out_dir / f"{stem}.json"
        p.write_text(json.dumps(record))
        written.append(p)
        if save_probs and pred.extras.get("prob_map") is not None:
            prob = torch.as_tensor(pred.extras["prob_map"]).float()
            prob = prob[None] if prob.ndim == 2 else prob
            if (h, w) != (0, 0) and tuple(prob.shape[-2:]) != (h, w):
                prob = F.interpolate(prob[None], size=(int(h), int(w)), mode="bilinear",
                                     align_corners=False)[0]
            p = out_dir / f"{stem}_probs.npy"
            np.save(p, prob.cpu().numpy().astype(np.float32))
            written.append(p)
    p = out_dir / f"{stem}_overlay.png"
    overlay.save(p)
    written.append(p)
    return written


def _label_to_category(label: int, category_ids: list[int] | None) -> int:
    if category_ids is None:
        return label + 1
    if not 0 <= label < len(category_ids):
        raise DataError(f"predicted label {label} has no category id (the dataset has "
                        f"{len(category_ids)}: {category_ids})")
    return int(category_ids[label])


def coco_results(pred: Prediction, meta: dict[str, Any],
                 class_names: list[str] | None = None,
                 category_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """COCO-style detection results for one image (module docstring): one dict per box with
    ``image_id`` (``meta["image_id"]``), ``file_name``, ``category_id``
    (``category_ids[label]``, else ``label + 1``), ``category_name``, ``bbox`` ``[x, y, w, h]``
    in original image pixels and ``score``. Empty for non-box predictions."""
    if pred.boxes is None:
        return []
    out = []
    image_id = meta.get("image_id", Path(str(meta.get("path", ""))).stem)
    if hasattr(image_id, "item"):
        image_id = image_id.item()
    file_name = meta.get("file_name") or Path(str(meta.get("path", ""))).name
    for (x1, y1, x2, y2), score, label in zip(
        pred.boxes.detach().cpu().tolist(), pred.scores.detach().cpu().tolist(),
        pred.labels.detach().cpu().tolist(),
    ):
        label = int(label)
        out.append({
            "image_id": image_id,
            "file_name": file_name,
            "category_id": _label_to_category(label, category_ids),
            "category_name": class_names[label] if class_names and label < len(class_names)
            else str(label),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
        })
    return out


def categories(num_classes: int, class_names: list[str] | None = None,
               category_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """``categories.json`` content: ``{"id", "name", "label"}`` per detlab label."""
    return [{"id": _label_to_category(i, category_ids),
             "name": class_names[i] if class_names and i < len(class_names) else str(i),
             "label": i} for i in range(num_classes)]


def write_yolo_txt(pred: Prediction, meta: dict[str, Any], out_dir: Path) -> Path | None:
    """``out_dir/labels/<stem>.txt``: ``class cx cy w h score`` per box, normalized by the
    original width/height (``meta["orig_size"]``); None for non-box predictions."""
    if pred.boxes is None:
        return None
    h, w = (float(v) for v in meta["orig_size"])
    stem = Path(str(meta.get("path", meta.get("image_id", "image")))).stem
    folder = out_dir / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for (x1, y1, x2, y2), score, label in zip(
        pred.boxes.detach().cpu().double().tolist(), pred.scores.detach().cpu().tolist(),
        pred.labels.detach().cpu().tolist(),
    ):
        lines.append(f"{int(label)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {float(score):.6f}")
    path = folder / f"{stem}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path
