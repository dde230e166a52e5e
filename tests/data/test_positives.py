"""count_positives: words, boxes and mask pixels that survive the pipeline, checked by hand on
tiny synthetic samples; the DB generator's per-word drop reasons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from detlab.data.datasets.detection_base import Annotations, DetectionDataset
from detlab.data.datasets.text_base import TextDataset, TextSample
from detlab.data.db_targets import make_db_targets, region_reasons
from detlab.data.positives import count_positives, sample_indices


def _quad(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


class _Words(TextDataset):
    """One 40 x 100 image with four words: a 50 x 20 word (kept), a 25 x 5 word (below
    min_text_size 8), a ### word and a word entirely left of the image (clipped away)."""

    def __init__(self, **kw):
        super().__init__(**kw)

    def __len__(self):
        return 1

    def load(self, index):
        words = [_quad(10, 10, 60, 30), _quad(70, 10, 95, 15), _quad(10, 32, 40, 38),
                 _quad(-30, 20, -6, 36)]
        return TextSample(np.zeros((40, 100, 3), np.float32), words,
                          np.array([False, False, True, False]), "w", "mem://w")


def test_text_counts_by_hand():
    s = count_positives(_Words(), "train")
    # Kept word: D = A (1 - 0.4^2) / L = 1000 * 0.84 / 140 = 6 px -> kernel x 16..54, y 16..24
    # (cv2.fillPoly includes the border pixels): 39 * 9 = 351 pixels.
    assert (s.images, s.images_with_positives, s.objects, s.objects_lost) == (1, 1, 3, 2)
    assert (s.positive_pixels, s.total_pixels) == (351, 4000)
    assert s.fraction == pytest.approx(351 / 4000)
    assert s.lost_reasons == {"ignore": 1, "clipped_away": 1, "below_min_text_size": 1}
    # shorter box sides of the non-### words: file 20, 5, 16 -> 16; at input (after clip) 20, 5
    assert s.median_size_orig == 16.0 and s.median_size_input == 12.5
    assert "3 words, 1 kept, 2 lost" in s.summary() and "1 marked ignore" in s.summary()


def test_text_counts_after_resize_and_hint():
    # long side 100 -> 50: the kept word is 25 x 10 (D = 250 * 0.84 / 70 = 3): 20 x 5 kernel
    s = count_positives(_Words(img_size=50), "val")
    assert (s.objects, s.objects_lost, s.positive_pixels, s.total_pixels) == (3, 2, 100, 1000)
    # long side 100 -> 20: every word is below 8 px
    s = count_positives(_Words(img_size=20), "train")
    assert (s.objects_lost, s.positive_pixels, s.images_with_positives) == (3, 0, 0)
    assert s.lost_reasons["below_min_text_size"] == 2
    # median word height 16 px in the file -> 2.5 px at input (20 and 5 px at scale 0.2 -> 4, 1)
    assert s.hint() == ("median word height 16.0 px in the image -> 2.5 px after resize to 20; "
                        "min_text_size=8: set img_size >= 64 or min_text_size <= 2")


def test_region_reasons_match_the_maps():
    words = [_quad(10, 10, 60, 30), _quad(70, 10, 95, 15), _quad(10, 32, 40, 38),
             np.array([[1, 1], [5, 5]], np.float32)]
    reasons = region_reasons(words, [False, False, True, False])
    assert reasons == ["kept", "below_min_text_size", "ignore", "degenerate"]
    # zero-area word with min_text_size 0: its offset D is 0, nothing to shrink
    line = np.array([[10, 10], [30, 10], [20, 10]], np.float32)
    assert region_reasons([line], None, min_text_size=0.0) == ["shrunk_to_nothing"]
    maps = make_db_targets(words, [False, False, True, False], 40, 100)
    assert maps["prob_map"].sum() == 351  # only the "kept" word is drawn


class _Boxes(DetectionDataset):
    """One 100 x 200 (h x w) image; letterboxed to 100 x 100 (scale 0.5, 25 px bands)."""

    class_names = ["a"]

    def __len__(self):
        return 1

    def annotations(self, index):
        boxes = np.array([[0, 0, 40, 20],       # -> 20 x 10 at input: kept
                          [150, 50, 152, 52],   # -> 1 x 1: below min_size 4
                          [210, 0, 230, 10],    # right of the image: clipped away
                          [50, 50, 60, 60]],    # ignore
                         np.float32)
        return Annotations("b", "mem://b", boxes, np.zeros(4, np.int64),
                           np.array([False, False, False, True]), (100, 200))

    def load_image(self, ann):
        return np.zeros((100, 200, 3), np.uint8)


def test_box_counts_by_hand():
    ds = _Boxes(img_size=100, stride=None)
    s = count_positives(ds, "train", min_size=4)
    assert (s.objects, s.objects_lost, s.images_with_positives) == (3, 2, 1)
    assert (s.positive_pixels, s.total_pixels) == (200, 50 * 100)  # content region 50 x 100
    assert s.lost_reasons == {"ignore": 1, "clipped_or_dropped": 1, "below_min_size": 1}
    s = count_positives(ds, "train")  # no size limit: the 1 x 1 box adds its pixel
    assert (s.objects_lost, s.positive_pixels) == (1, 201)


class _Masks(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        mask = torch.zeros(1, 10, 10)
        if index == 0:
            mask[0, 1:3, 1:3] = 1  # 4 px
            mask[0, 6, 4:7] = 1    # 3 px, not touching the first (8-connectivity)
        return {"image": torch.zeros(1, 10, 10), "target": {"mask": mask}, "meta": {}}


def test_mask_counts_by_hand():
    s = count_positives(_Masks(), "val")
    assert (s.images, s.images_with_positives, s.objects, s.objects_lost) == (2, 1, 2, 0)
    assert (s.positive_pixels, s.total_pixels, s.fraction) == (7, 200, 0.035)


def test_even_deterministic_sampling():
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(3, 200) == [0, 1, 2]
    assert sample_indices(1000, 5) == [0, 250, 500, 749, 999]


def test_unknown_targets_are_named():
    from detlab.data.positives import UnknownTargets

    class _Points(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return {"image": torch.zeros(1, 4, 4), "target": {"points": torch.zeros(2, 2)}}

    with pytest.raises(UnknownTargets, match=r"sample 0 of split 'train'.*\['points'\]"):
        count_positives(_Points(), "train")
