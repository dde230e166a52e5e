"""Progress output: plain lines when stdout is not a terminal (CI logs), the tqdm bar with the
full run name in a terminal, Lightning's closing message on its own line."""

import io
import os
import re
import subprocess
import sys

import pytest

from detlab.cli import main
from detlab.engine.progress import LineProgressBar, RunNameTQDMBar, build_progress_bar
from detlab.errors import ConfigError

from conftest import RECIPE, ROOT

SMALL = [
    "data.train.num_samples=16", "data.val.num_samples=4", "data.train.image_size=64",
    "data.val.image_size=64", "data.batch_size=2", "data.num_workers=0", "train.max_epochs=1",
    "train.num_threads=1", "train.diagnostics=false", "train.positives=None",
    "model.head.decoder_channels=[8, 8, 8, 8, 8]",
]
LINE = re.compile(
    r"^\[fracture_unet/version_0\] epoch 0  step (\d+)/8  train/loss_step=[0-9.e+-]+  "
    r"[0-9.]+ it/s$"
)


def test_lines_every_n_steps_when_stdout_is_not_a_terminal(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "detlab", "train", str(RECIPE), *SMALL, "train.progress_every=3",
         "--work-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    lines = out.stdout.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := LINE.match(line))]
    assert steps == [3, 6, 8]  # every 3rd step and the epoch's last one
    assert "\r" not in out.stdout and "v_num" not in out.stdout
    # Lightning's closing message starts a line of its own
    assert any(line.startswith("`Trainer.fit` stopped: `max_epochs=1` reached.") for line in lines)


def test_terminal_gets_the_tqdm_bar_with_the_run_name(tmp_path, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(build_progress_bar(5, Terminal()), RunNameTQDMBar)
    assert isinstance(build_progress_bar(5, io.StringIO()), LineProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["train", str(RECIPE), *SMALL, "--work-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fracture_unet/version_0 epoch 0: 100%" in out
    assert "v_num" not in out
    bar_end = out.rindex("fracture_unet/version_0 epoch 0: 100%")
    assert "\n" in out[bar_end:]  # the bar was closed with its newline before anything else


def test_progress_every_is_checked():
    with pytest.raises(ConfigError, match=r"train: progress_every must be an int >= 1, got 0"):
        LineProgressBar(0)
    with pytest.raises(ConfigError, match=r"progress_every must be an int >= 1, got True"):
        LineProgressBar(True)
