"""Training on nothing stops at the start: a DB text run whose words all fall below
min_text_size after the resize fails with the knob and the numbers (or warns and trains with
train.positives.on_empty=warn); train.positives is validated."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detlab.cli import main
from detlab.data.datasets.synthetic_receipts import SyntheticReceipts
from detlab.data.datasets.text_base import TextDataset, TextSample
from detlab.engine.positives_check import check_training_positives, positives_config
from detlab.errors import ConfigError, DataError

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "receipt_dbnet.py"
# words 9.6-14.4 px tall at 96 px; resized to 32 px (x 1/3) they are 3.2-4.8 px < 8
TINY = [
    "data.train.num_samples=4", "data.val.num_samples=2", "data.train.image_size=96",
    "data.val.image_size=96", "data.train.text_height=[0.1, 0.15]",
    "data.val.text_height=[0.1, 0.15]", "data.train.transforms=null", "data.batch_size=2",
    "data.num_workers=0", "train.max_epochs=1", "train.progress_bar=false",
    "model.neck.inner_channels=16", "data.train.img_size=32", "data.val.img_size=32",
    "train.num_threads=1",
]


def test_db_words_below_min_text_size_stop_training(tmp_path, capsys):
    assert main(["train", str(RECIPE), *TINY, "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: data.train gives the model nothing to learn" in err
    assert "below_min_text_size" in err
    # the sampled words: median 12.x px in the image -> ~4 px after resize to 32
    assert "after resize to 32; min_text_size=8: set img_size >= " in err
    assert "or min_text_size <= 4" in err and "on_empty='warn'" in err
    assert not list(tmp_path.glob("**/checkpoints/*.ckpt"))


def test_on_empty_warn_trains_anyway(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="detlab.diagnostics"):
        assert main(["train", str(RECIPE), *TINY, "train.positives.on_empty=warn",
                     "--work-dir", str(tmp_path)]) == 0
    assert "data.train gives the model nothing to learn" in caplog.text
    run = tmp_path / "receipt_dbnet" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    log = (run / "diagnostics" / "warnings.log").read_text()
    assert "start: data.train gives the model nothing to learn" in log
    # the training epoch saw words but no text pixel: the in-training check says so too
    assert "no positive target pixel in 2 training steps (text)" in log


def _datamodule(**train):
    sets = {"train": SyntheticReceipts("train", 4, 96, text_height=(0.1, 0.15), **train),
            "val": SyntheticReceipts("val", 2, 96, text_height=(0.1, 0.15))}
    return SimpleNamespace(cfg={"train": {}, "val": {}}, dataset=sets.__getitem__)


def test_check_counts_both_splits():
    stats = check_training_positives(_datamodule(), {})
    assert [s.split for s in stats] == ["train", "val"]
    assert all(s.objects and s.objects_lost == 0 and s.positive_pixels for s in stats)
    assert check_training_positives(_datamodule(img_size=32), None) == []  # off
    with pytest.raises(DataError, match="min_text_size"):
        check_training_positives(_datamodule(img_size=32), {"max_samples": 2})
    # "near zero": a positive fraction below min_fraction counts as empty
    with pytest.raises(DataError, match="below train.positives.min_fraction=0.5"):
        check_training_positives(_datamodule(), {"min_fraction": 0.5})


@pytest.mark.parametrize("bad", [{"on_empty": "ignore"}, {"min_fraction": 2}, {"oops": 1},
                                 {"max_samples": 0}, "yes"])
def test_bad_config(bad):
    with pytest.raises(ConfigError, match="train.positives"):
        positives_config(bad)


class _FewSurvive(TextDataset):
    """100 x 200 image: one 50 x 20 word and ``small`` 30 x 5 words (below min_text_size)."""

    def __init__(self, small):
        super().__init__()
        self.small = small

    def __len__(self):
        return 1

    def load(self, index):
        quad = lambda x0, y0, x1, y1: np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                                               np.float32)
        words = [quad(10, 10, 60, 30)] + [quad(5 + 35 * (i % 5), 40 + 10 * (i // 5),
                                                35 + 35 * (i % 5), 45 + 10 * (i // 5))
                                          for i in range(self.small)]
        return TextSample(np.zeros((100, 200, 3), np.float32), words,
                          np.zeros(len(words), bool), "f", "mem://f")


def test_near_zero_kept_words_stop_training():
    def dm(small):
        return SimpleNamespace(cfg={"train": {}}, dataset=lambda split: _FewSurvive(small))

    # 1 of 11 words kept (< 10 %): near zero; 1 of 10 is exactly 10 %: a warning only
    with pytest.raises(DataError, match="only 1 of 11 objects survive the pipeline"):
        check_training_positives(dm(10), {})
    (stats,) = check_training_positives(dm(9), {})
    assert (stats.objects, stats.objects_kept) == (10, 1)
    check_training_positives(dm(10), {"min_kept": 0.05})
