"""Atomic checkpoint writes, appending CSV logs and the metrics line."""

from types import SimpleNamespace

import pytest

from detlab.engine.callbacks import AppendingCSVLogger, AtomicModelCheckpoint, format_metrics


class _Strategy:
    def barrier(self, name=None):
        pass


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous complete checkpoint")

    def failing_save(path, weights_only=False):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt  # killed while writing

    trainer = SimpleNamespace(save_checkpoint=failing_save, is_global_zero=True,
                              strategy=_Strategy(), global_step=3, loggers=[])
    cb = AtomicModelCheckpoint(dirpath=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cb._save_checkpoint(trainer, str(target))
    assert target.read_bytes() == b"previous complete checkpoint"


def test_successful_save_replaces_file(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")

    def save(path, weights_only=False):
        with open(path, "wb") as f:
            f.write(b"new")

    trainer = SimpleNamespace(save_checkpoint=save, is_global_zero=True, strategy=_Strategy(),
                              global_step=3, loggers=[])
    AtomicModelCheckpoint(dirpath=tmp_path)._save_checkpoint(trainer, str(target))
    assert target.read_bytes() == b"new" and not (tmp_path / "last.ckpt.tmp").exists()


def test_csv_logger_appends_on_resume(tmp_path):
    first = AppendingCSVLogger(save_dir=tmp_path, name="r", version="v")
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = AppendingCSVLogger(save_dir=tmp_path, name="r", version="v")
    second.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    second.save()
    lines = (tmp_path / "r" / "v" / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["a", "b", "step"]
    assert len(lines) == 3  # both rows kept


def test_format_metrics_primary_first():
    line = format_metrics({"dice": 0.5, "pr_auc": 0.25, "dice/0": 0.1}, primary="pr_auc")
    assert line == "pr_auc=0.25  dice=0.5"
