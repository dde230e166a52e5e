"""LesionPatches: share of lesion patches, lesion inside positive patches, none in negatives,
padding of small slices, transforms after the crop, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.data.datasets.lesion_patches import LesionPatches
from detlab.errors import ConfigError
from detlab.registry import DATASETS


class Slices:
    """Slice source: 20 slices of 40 x 50, slice i has a 2 x 2 lesion at (i // 5, w - 5) when
    i % 5 == 0; the image encodes pixel positions so crops can be checked."""

    def __init__(self, n: int = 20, size=(40, 50)) -> None:
        self.n, self.size = n, size
        self.made = []

    def __len__(self) -> int:
        return self.n

    def positive_flags(self) -> np.ndarray:
        return np.arange(self.n) % 5 == 0

    def read_slice(self, i):
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        image = np.stack([yy, xx], axis=-1)
        mask = np.zeros((h, w), np.uint8)
        if i % 5 == 0:
            mask[i // 5 : i // 5 + 2, w - 5 : w - 3] = 1
        return image, mask, {"image_id": f"s{i}", "case_id": "c"}

    def make_sample(self, image, mask, meta):
        self.made.append(image.shape)
        return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                "target": {"mask": torch.from_numpy(mask.astype(np.float32))[None]},
                "meta": meta}


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_share_of_lesion_patches(ratio):
    ds = LesionPatches(Slices(), patch_size=16, positive_ratio=ratio, num_samples=300)
    rng = np.random.default_rng(0)
    draws = [ds.draw(rng) for _ in range(300)]
    has_lesion = np.array([m.any() for _, m, _ in draws])
    assert has_lesion.mean() == pytest.approx(ratio, abs=0.08)
    for image, mask, meta in draws:
        top, left = meta["crop"]
        assert image.shape == (16, 16, 2) and mask.shape == (16, 16)
        assert image[0, 0, 0] == top and image[0, 0, 1] == left  # the crop is where it says
        assert 0 <= top <= 40 - 16 and 0 <= left <= 50 - 16


def test_items_go_through_make_sample_and_torch_seed():
    src = Slices()
    ds = LesionPatches(src, patch_size=(8, 12), positive_ratio=0.5, num_samples=7)
    assert len(ds) == 7
    torch.manual_seed(3)
    a = ds[0]
    torch.manual_seed(3)
    b = ds[0]
    assert torch.equal(a["image"], b["image"]) and a["meta"]["crop"] == b["meta"]["crop"]
    assert a["image"].shape == (2, 8, 12) and src.made[-1] == (8, 12, 2)
    assert "@" in a["meta"]["image_id"]


def test_small_slices_are_padded():
    ds = LesionPatches(Slices(size=(10, 12)), patch_size=16, positive_ratio=1.0)
    image, mask, meta = ds.draw(np.random.default_rng(1))
    assert image.shape == (16, 16, 2) and meta["crop"] == (0, 0) and mask.sum() == 4
    assert image[10:, :, :].max() == 0 and image[:, 12:, :].max() == 0


def test_built_from_config_with_root_passed_on(monkeypatch, tmp_path):
    seen = {}

    @DATASETS.register(name="_RootProbe")
    class RootProbe(Slices):
        def __init__(self, root=None):
            seen["root"] = root
            super().__init__()

    ds = DATASETS.build(dict(type="LesionPatches", dataset=dict(type="_RootProbe"),
                             patch_size=8), root="/data/Task")
    assert seen["root"] == "/data/Task" and len(ds) == 20
    DATASETS._items.pop("_RootProbe")


@pytest.mark.parametrize("kwargs,match", [
    (dict(patch_size=0), "patch_size"),
    (dict(patch_size=(8,)), "patch_size"),
    (dict(positive_ratio=1.5), "positive_ratio"),
    (dict(num_samples=0), "num_samples"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LesionPatches(Slices(), **kwargs)


def test_needs_slice_source_with_lesions():
    with pytest.raises(ConfigError, match="read_slice"):
        LesionPatches([1, 2, 3])

    class NoLesions(Slices):
        def positive_flags(self):
            return np.zeros(self.n, bool)

    with pytest.raises(ConfigError, match="no slice with a lesion"):
        LesionPatches(NoLesions(), positive_ratio=0.5)
    assert len(LesionPatches(NoLesions(), positive_ratio=0.0, patch_size=8)) == 20
