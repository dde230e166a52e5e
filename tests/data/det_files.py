"""Helpers for the detection data tests: write small PNGs, COCO JSON and YOLO label files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

RED = (255, 0, 0)
BG = 90  # gray background level


def write_png(path: Path, height: int, width: int, boxes: Any = (), color=RED) -> Path:
    """A gray RGB PNG with each integer xyxy box filled with ``color`` (pixel-edge coords)."""
    image = np.full((height, width, 3), BG, np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1):int(y2), int(x1):int(x2)] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def coco_dict(images: list[dict], annotations: list[dict], categories: list[dict]) -> dict:
    return {"images": images, "annotations": annotations, "categories": categories}


def red_mask(image_chw) -> np.ndarray:
    """(H, W) bool: pixels of a sample image (mean 0, std 1 normalization) that are red."""
    arr = image_chw.numpy()
    return (arr[0] > 0.8) & (arr[1] < 0.2) & (arr[2] < 0.2)


PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # image values stay x / 255


def voc_xml(filename: str | None, size: tuple[int, int] | None, objects: list[dict]) -> str:
    """Pascal VOC annotation text. ``size`` is ``(w, h)``; each object is a dict with ``name``,
    ``box`` (xmin, ymin, xmax, ymax as written, 1-based) and optional ``difficult``."""
    parts = ["<annotation>", "  <folder>VOC</folder>"]
    if filename is not None:
        parts.append(f"  <filename>{filename}</filename>")
    if size is not None:
        parts.append(f"  <size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        parts += ["  <object>", f"    <name>{obj['name']}</name>",
                  f"    <difficult>{obj.get('difficult', 0)}</difficult>",
                  f"    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                  f"<ymax>{y2}</ymax></bndbox>", "  </object>"]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def write_voc(root: Path, images: dict[str, dict], splits: dict[str, list[str]] | None = None
              ) -> Path:
    """A VOC folder: ``images`` maps id -> dict(size=(w, h), objects=[...], filename=...,
    write_size=True). Each image is a gray PNG with its objects filled red (pixel-edge box
    ``(xmin - 1, ymin - 1, xmax, ymax)``); ``splits`` writes ``ImageSets/Main/<split>.txt``."""
    for image_id, spec in images.items():
        w, h = spec["size"]
        filename = spec.get("filename", f"{image_id}.png")
        edges = [(o["box"][0] - 1, o["box"][1] - 1, o["box"][2], o["box"][3])
                 for o in spec.get("objects", [])]
        write_png(root / "JPEGImages" / filename, h, w, edges)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        size = (w, h) if spec.get("write_size", True) else None
        (root / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(filename, size, spec.get("objects", [])))
    for split, ids in (splits or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root
