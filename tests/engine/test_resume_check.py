"""``--resume`` compares the recipe being resumed with the checkpoint's: architecture changes
and a max_epochs already reached are refused with the diff, other changes are warned about."""

import json
import warnings

import pytest
import torch

from detlab.cli import main
from detlab.engine.resume_check import check_resume, recipe_diff
from detlab.errors import ConfigError

from conftest import RECIPE, TINY


def _ckpt(resolved, epoch=0):
    return {"detlab_recipe": json.dumps({"resolved": json.dumps(resolved)}), "epoch": epoch}


BASE = {"model": {"head": {"type": "H", "channels": [16, 8], "postprocess": {"t": 0.5}},
                  "backbone": {"pretrained": True}},
        "train": {"max_epochs": 4, "optimizer": {"lr": 0.001}, "num_threads": None},
        "data": {"batch_size": 4}}


def _changed(**changes):
    cur = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        node = cur
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return cur


def test_diff_lists_dotted_keys():
    diff = recipe_diff(BASE, _changed(train__optimizer__lr=0.01, data__extra=1))
    assert diff == {"data.extra": (diff["data.extra"][0], 1), "train.optimizer.lr": (0.001, 0.01)}


def test_architecture_change_refused_with_diff():
    with pytest.raises(ConfigError, match=r"model\.head\.channels: \[16, 8\] -> \[16, 16\]"):
        check_resume(_changed(model__head__channels=[16, 16]), _ckpt(BASE), "x.ckpt")


def test_postprocess_and_pretrained_are_not_architecture():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diff = check_resume(_changed(model__head__postprocess={"t": 0.3},
                                     model__backbone__pretrained=False), _ckpt(BASE))
    assert set(diff) == {"model.head.postprocess.t", "model.backbone.pretrained"}
    assert len(caught) == 1  # allowed, but warned about


@pytest.mark.parametrize("max_epochs", [2, 3])
def test_max_epochs_not_above_trained_refused(max_epochs):
    with pytest.raises(ConfigError, match="already finished 3 epoch"):
        check_resume(_changed(train__max_epochs=max_epochs), _ckpt(BASE, epoch=2))
    check_resume(_changed(train__max_epochs=4), _ckpt(BASE, epoch=2))  # one more: fine


def test_other_changes_warn_quiet_keys_do_not():
    with pytest.warns(UserWarning, match=r"train\.optimizer\.lr: 0\.001 -> 0\.01"):
        check_resume(_changed(train__optimizer__lr=0.01), _ckpt(BASE))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_resume(_changed(train__num_threads=1, train__max_epochs=5), _ckpt(BASE))


def test_cli_resume_errors_are_one_line(trained, capsys):
    work, run_dir = trained
    base = [a for a in TINY if not a.startswith("train.max_epochs")]

    def err(extra):
        rc = main(["train", str(RECIPE), *base, *extra, "--resume", "--work-dir", str(work)])
        text = capsys.readouterr().err
        assert rc == 2 and text.startswith("error: ") and "Traceback" not in text, text
        return text

    text = err(["train.max_epochs=5", "model.head.decoder_channels=[16, 16, 16, 8, 4]"])
    assert "model.head.decoder_channels: [16, 16, 16, 8, 8] -> [16, 16, 16, 8, 4]" in text
    # the shared run may already have been resumed by tests/test_cli.py
    done = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] + 1
    text = err([f"train.max_epochs={done}"])
    assert f"train.max_epochs={done} " in text and f"already finished {done} epoch" in text
    assert not (work / "fracture_unet" / "version_1").exists()
