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
