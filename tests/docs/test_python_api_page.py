"""docs/python-api.md is a notebook walk-through whose code runs: every ``python`` block, in
page order, in one namespace, from a fresh folder holding a copy of ``recipes/`` (train a tiny
checkpoint, load it, predict on a file, arrays, a tensor and PIL, plot, settings, evaluate)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from docs_blocks import read_blocks
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "python-api.md"


def test_python_api_page_runs(tmp_path, monkeypatch):
    blocks = [b for b in read_blocks(PAGE) if b.lang == "python"]
    assert len(blocks) >= 6
    assert {b.lang for b in read_blocks(PAGE)} <= {"python", "text", "bash"}
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for block in blocks:
        code = compile(block.body, f"{PAGE.name}:{block.line}", "exec")
        exec(code, namespace)  # noqa: S102 - the page's own code
    result, pred = namespace["result"], namespace["pred"]
    assert result.run_dir == Path("runs/fracture_unet/version_0")
    assert result.best_checkpoint.is_file()
    assert pred.orig_size == (96, 128) and tuple(pred.probs.shape) == (1, 96, 128)
    assert pred.mask.dtype == torch.bool
    assert Image.open(tmp_path / "slice_overlay.png").size == (128, 96)
    assert set(namespace["metrics"]) >= {"pr_auc", "dice"}
