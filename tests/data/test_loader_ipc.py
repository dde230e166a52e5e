"""Training-loader costs that tools/bench_data.py measured at 192 px: small batch targets cross
the worker boundary by value (no shared-memory segment each), and images decode straight to
RGB with the pixels BGR decoding + cvtColor gave."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import cv2
import numpy as np
import pytest
import torch

from detlab.data.collate import PackedTargets
from detlab.data.datasets.detection_base import read_rgb


def _targets(mask_side: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"boxes": torch.rand(n, 4, generator=g), "labels": torch.arange(n),
             "ignore": torch.zeros(n, dtype=torch.bool),
             "mask": torch.rand(1, mask_side, mask_side, generator=g)} for n in (3, 0, 5)]


def test_small_target_tensors_are_pickled_by_value_not_shared_memory():
    targets = _targets(4)
    data = bytes(ForkingPickler.dumps(PackedTargets(targets)))
    # a shared-memory tensor pickles as a call of torch's rebuild_storage_fd/_filename
    assert b"rebuild_storage" not in data
    out = pickle.loads(data)
    assert type(out) is list and len(out) == 3
    for a, b in zip(targets, out):
        assert list(a) == list(b)
        for k in a:
            assert b[k].dtype == a[k].dtype and torch.equal(a[k], b[k]), k


def test_large_target_tensors_still_use_shared_memory():
    side = int(np.ceil(np.sqrt(2**16 / 4 / 3))) + 1  # 3 float32 masks > 64 KiB, the by-value limit
    targets = _targets(side)
    data = bytes(ForkingPickler.dumps(PackedTargets(targets)))
    assert b"rebuild_storage" in data  # the masks, not copied into the pipe
    out = pickle.loads(data)
    for a, b in zip(targets, out):
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["boxes"], b["boxes"])


def _write(path, image, params=()):
    assert cv2.imwrite(str(path), image, list(params))
    return path


@pytest.mark.parametrize("kind", ["rgb_png", "gray_png", "rgba_png", "png16", "jpeg"])
def test_read_rgb_gives_the_pixels_of_bgr_decoding_and_cvtcolor(tmp_path, kind):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[:, :20] = np.linspace(0, 255, 20, dtype=np.uint8)[None, :, None]  # smooth, for JPEG
    if kind == "gray_png":
        image = image[..., 0]
    elif kind == "rgba_png":
        image = np.dstack([image, rng.integers(0, 256, (37, 53), dtype=np.uint8)])
    elif kind == "png16":
        image = image.astype(np.uint16) * 257 + 3
    path = _write(tmp_path / f"a.{'jpg' if kind == 'jpeg' else 'png'}", image,
                  (cv2.IMWRITE_JPEG_QUALITY, 80) if kind == "jpeg" else ())
    ref = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    np.testing.assert_array_equal(out, ref)
