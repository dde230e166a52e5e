"""Box overlays draw only boxes at or above the overlay threshold; the JSON keeps them all."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from detlab.engine.outputs import write_prediction
from detlab.structures import Prediction


def test_overlay_draws_only_confident_boxes_json_keeps_all(tmp_path):
    Image.new("RGB", (100, 60), (0, 0, 0)).save(tmp_path / "a.png")
    pred = Prediction(boxes=torch.tensor([[10., 10., 30., 30.], [50., 10., 70., 30.],
                                          [10., 40., 30., 55.]]),
                      scores=torch.tensor([0.9, 0.3, 0.01]),
                      labels=torch.zeros(3, dtype=torch.long))
    meta = {"path": str(tmp_path / "a.png"), "orig_size": (60, 100)}
    write_prediction(pred, meta, tmp_path / "out", ["face"])
    record = json.loads((tmp_path / "out" / "a.json").read_text())
    assert np.allclose(record["scores"], [0.9, 0.3, 0.01]) and len(record["boxes_xyxy"]) == 3
    px = np.asarray(Image.open(tmp_path / "out" / "a_overlay.png"))
    assert px.shape[:2] == (60, 100) and px[:8, :20].any()  # same size, stamped caption
    assert px[20, 10].any() and px[20, 50].any()  # left edges of the 0.9 and 0.3 boxes
    assert not px[47, 10].any()                   # the 0.01 box is not drawn
    write_prediction(pred, meta, tmp_path / "all", ["face"], overlay_threshold=0.0)
    assert np.asarray(Image.open(tmp_path / "all" / "a_overlay.png"))[47, 10].any()
