"""Evaluators under DDP: 2 gloo processes on the CPU give the same metrics as 1 process.

The validation set has an odd number of images so the DistributedSampler pads one rank with a
duplicate, which the evaluator must drop (dedup by image_id).
"""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from detlab.data.collate import Collate
from detlab.registry import DATASETS, EVALUATORS, MODELS

MODEL = dict(
    type="Model",
    backbone=dict(type="TimmBackbone", name="resnet18", in_chans=1, pretrained=False),
    head=dict(type="AttentionUNetHead", num_classes=1, decoder_channels=(16, 16, 16, 8, 8),
              loss=dict(type="DiceLoss")),
)
DATA = dict(type="SyntheticSpineCT", split="val", num_samples=11, image_size=64, seed=3,
            positive_fraction=0.5)
EVAL = dict(type="SegmentationEvaluator", threshold=0.5, primary="pr_auc")


def _evaluate(rank: int, world: int) -> dict:
    torch.manual_seed(0)  # identical weights on every rank
    model = MODELS.build(MODEL).eval()
    dataset = DATASETS.build(DATA)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=Collate(32))
    evaluator = EVALUATORS.build(EVAL)
    evaluator.reset()
    with torch.inference_mode():
        for batch in loader:
            evaluator.update(model.predict(batch), batch)
    return evaluator.compute()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metrics = _evaluate(rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    single = _evaluate(0, 1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        multi = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert multi.keys() == single.keys()
        for key, value in single.items():
            assert multi[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
