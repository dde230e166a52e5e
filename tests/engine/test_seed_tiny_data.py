"""Same seed, same run with the tiny-object data tools: helmet_yolo_p2 trained on
CopyPaste(Mixup(ObjectCrops(frames))) with SizeClassSampler and multi-scale above the base size
gives identical weights twice, the second time with a loader worker."""

from pathlib import Path

import torch

from detlab.engine.trainer import fit
from detlab.recipe import load

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "helmet_yolo_p2.py"
FRAMES = ("{'type': 'SyntheticHelmets', 'split': 'train', 'num_samples': 8, "
          "'image_size': (72, 128), 'img_size': 64, 'max_objects': 6, 'min_size': 6, "
          "'max_size': 16, 'transforms': [{'type': 'HorizontalFlip', 'p': 0.5}]}")
TINY = [
    "data.val.num_samples=4", "data.val.image_size=64", "data.val.img_size=64",
    "data.batch_size=4", "train.max_epochs=1",
    "train.progress_bar=false", "train.diagnostics=false", "train.num_threads=1",
    "train.seed=3", "data.multi_scale=(1.0,1.5)",
    "data.sampler={'type': 'SizeClassSampler', 'tiny_weight': 2.0, 'combine': 'max'}",
    "data.train={'type': 'CopyPaste', 'p': 0.5, 'dataset': {'type': 'Mixup', 'p': 0.5, "
    f"'dataset': {{'type': 'ObjectCrops', 'ratio': 0.7, 'dataset': {FRAMES}}}}}}}",
]


def _weights(work, workers):
    run_dir, _, _ = fit(load(RECIPE, [*TINY, f"data.num_workers={workers}"]), work_dir=work)
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_same_seed_same_weights_with_and_without_workers(tmp_path):
    a = _weights(tmp_path / "a", 0)
    b = _weights(tmp_path / "b", 1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
