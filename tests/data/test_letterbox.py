"""letterbox / unletterbox_boxes: hand-computed sizes and pads, exact round trips, and boxes
that still frame the drawn pixels after resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.data.letterbox import fit_size, letterbox, unletterbox_boxes
from detlab.errors import ConfigError

# (h, w), size, stride, scale_up -> resized (h, w), padded (h, w), pad (top, left)
SIZE_CASES = {
    "cctv_1080p_to_640": ((1080, 1920), 640, 32, True, (360, 640), (384, 640), (12, 0)),
    "cctv_1080p_to_1280": ((1080, 1920), 1280, 32, True, (720, 1280), (736, 1280), (8, 0)),
    "portrait": ((100, 50), 64, 32, True, (64, 32), (64, 32), (0, 0)),
    "odd_ratio_square_pad": ((37, 91), 128, None, True, (52, 128), (128, 128), (38, 0)),
    "small_no_upscale": ((30, 40), 640, 32, False, (30, 40), (32, 64), (1, 12)),
    "small_upscale": ((30, 40), 80, 32, True, (60, 80), (64, 96), (2, 8)),
    "no_resize": ((50, 70), None, 32, True, (50, 70), (64, 96), (7, 13)),
}


@pytest.mark.parametrize("case", SIZE_CASES.values(), ids=SIZE_CASES.keys())
def test_letterbox_sizes_and_pads(case):
    (h, w), size, stride, scale_up, resized, padded, pad = case
    image = np.zeros((h, w, 3), np.uint8)
    out, boxes, scale, got_pad = letterbox(image, None, size, stride=stride, scale_up=scale_up)
    assert fit_size(h, w, size, scale_up) == resized
    assert out.shape == (*padded, 3)
    assert got_pad == pad
    assert scale == pytest.approx((resized[0] / h, resized[1] / w))
    assert boxes is None


def test_padding_value_and_position():
    image = np.full((2, 4, 3), 7, np.uint8)
    out, _, _, (top, left) = letterbox(image, None, None, stride=8, pad_value=114)
    assert (top, left) == (3, 2)
    assert (out[top:top + 2, left:left + 4] == 7).all()
    assert (out[:top] == 114).all() and (out[:, :left] == 114).all()
    assert (out[top + 2:] == 114).all() and (out[:, left + 4:] == 114).all()


@pytest.mark.parametrize("hw", [(1080, 1920), (1920, 1080), (333, 777), (500, 500), (17, 300)])
@pytest.mark.parametrize("size,stride", [(640, 32), (1280, 32), (97, None)])
def test_round_trip_exact(hw, size, stride):
    h, w = hw
    rng = np.random.default_rng(h * w + size)
    xy = rng.uniform(0, [w, h], (20, 2))
    wh = rng.uniform(0.5, [w / 4, h / 4], (20, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    _, out_boxes, scale, pad = letterbox(np.zeros((h, w, 3), np.uint8), boxes, size, stride)
    np.testing.assert_allclose(unletterbox_boxes(out_boxes, scale, pad), boxes, atol=1e-4)
    # The forward map is input = orig * scale + pad.
    sy, sx = scale
    top, left = pad
    np.testing.assert_allclose(out_boxes, boxes * [sx, sy, sx, sy] + [left, top, left, top],
                               rtol=1e-6, atol=1e-4)
    back = unletterbox_boxes(torch.from_numpy(out_boxes), scale, pad)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), boxes, atol=1e-4)


@pytest.mark.parametrize("hw,box,size", [
    ((120, 200), (40, 30, 90, 70), 64),     # downscale 0.32
    ((60, 40), (8, 12, 24, 40), 150),       # upscale 2.5
    ((1080, 1920), (960, 540, 1000, 600), 640),
])
def test_boxes_frame_drawn_pixels(hw, box, size):
    h, w = hw
    image = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    out, boxes, _, _ = letterbox(image, np.array([box], np.float32), size, pad_value=0)
    bx1, by1, bx2, by2 = boxes[0]
    ys, xs = np.nonzero(out > 127)  # pixels that are mostly "drawn" after interpolation
    # Half-drawn pixels sit on the box edge: the drawn region matches the box to < 1 px.
    assert xs.min() >= np.floor(bx1) and xs.max() + 1 <= np.ceil(bx2)
    assert ys.min() >= np.floor(by1) and ys.max() + 1 <= np.ceil(by2)
    assert xs.min() <= bx1 + 1 and xs.max() + 1 >= bx2 - 1
    assert ys.min() <= by1 + 1 and ys.max() + 1 >= by2 - 1


def test_single_channel_keeps_axis():
    out, _, _, _ = letterbox(np.zeros((30, 50, 1), np.uint8), None, 64)
    assert out.shape == (64, 64, 1)


@pytest.mark.parametrize("size", [0, -5, (10,), (0, 10), "big", True])
def test_bad_size_raises(size):
    with pytest.raises(ConfigError, match="size"):
        letterbox(np.zeros((10, 10, 3), np.uint8), None, size)
