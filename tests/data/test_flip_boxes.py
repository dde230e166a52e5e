"""FlipBoxesCompose: a detection pipeline of pixel-only transforms and flips moves its boxes
itself and gives albumentations' numbers bit for bit (albumentations' own box processor is the
oracle), with the same random draws, through the dataset too."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.seeding import SeededDataset
from detlab.data.transforms import FlipBoxesCompose, SeededCompose, build_transforms

CFG = [dict(type="HorizontalFlip", p=0.5), dict(type="VerticalFlip", p=0.5),
       dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2, p=0.5),
       dict(type="HorizontalFlip", p=0.5)]


def _reference(cfg):
    """The pipeline as build_transforms made it before: albumentations moves the boxes."""
    built = [getattr(A, c["type"])(**{k: v for k, v in c.items() if k != "type"}) for c in cfg]
    return SeededCompose(built, bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["labels"], min_visibility=0.0, clip=True,
        check_each_transform=False))


def _boxes(rng, h, w, n):
    xy = rng.uniform(0, 1, (n, 2)) * [w, h]
    wh = rng.uniform(1e-3, 0.6, (n, 2)) * [w, h]
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
    edge = np.array([[0, 0, w, h], [w - 1, h - 1, w, h], [0, 0, 1e-3, 1e-3],
                     [w / 3, h / 7, w / 3 + 1e-4, h / 7 + 1e-4]])
    return np.concatenate([boxes, edge]).astype(np.float32)


def test_flip_pipelines_use_it_and_others_keep_the_box_processor():
    assert isinstance(build_transforms(CFG, task="detection"), FlipBoxesCompose)
    affine = build_transforms(CFG + [dict(type="Affine", scale=(0.5, 1.5))], task="detection")
    assert not isinstance(affine, FlipBoxesCompose) and "bboxes" in affine.processors
    assert not isinstance(build_transforms(CFG, task="segmentation"), FlipBoxesCompose)


@pytest.mark.parametrize("shape", [(37, 53), (160, 192), (480, 640)])
def test_same_images_boxes_and_labels_as_albumentations(shape):
    h, w = shape
    fast, ref = build_transforms(CFG, task="detection"), _reference(CFG)
    rng = np.random.default_rng(h)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    flipped = 0
    for seed in range(60):
        boxes = _boxes(rng, h, w, int(rng.integers(0, 9)))
        if seed % 10 == 0:
            boxes = boxes[:0]
        labels = np.arange(len(boxes))
        fast.set_random_seed(seed)
        ref.set_random_seed(seed)
        a = fast(image=image, bboxes=boxes, labels=labels)
        b = ref(image=image, bboxes=boxes, labels=labels)
        assert np.array_equal(a["image"], b["image"])
        ab = np.asarray(a["bboxes"]).reshape(-1, 4)
        bb = np.asarray(b["bboxes"], np.float64).reshape(-1, 4)
        assert np.array_equal(ab, bb), (seed, ab - bb)
        assert np.array_equal(np.asarray(a["labels"]), np.asarray(b["labels"], np.int64))
        flipped += not np.array_equal(a["image"], image)
    assert flipped > 30  # the flips and the colour change did run


def test_dataset_samples_equal_the_albumentations_pipeline():
    ds = SyntheticHelmets(num_samples=12, image_size=(96, 128), transforms=CFG)
    assert isinstance(ds.transforms, FlipBoxesCompose)
    new = [SeededDataset(ds, 3)[i] for i in range(12)]
    ds.transforms = _reference(CFG)
    old = [SeededDataset(ds, 3)[i] for i in range(12)]
    for a, b in zip(new, old):
        assert torch.equal(a["image"], b["image"])
        for k in b["target"]:
            assert torch.equal(a["target"][k], b["target"][k]), k
