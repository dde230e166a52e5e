"""Tiny fracture_unet settings for the tune tests (8 slices of 64 px, 2 steps per epoch)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "fracture_unet.py"
TINY = [
    "data.train.num_samples=8", "data.val.num_samples=4", "data.train.image_size=64",
    "data.val.image_size=64", "data.batch_size=4", "data.num_workers=0",
    "train.max_epochs=1", "train.progress_bar=false", "train.diagnostics=false",
    "train.num_threads=1", "model.head.decoder_channels=[8,8,8,8,8]",
]


def write_recipe(folder: Path, body: str, name: str = "tiny_tune.py") -> Path:
    """A recipe in ``folder`` that loads fracture_unet.py and runs ``body`` (edits)."""
    path = folder / name
    path.write_text(
        "from detlab.recipe import load_parent\n"
        "from detlab.tune import uniform, log_uniform, int_range, choice, grid\n"
        f"globals().update(load_parent({str(RECIPE)!r}))\n" + body)
    return path
