"""Ensembles: the merge rules on hand-made boxes and maps, the DB / U-Net map means of two
real (untrained) models, the refusal of checkpoints of different tasks naming both, and
``detlab eval A.ckpt B.ckpt`` (positional parsing, --weights, --ensemble) round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detlab.cli import main
from detlab.commands.ensemble_args import leading_checkpoints
from detlab.engine.ensemble import ensemble_predictions, evaluate_members
from detlab.engine.inference import data_module, evaluate
from detlab.errors import ConfigError
from detlab.postprocess.ensemble import EnsembleSettings, mean_maps, merge_boxes

from ensemble_models import tiny_task, write_checkpoint

torch.set_num_threads(1)

A = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
B = torch.tensor([[2.0, 0.0, 12.0, 10.0]])  # IoU with A: 80 / 120 = 2/3


def _merge(method, weights=(1.0, 1.0), **kw):
    return merge_boxes([A, B], [torch.tensor([0.9]), torch.tensor([0.6])],
                       [torch.tensor([0]), torch.tensor([0])], list(weights),
                       EnsembleSettings(method=method, **kw))


def test_wbf_of_two_members_by_hand():
    boxes, scores, labels = _merge("wbf")
    # score-weighted mean corners: x1 = (0 * .9 + 2 * .6) / 1.5, x2 = (10 * .9 + 12 * .6) / 1.5
    torch.testing.assert_close(boxes, torch.tensor([[0.8, 0.0, 10.8, 10.0]]))
    torch.testing.assert_close(scores, torch.tensor([0.75]))  # mean score, both models present
    assert labels.tolist() == [0]
    boxes, scores, _ = _merge("wbf", weights=(2.0, 1.0))
    # weights multiply the scores: 1.8 and 0.6; fused score (1.8 + 0.6) / 2 * 2 / 3
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.0, 10.5, 10.0]]))
    torch.testing.assert_close(scores, torch.tensor([0.8]))
    boxes, _, _ = _merge("wbf", iou_thr=0.7)  # 2/3 < 0.7: two clusters, each member alone
    assert len(boxes) == 2


def test_nms_and_soft_nms_over_the_union_by_hand():
    boxes, scores, _ = _merge("nms")
    torch.testing.assert_close(boxes, A)
    torch.testing.assert_close(scores, torch.tensor([0.9]))
    boxes, scores, _ = _merge("soft_nms")
    # Gaussian decay of B by A: 0.6 * exp(-(2/3)^2 / 0.5)
    torch.testing.assert_close(boxes, torch.cat([A, B]))
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.6 * math.exp(-(4 / 9) / 0.5)]))
    _, scores, _ = _merge("nms", weights=(1.0, 4.0))  # B weighs more: its scaled score wins
    torch.testing.assert_close(scores, torch.tensor([0.6]))


def test_map_mean_and_settings_errors():
    out = mean_maps([torch.ones(2, 3), torch.zeros(2, 3)], [3.0, 1.0])
    torch.testing.assert_close(out, torch.full((2, 3), 0.75))
    with pytest.raises(ConfigError, match="method"):
        EnsembleSettings.from_config({"method": "vote"})
    with pytest.raises(ConfigError, match="unknown key"):
        EnsembleSettings.from_config({"iou": 0.5})
    with pytest.raises(ConfigError, match=r"2 weight\(s\) for 3 checkpoint\(s\) \(a, b, c\)"):
        EnsembleSettings(weights=(1, 2)).member_weights(3, ["a", "b", "c"])


def test_leading_checkpoints_are_models():
    assert leading_checkpoints(["b.ckpt", "c.ckpt", "x=1", "d.ckpt"]) == (
        ["b.ckpt", "c.ckpt"], ["x=1", "d.ckpt"])
    assert leading_checkpoints(["img.png", "b.ckpt"]) == ([], ["img.png", "b.ckpt"])


def _merged(kind, weights, extra=()):
    tasks = [tiny_task(kind, seed=0, extra=extra), tiny_task(kind, seed=1, extra=extra)]
    loaders = [data_module(t).val_dataloader() for t in tasks]
    with torch.inference_mode():
        singles = [[p for preds, _ in ((t.model.predict(b), b) for b in lo) for p in preds]
                   for t, lo in zip(tasks, loaders)]
        merged = [p for preds, _ in ensemble_predictions(
            tasks, loaders, "cpu", ["a.ckpt", "b.ckpt"], EnsembleSettings(weights=weights),
            None) for p in preds]
    return tasks, singles, merged


def test_db_ensemble_averages_the_maps_then_runs_the_post_processor():
    tasks, (one, two), merged = _merged("db", (3.0, 1.0),
                                       ["model.head.postprocessor.binarize_threshold=0.3"])
    post = tasks[0].model.head.postprocessor.for_stage("test")
    for p, q, m in zip(one, two, merged):
        mean = 0.75 * p.extras["prob_map"] + 0.25 * q.extras["prob_map"]
        torch.testing.assert_close(m.extras["prob_map"], mean)
        # scale 1: the 64x64 images are the input; clipped to the image
        polygons, scores = post(mean.numpy(), orig_size=(64, 64))
        assert len(m.polygons) == len(polygons)
        for a, b in zip(m.polygons, polygons):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(m.scores.numpy(), scores, atol=1e-6)
    assert any(len(m.polygons) for m in merged)


def test_unet_ensemble_averages_probabilities_then_thresholds():
    tasks, (one, two), merged = _merged("unet", (1.0, 1.0))
    for p, q, m in zip(one, two, merged):
        mean = (p.probs + q.probs) / 2
        torch.testing.assert_close(m.probs, mean)
        assert torch.equal(m.mask, mean >= tasks[0].model.head.threshold)
        assert m.extras["threshold"] == tasks[0].model.head.threshold


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    return {"a": write_checkpoint(tiny_task("yolo", 0), root / "a.ckpt"),
            "b": write_checkpoint(tiny_task("yolo", 1), root / "b.ckpt"),
            "unet": write_checkpoint(tiny_task("unet", 0), root / "unet.ckpt"),
            "unet1": write_checkpoint(tiny_task("unet", 1), root / "unet1.ckpt"),
            "db": write_checkpoint(tiny_task("db", 0), root / "db.ckpt"),
            "root": root}


def test_mismatched_checkpoints_are_refused_naming_both(checkpoints, capsys):
    a, unet, db = checkpoints["a"], checkpoints["unet"], checkpoints["db"]
    assert main(["eval", str(a), str(unet)]) == 2
    err = capsys.readouterr().err
    assert f"{a} and {unet} differ in task family ('boxes' vs 'segmentation')" in err
    assert main(["eval", str(db), str(a)]) == 2
    assert f"{db} and {a} differ in task family ('text' vs 'boxes')" in capsys.readouterr().err
    # same family, different classes
    three = write_checkpoint(tiny_task("yolo", 0, ["model.head.num_classes=3",
                                                   "evaluator.class_names=['a','b','c']"]),
                             checkpoints["root"] / "three.ckpt")
    assert main(["eval", str(a), str(three)]) == 2
    assert f"{a} and {three} differ in num_classes (2 vs 3)" in capsys.readouterr().err


def test_cli_eval_of_two_checkpoints_round_trip(checkpoints, tmp_path, capsys):
    # U-Net: its Dice / PR-AUC move with every probability even untrained (box AP is 0)
    a, b = str(checkpoints["unet"]), str(checkpoints["unet1"])

    def run(*argv):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.json"
        assert main(["eval", *argv, "--quiet", "--json", str(out)]) == 0
        return json.loads(out.read_text())

    from detlab.engine.checkpoint import load_task

    single = evaluate(load_task(a))
    assert run(a, a) == pytest.approx(single, abs=1e-6, nan_ok=True)  # the mean of one map twice
    pair = run(a, b, "--weights", "2,1")
    expected = evaluate_members([load_task(a), load_task(b)], [a, b],
                                settings=EnsembleSettings(weights=(2.0, 1.0)))
    assert pair == pytest.approx(expected, abs=1e-9, nan_ok=True)
    plain_pair = run(a, b)
    assert pair != pytest.approx(plain_pair, abs=1e-6, nan_ok=True)  # the weights matter
    assert pair != pytest.approx(single, abs=1e-6, nan_ok=True)
    # overrides after the checkpoints apply to every model
    assert run(a, b, "model.head.postprocessor.threshold=0.9") != pytest.approx(
        plain_pair, abs=1e-6)
    # TTA with the plain view only is the plain evaluation; with flips it is not
    assert run(a, "--tta-flips", "none") == pytest.approx(single, abs=1e-6, nan_ok=True)
    assert run(a, "--tta") != pytest.approx(single, abs=1e-6, nan_ok=True)
    assert main(["eval", a, b, "--weights", "1,2,3"]) == 2
    assert "3 weight(s) for 2 checkpoint(s)" in capsys.readouterr().err


def _rows(out: Path, image: str) -> np.ndarray:
    rows = json.loads((out / "results.json").read_text())
    return np.array([[r["category_id"] - 1, *r["bbox"], r["score"]] for r in rows
                     if r["image_id"] == image]).reshape(-1, 6)


def _expected(boxes, scores, labels) -> np.ndarray:
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    return torch.cat([labels[:, None].double(), xywh.double(), scores[:, None].double()],
                     1).numpy()


def test_cli_predict_ensemble_of_box_checkpoints(checkpoints, tmp_path):
    from PIL import Image

    from detlab.engine.checkpoint import load_task
    from detlab.engine.inference import file_loader

    rng = np.random.default_rng(0)
    images = tmp_path / "img"
    images.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            images / f"im{i}.png")
    a, b = str(checkpoints["a"]), str(checkpoints["b"])
    # every leading *.ckpt is a model, then the inputs
    assert main(["predict", a, b, str(images), "--weights", "2,1",
                 "--out", str(tmp_path / "wbf")]) == 0
    assert main(["predict", a, b, str(images), "--ensemble", "nms",
                 "--out", str(tmp_path / "nms")]) == 0
    singles = []
    with torch.inference_mode():
        for t in (load_task(a), load_task(b)):
            loader = file_loader(data_module(t), [str(images)])
            singles.append([t.model.predict(batch)[0] for batch in loader])
    # by hand: the merge of the two models' own predictions of each image
    for i, (p, q) in enumerate(zip(*singles)):
        for out, settings, weights in (("wbf", EnsembleSettings(), [2.0, 1.0]),
                                       ("nms", EnsembleSettings(method="nms"), [1.0, 1.0])):
            merged = merge_boxes([p.boxes, q.boxes], [p.scores, q.scores],
                                 [p.labels, q.labels], weights, settings)
            assert 0 < len(merged[0]) < len(p.boxes) + len(q.boxes)
            np.testing.assert_allclose(_rows(tmp_path / out, f"im{i}.png"),
                                       _expected(*merged), atol=1e-3)


def test_api_ensemble_detector(checkpoints):
    import detlab

    a, b = str(checkpoints["unet"]), str(checkpoints["unet1"])
    image = np.random.default_rng(1).random((64, 64, 1)).astype(np.float32)
    one, two = (detlab.Detector.from_checkpoint(p, device="cpu")(image)[0] for p in (a, b))
    ens = detlab.Detector.from_checkpoints([a, b], weights=[2, 1], device="cpu")
    merged = ens(image)[0]
    torch.testing.assert_close(merged.probs, (2 * one.probs + two.probs) / 3)
    metrics = ens.evaluate()
    assert metrics["dice"] != detlab.Detector.from_checkpoint(a, device="cpu").evaluate()["dice"]
    with pytest.raises(ConfigError, match="differ in task family"):
        detlab.Detector.from_checkpoints([a, str(checkpoints["a"])])
    with pytest.raises(ConfigError, match=r"1 weight\(s\) for 2"):
        detlab.Detector.from_checkpoints([a, b], weights=[1])


def test_sweep_of_ensemble_knobs_equals_eval(checkpoints, tmp_path, capsys):
    a, b = str(checkpoints["unet"]), str(checkpoints["unet1"])
    out = tmp_path / "sweep.json"
    assert main(["sweep", a, b, "ensemble.weights=[1,1],[2,1]", "--json", str(out)]) == 0
    assert "2 combination(s)" in capsys.readouterr().out
    rows = {tuple(r["settings"]["ensemble.weights"]): r["metrics"]
            for r in json.loads(out.read_text())["rows"]}
    for weights in ((1, 1), (2, 1)):
        evaluated = tmp_path / f"eval{weights[0]}.json"
        assert main(["eval", a, b, "--weights", f"{weights[0]},{weights[1]}", "--quiet",
                     "--json", str(evaluated)]) == 0
        assert rows[weights] == pytest.approx(json.loads(evaluated.read_text()), abs=1e-9,
                                              nan_ok=True)
    assert main(["sweep", a, b, "model.head.postprocessor.threshold=0.3,0.4"]) == 2
    assert "cannot sweep 'model.head.postprocessor.threshold' over an ensemble" in (
        capsys.readouterr().err)


def test_a_malformed_inference_section_is_one_error_for_every_reader():
    from detlab.engine.ensemble import ensemble_settings
    from detlab.errors import ConfigError
    from detlab.postprocess.slicing import SlicedInference

    for reader in (ensemble_settings, SlicedInference.from_recipe):
        with pytest.raises(ConfigError, match=r"inference=3: expected a dict"):
            reader({"inference": 3})
        with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tt'\]"):
            reader({"inference": {"tt": {}}})
