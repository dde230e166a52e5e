"""A file that is not a detlab checkpoint says so in one line, ``not a detlab checkpoint:
<path> (<reason>)``, through the CLI too, instead of torch's unpickling text (before: "cannot
read checkpoint …: UnpicklingError: Weights only load failed. In PyTorch 2.6 …")."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from detlab.cli import main
from detlab.engine.checkpoint import read_checkpoint
from detlab.errors import CheckpointError


class _Custom:  # a pickled class: weights_only loading refuses it
    pass


def _files(tmp_path):
    full = tmp_path / "full.ckpt"
    torch.save({"detlab_recipe": "{}", "state_dict": {"w": torch.zeros(500)}}, full)
    data = full.read_bytes()
    cases = {
        "random.ckpt": (os.urandom(256), "not a file torch.save writes: 256 bytes"),
        "truncated.ckpt": (data[: len(data) // 2], "truncated or damaged torch zip archive"),
        "empty.ckpt": (b"", "empty file"),
        "notes.ckpt": (b"epoch 3, loss 0.1\n", "not a file torch.save writes: 18 bytes"),
    }
    paths = {}
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        paths[name] = reason
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    paths["plain.ckpt"] = "no 'detlab_recipe' entry"
    torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
    paths["list.ckpt"] = "it holds a list, not the dict"
    torch.save(collections.OrderedDict(model=_Custom()), tmp_path / "objects.ckpt")
    paths["objects.ckpt"] = "it holds Python objects beyond tensors"
    return paths


def test_wrong_files_say_not_a_detlab_checkpoint(tmp_path):
    for name, reason in _files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"not a detlab checkpoint: {tmp_path / name} ("), message
        assert reason in message and message.endswith(")"), message
        for torch_text in ("Weights only", "PytorchStreamReader", "load key", "miniz"):
            assert torch_text not in message, message


def test_cli_prints_the_reason_on_one_line(tmp_path, capsys):
    _files(tmp_path)
    assert main(["eval", str(tmp_path / "random.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: not a detlab checkpoint: {tmp_path / 'random.ckpt'} (")
    assert err.count("\n") == 1 and "Traceback" not in err
