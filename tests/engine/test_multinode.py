"""Two nodes on one machine: ``detlab train`` launched twice, torchrun-style (``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE=2``, ``NODE_RANK`` 0/1, ``LOCAL_RANK=0``), Lightning
``num_nodes=2, devices=1, strategy="ddp"`` over gloo. The validation metrics the two nodes log
(each node sees half of an odd-sized validation set, one padded with a duplicate) must equal
one process evaluating the checkpoint they wrote on the whole set: the evaluator gathers
across nodes and drops the duplicate.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "fracture_unet.py"
OVERRIDES = [
    "data.train.num_samples=8", "data.val.num_samples=7", "data.train.image_size=64",
    "data.val.image_size=64", "+data.val.positive_fraction=0.6", "data.batch_size=2",
    "data.num_workers=0",
    "train.max_epochs=1", "train.progress_bar=false", "train.num_threads=1",
    "model.head.decoder_channels=[16, 16, 16, 8, 8]", "model.backbone.name=resnet10t",
    "train.accelerator=cpu", "train.num_nodes=2", "train.devices=1", "train.strategy=ddp",
]
TIMEOUT_S = 240  # a node that waits for a peer that died must not hang the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(node_rank: int, port: int, work: Path) -> subprocess.Popen:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
               NODE_RANK=str(node_rank), LOCAL_RANK="0", PL_TORCH_DISTRIBUTED_BACKEND="gloo",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    env.pop("RANK", None)  # rank = NODE_RANK * devices + LOCAL_RANK, as Lightning computes it
    return subprocess.Popen(
        [sys.executable, "-m", "detlab", "train", str(RECIPE), *OVERRIDES,
         "--work-dir", str(work)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_two_nodes_log_the_metrics_of_one_process(tmp_path):
    work = tmp_path / "runs"
    port = _free_port()
    nodes = [_launch(rank, port, work) for rank in (0, 1)]
    logs = []
    try:
        for node in nodes:
            out, _ = node.communicate(timeout=TIMEOUT_S)
            logs.append(out)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.communicate()
    for rank, (node, log) in enumerate(zip(nodes, logs)):
        assert node.returncode == 0, f"node {rank}:\n{log[-3000:]}"
    assert "final validation:" in logs[0] and "final validation:" not in logs[1]  # rank 0 prints
    assert "distributed_backend=gloo" in logs[0], logs[0][-2000:]
    assert "Starting with 2 processes" in logs[0], logs[0][-2000:]  # one per node

    run_dir = work / "fracture_unet" / "version_0"
    # one run folder: node 1 chose version_1 before it knew its rank, and must not create it
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/pr_auc")]
    assert len(rows) == 1
    logged = {k[4:]: float(v) for k, v in rows[0].items() if k.startswith("val/") and v}

    torch.set_num_threads(1)
    out = tmp_path / "single.json"  # one process, all 7 images
    assert main(["eval", str(run_dir / "checkpoints" / "last.ckpt"), "--json", str(out)]) == 0
    single = json.loads(out.read_text())
    single = {k: v for k, v in single.items() if v == v}  # NaN ("n/a") is not logged
    assert single["prevalence"] > 0 and len(single) >= 10
    assert set(single) <= set(logged), set(single) - set(logged)
    for key, value in single.items():
        assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
