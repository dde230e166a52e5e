"""A checkpoint runs no code: crafted checkpoints (every field passes ``weights_only``) whose
payload would create a sentinel file, and the opt-ins that make user code work again."""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detlab.cli import main
from detlab.engine.checkpoint import load_checkpoint, load_task
from detlab.engine.task import RECIPE_KEY, DetlabTask
from detlab.errors import CheckpointError, ConfigError
from detlab.recipe import load

from conftest import RECIPE, TINY


def _payload(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').write('ran')\n"


def _craft(trained, tmp_path: Path, edit) -> Path:
    """The shared tiny run's last.ckpt with its stored provenance edited by ``edit(prov)``."""
    _, run_dir = trained
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    prov = json.loads(ckpt[RECIPE_KEY])
    edit(prov)
    ckpt[RECIPE_KEY] = json.dumps(prov)
    out = tmp_path / "crafted" / "checkpoints" / "last.ckpt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    torch.load(out, weights_only=True)  # the crafted file passes weights_only
    return out


def _add_file_payload(sentinel: Path):
    def edit(prov):
        # A new module name per test: names already in sys.modules were skipped even by the
        # old code.
        prov["files"][f"detlab_recipe_evil_{abs(hash(str(sentinel)))}"] = {
            "path": "evil.py", "text": _payload(sentinel), "sha256": "0" * 64,
        }
        for info in prov["files"].values():
            info["text"] = _payload(sentinel) + info["text"]
    return edit


def test_recipe_file_code_is_not_executed_by_eval(trained, tmp_path, capsys):
    sentinel = tmp_path / "sentinel"
    ckpt = _craft(trained, tmp_path, _add_file_payload(sentinel))
    # Registered types only: loads and evaluates without any opt-in, running nothing.
    assert main(["eval", str(ckpt), "--quiet"]) == 0
    assert "pr_auc=" in capsys.readouterr().out
    assert not sentinel.exists()
    task = load_task(ckpt)
    assert type(task.model.head).__name__ == "AttentionUNetHead"
    assert not sentinel.exists()


def test_recipe_file_code_is_not_executed_by_resume(trained, tmp_path):
    sentinel = tmp_path / "sentinel"
    ckpt = _craft(trained, tmp_path, _add_file_payload(sentinel))
    recipe, _ = load_checkpoint(ckpt)  # what `detlab train --resume` reads
    assert recipe["model"]["head"]["type"] == "AttentionUNetHead"
    args = ["train", str(RECIPE), *[a for a in TINY if not a.startswith("train.max_epochs")],
            "train.max_epochs=2", "--resume", str(ckpt), "--work-dir", str(tmp_path / "w")]
    assert main(args) == 0
    assert not sentinel.exists()


def _evil_components(sentinel: Path, victim: Path) -> dict:
    return {
        "os.system": {"type": "os.system", "command": f"touch {sentinel}"},
        "subprocess.Popen": {"type": "subprocess.Popen", "args": ["touch", str(sentinel)]},
        "builtins.eval": {"type": "builtins.eval", "source": _payload(sentinel)},
        "os.remove": {"type": "os.remove", "path": str(victim)},
    }


@pytest.mark.parametrize("where", ["evaluator", "model.head.loss", "data.val"])
@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "builtins.eval", "os.remove"])
def test_dotted_path_payloads_are_refused(trained, tmp_path, capsys, where, name):
    sentinel, victim = tmp_path / "sentinel", tmp_path / "victim"
    victim.write_text("keep me")
    evil = _evil_components(sentinel, victim)[name]

    def edit(prov):
        resolved = json.loads(prov["resolved"])
        *parents, last = where.split(".")
        node = resolved
        for key in parents:
            node = node[key]
        node[last] = evil
        prov["resolved"] = json.dumps(resolved)

    ckpt = _craft(trained, tmp_path, edit)
    rc = main(["eval", str(ckpt), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    module = name.rpartition(".")[0]
    assert f"{where}.type={name!r} would import module {module!r}" in err
    assert "--trust-recipe" in err and "--recipe" in err
    with pytest.raises(CheckpointError, match="registered types only"):
        load_task(ckpt)
    # Even trusted, a dotted path cannot name a standard-library callable.
    with pytest.raises(ConfigError, match="standard library"):
        task = load_task(ckpt, trust=True)
        if where == "data.val":  # data is built when evaluated
            from detlab.data.datamodule import DataModule

            DataModule(task.recipe.section("data"), size_divisor=32).val_dataloader()
    assert not sentinel.exists() and victim.read_text() == "keep me"


def test_every_checkpoint_command_refuses(trained, tmp_path, capsys):
    sentinel = tmp_path / "sentinel"

    def edit(prov):
        resolved = json.loads(prov["resolved"])
        resolved["evaluator"] = {"type": "os.system", "command": f"touch {sentinel}"}
        prov["resolved"] = json.dumps(resolved)

    ckpt = str(_craft(trained, tmp_path, edit))
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for argv in (["eval", ckpt], ["predict", ckpt, str(image), "--out", str(tmp_path / "o")],
                 ["sweep", ckpt, "evaluator.threshold=0.1,0.5"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "evaluator.type='os.system' would import module 'os'" in err, argv
        assert main([*argv, "--trust-recipe"]) == 2  # trusted, still no stdlib callable
        assert "standard library" in capsys.readouterr().err
    assert not sentinel.exists()


def test_lowercase_namespace_functions_are_refused(trained, tmp_path):
    # resolve_transform falls back to getattr(albumentations, name): functions such as
    # albumentations.save must not be reachable from a checkpoint.
    def edit(prov):
        resolved = json.loads(prov["resolved"])
        resolved["evaluator"] = {"type": "save", "filepath": str(tmp_path / "written")}
        prov["resolved"] = json.dumps(resolved)
        prov["files"] = {}

    ckpt = _craft(trained, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"evaluator.type='save' is neither a registered "
                       r"name nor an albumentations or torch.optim class"):
        load_task(ckpt)
    assert not (tmp_path / "written").exists()


MY_YOLO = '''
"""A user's own head, in a module next to the recipe."""
from detlab.models.heads import AttentionUNetHead


class MyHead(AttentionUNetHead):
    """AttentionUNetHead under the user's own name."""
'''


def test_user_module_head_needs_trust_from_another_folder(tmp_path, monkeypatch, capsys):
    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    proj.mkdir()
    elsewhere.mkdir()
    (proj / "my_yolo.py").write_text(MY_YOLO)
    (proj / "r.py").write_text(textwrap.dedent(f"""
        from detlab.recipe import load_parent
        _base = load_parent({str(RECIPE)!r})
        model, data, train, evaluator = (_base[k] for k in ("model", "data", "train", "evaluator"))
        model["head"]["type"] = "my_yolo.MyHead"
    """))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(proj)
    recipe = load("r.py", TINY)  # relative path, as `detlab train r.py` run in proj/
    task = DetlabTask(recipe)
    ckpt = tmp_path / "my.ckpt"
    torch.save({"state_dict": task.state_dict(), RECIPE_KEY: json.dumps(recipe.provenance())},
               ckpt)
    # A fresh process elsewhere: my_yolo is neither imported nor importable.
    sys.modules.pop("my_yolo", None)
    sys.path[:] = [p for p in sys.path if p != str(proj)]
    monkeypatch.chdir(elsewhere)
    try:
        assert main(["eval", str(ckpt), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "model.head.type='my_yolo.MyHead' would import module 'my_yolo'" in err
        assert "my_yolo" not in sys.modules
        assert main(["eval", str(ckpt), "--quiet", "--trust-recipe"]) == 0
        assert type(load_task(ckpt, trust=True).model.head).__name__ == "MyHead"
        # The user's own recipe next to the checkpoint: their file runs, the weights must fit.
        assert main(["eval", str(ckpt), *TINY, "--quiet", "--recipe", str(proj / "r.py")]) == 0
        rc = main(["eval", str(ckpt), *TINY[:-1], "model.head.decoder_channels=[8, 8, 8, 8, 8]",
                   "--quiet", "--recipe", str(proj / "r.py")])
        assert rc == 2 and "does not match the model of recipe" in capsys.readouterr().err
    finally:
        sys.modules.pop("my_yolo", None)


def test_class_defined_in_recipe_file_needs_trust(tmp_path, monkeypatch, capsys):
    path = tmp_path / "own.py"
    path.write_text(textwrap.dedent(f"""
        from detlab.models.heads import AttentionUNetHead
        from detlab.recipe import load_parent
        from detlab.registry import HEADS

        @HEADS.register
        class _TrustTestHead(AttentionUNetHead):
            '''Defined in the recipe file.'''

        _base = load_parent({str(RECIPE)!r})
        model, data, train, evaluator = (_base[k] for k in ("model", "data", "train", "evaluator"))
        model["head"]["type"] = _TrustTestHead
    """))
    recipe = load(path, TINY)
    ckpt = tmp_path / "own.ckpt"
    torch.save({"state_dict": DetlabTask(recipe).state_dict(),
                RECIPE_KEY: json.dumps(recipe.provenance())}, ckpt)
    from detlab.registry import HEADS

    HEADS._items.pop("_TrustTestHead")  # a fresh process
    for name in list(recipe.files):
        sys.modules.pop(name, None)
    with pytest.raises(CheckpointError, match=r"model.head.type='_TrustTestHead' is not "
                       r"registered; it would come from executing the stored recipe file"):
        load_task(ckpt)
    assert "_TrustTestHead" not in HEADS._items
    try:
        assert type(load_task(ckpt, trust=True).model.head).__name__ == "_TrustTestHead"
    finally:
        HEADS._items.pop("_TrustTestHead", None)
