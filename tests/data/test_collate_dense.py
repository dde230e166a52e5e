"""collate pads every dense target (``mask``, ``*_map``, ``*_mask``) with the image, and
leaves ``orig_*`` maps, non-tensors and other tensors alone."""

import numpy as np
import pytest
import torch

from detlab.data.collate import collate


def _sample(h: int, w: int) -> dict:
    return {
        "image": torch.ones(3, h, w),
        "target": {
            "mask": torch.ones(1, h, w),
            "prob_map": torch.ones(h, w),
            "thresh_mask": torch.ones(h, w),
            "orig_mask": torch.ones(1, 2 * h, 2 * w),  # original resolution
            "boxes": torch.ones(2, 4),
            "polygons": [np.zeros((4, 2), np.float32)],
            "labels_map": [1, 2],  # not a tensor
        },
        "meta": {"image_id": f"{h}x{w}"},
    }


@pytest.mark.parametrize(
    "key, expected_shape",
    [("mask", (1, 64, 96)), ("prob_map", (64, 96)), ("thresh_mask", (64, 96)),
     ("orig_mask", (1, 60, 140)), ("boxes", (2, 4))],
)
def test_dense_targets_padded_like_the_image(key, expected_shape) -> None:
    batch = collate([_sample(40, 90), _sample(30, 70)], size_divisor=32)
    assert batch.images.shape == (2, 3, 64, 96)
    value = batch.targets[1][key]
    assert tuple(value.shape) == expected_shape
    if key in ("mask", "prob_map", "thresh_mask"):
        # ones inside the 30x70 image, zeros (= masked out) in the padding
        assert value.sum() == 30 * 70 and value[..., :30, :70].min() == 1
    assert batch.targets[1]["labels_map"] == [1, 2]
    assert batch.meta[1]["input_size"] == (30, 70)
