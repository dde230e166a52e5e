"""Overrides may follow the options of every recipe/checkpoint command."""

from __future__ import annotations

from pathlib import Path

from detlab.cli import build_parser, cmd_train


def test_overrides_after_options_are_overrides():
    p = build_parser()
    a = p.parse_args(["predict", "x.ckpt", "img.png", "--out", "o", "data.num_workers=0",
                      "--save-probs"])
    assert a.items == ["img.png", "data.num_workers=0"] and a.out == "o" and a.save_probs
    a = p.parse_args(["eval", "c.ckpt", "--split", "val", "evaluator.iou_type=bbox"])
    assert a.overrides == ["evaluator.iou_type=bbox"] and a.split == "val"
    a = p.parse_args(["show", "r.py", "data.batch_size=4"])
    assert a.overrides == ["data.batch_size=4"]
    a = p.parse_args(["train", "r.py", "--work-dir", "w", "train.max_epochs=3"])
    assert a.overrides == ["train.max_epochs=3"] and a.work_dir == "w"


def test_resume_followed_by_an_override_resumes_the_latest_run(monkeypatch, tmp_path):
    seen = {}

    def fake_fit(recipe, resume=None, work_dir=None):
        seen.update(resume=resume, max_epochs=recipe["train"]["max_epochs"])
        raise SystemExit(0)

    monkeypatch.setattr("detlab.engine.trainer.fit", fake_fit)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fracture_unet.py"
    args = build_parser().parse_args(["train", str(recipe), "--resume", "train.max_epochs=3"])
    try:
        cmd_train(args)
    except SystemExit:
        pass
    assert seen == {"resume": "latest", "max_epochs": 3}
