"""A tiny fit writes its plots (curves, FROC) and sends them, the learning rate and the hparams
to TensorBoard; a resumed run's curves keep the earlier epochs."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detlab.cli import main
from detlab.engine.plot_callbacks import _read_history, epoch_values

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.val.image_size=64", "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=2", "train.progress_bar=false", "train.num_threads=1",
    "model.head.decoder_channels=[8, 8, 8, 8, 8]",
]


def test_tiny_fit_writes_plots_and_tensorboard(tmp_path):
    assert main(["train", str(ROOT / "recipes" / "fracture_unet.py"), *TINY,
                 "--work-dir", str(tmp_path)]) == 0
    run = tmp_path / "fracture_unet" / "version_0"
    for name in ("curves", "froc"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"plots/curves", "plots/froc"} <= set(tags["images"])
    assert [e.step for e in events.Images("plots/curves")] == sorted(
        {e.step for e in events.Images("plots/curves")})
    assert len(events.Images("plots/curves")) == 2  # once per epoch
    assert any(t.startswith("lr-AdamW") for t in tags["scalars"])
    assert "hp/pr_auc" in tags["scalars"]  # final metrics with the hparams
    # the curves' history is what metrics.csv holds, per epoch
    history = _read_history(run / "metrics.csv")
    assert sorted(history) == [0, 1]
    assert {"train/loss", "train/loss_focal", "val/pr_auc", "val/dice"} <= set(history[1])


def test_epoch_values_keep_epoch_level_only():
    values = epoch_values({"train/loss_step": 1.0, "train/loss_epoch": 2.0, "val/AP": 0.5,
                           "lr-SGD": 0.1, "epoch": 3})
    assert values == {"train/loss": 2.0, "val/AP": 0.5, "lr-SGD": 0.1}
    assert "val/AP" not in epoch_values({"val/AP": 0.5}, with_val=False)
