"""Per-sample and per-batch overheads of the training loader (tools/bench_data.py found them):
packed batch targets across the worker boundary, seeding without CUDA bookkeeping, and the
in-place normalization giving the reference formula's exact floats."""

from __future__ import annotations

import pickle
import traceback
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch
from torch.utils.data import DataLoader

from detlab.data.collate import Collate, PackedTargets
from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.seeding import global_generators


def _targets():
    return [{"boxes": torch.rand(3, 4), "labels": torch.tensor([0, 1, 1]),
             "polygons": [np.zeros((4, 2))], "mask": torch.rand(2, 5, 5)},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "polygons": [], "mask": torch.rand(2, 5, 5)}]


def test_packed_targets_unpickle_to_the_same_plain_list():
    targets = _targets()
    out = pickle.loads(ForkingPickler.dumps(PackedTargets(targets)))
    assert type(out) is list and [list(t) for t in out] == [list(t) for t in targets]
    for a, b in zip(targets, out):
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype, k
        assert len(a["polygons"]) == len(b["polygons"])
    # one tensor per packable key crosses the boundary, not one per image
    fn, (keys, flat, counts, rest) = PackedTargets(targets).__reduce__()
    assert keys == ["boxes", "labels", "mask"] and counts == [[3, 0], [3, 0], [2, 2]]
    assert [tuple(t.shape) for t in flat] == [(3, 4), (3,), (4, 5, 5)]


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(3, 6 + i, 9 - i, generator=g),  # padded to 16 x 16
                "target": {"boxes": torch.rand(i, 4, generator=g), "labels": torch.arange(i)},
                "meta": {"image_id": i}}


def test_worker_batches_equal_in_process_batches():
    a = list(DataLoader(_Samples(), batch_size=2, collate_fn=Collate(16)))
    b = list(DataLoader(_Samples(), batch_size=2, collate_fn=Collate(16), num_workers=1))
    assert type(a[0].targets) is list and type(b[0].targets) is list
    for k, (x, y) in enumerate(zip(a, b)):
        pairs = [_Samples()[2 * k + j]["image"] for j in range(2)]
        ref = torch.stack([torch.nn.functional.pad(im, (0, 16 - im.shape[2], 0, 16 - im.shape[1]))
                           for im in pairs])  # zeros bottom/right, as documented
        assert torch.equal(x.images, ref) and torch.equal(y.images, ref) and x.meta == y.meta
        for tx, ty in zip(x.targets, y.targets):
            assert all(torch.equal(tx[k], ty[k]) for k in tx)


def test_seeding_a_sample_formats_no_stack_trace(monkeypatch):
    calls = []
    real = traceback.format_stack
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: calls.append(1) or real())
    with global_generators(123):
        first = torch.rand(3)
    with global_generators(123):
        assert torch.equal(torch.rand(3), first)  # still seeds torch's CPU generator
    assert calls == []  # torch.manual_seed queued lazy CUDA seeding with a stack trace


def test_normalize_is_bit_identical_to_the_formula():
    ds = SyntheticHelmets(num_samples=1, image_size=(30, 40), mean=(0.4, 0.5, 0.6),
                          std=(0.2, 0.3, 0.25))
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    ref = (image.astype(np.float32) / 255.0 - ds.mean) / ds.std
    assert torch.equal(ds.normalize(image), torch.from_numpy(ref.transpose(2, 0, 1).copy()))


def test_flips_and_pixel_transforms_filter_boxes_once_with_the_same_result():
    import albumentations as A

    from detlab.data.transforms import build_transforms

    cfg = [dict(type="HorizontalFlip", p=0.5),
           dict(type="RandomBrightnessContrast", brightness_limit=0.2, contrast_limit=0.2)]
    fast = build_transforms(cfg, task="detection")  # boxes flipped by detlab, no processor
    assert type(fast).__name__ == "FlipBoxesCompose" and "bboxes" not in fast.processors
    two = build_transforms(cfg + [dict(type="Affine", scale=(0.5, 1.5), p=1.0)],
                           task="detection")
    assert two.processors["bboxes"].params.check_each_transform is True
    crop = build_transforms([dict(type="Crop", x_max=10, y_max=10)], task="detection")
    assert crop.processors["bboxes"].params.check_each_transform is True  # may empty a box
    ref = A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.2, 0.2)],
                    bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                             min_visibility=0.0, clip=True))
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 30, 20], [29, 19, 30, 20], [5, 5, 6, 6]], np.float32)
    for seed in range(20):
        fast.set_random_seed(seed)
        ref.set_random_seed(seed)
        a = fast(image=image, bboxes=boxes, labels=np.arange(3))
        b = ref(image=image, bboxes=boxes, labels=np.arange(3))
        assert np.array_equal(a["image"], b["image"])
        assert np.array_equal(a["bboxes"], b["bboxes"]) and list(a["labels"]) == list(b["labels"])
