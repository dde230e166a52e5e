"""BatchNorm folding for inference (detlab.models.fuse, detlab.engine.inference_model): what is
folded is decided by the traced calls, so the patterns where folding would change the output
(in-place change between conv and BN, a conv feeding two BNs, a BN on a sum) are left alone,
and the rewritten copy of every head family predicts what the training model predicts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detlab.engine.inference_model import InferenceTask, drop_inference_copy, inference_task
from detlab.errors import ConfigError
from detlab.models.fuse import fuse_conv_bn, inference_copy, output_tensors
from detlab.recipe import load
from detlab.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]


def _random_stats(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine terms, so folding is visible in the numbers."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


class InPlace(Plain):
    def forward(self, x):
        y = self.conv(x)
        y += 1.0  # same tensor object, other values: folding would skip the +1 through BN
        return self.bn(y)


class TwoBNs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn1(y) + self.bn2(y)


class BNOnSum(Plain):
    def forward(self, x):
        y = self.conv(x)
        return self.bn(y + y)


class Shared(Plain):
    def forward(self, x):  # one conv+BN pair applied to two levels, like an RPN conv
        return self.bn(self.conv(x)) + self.bn(self.conv(x.flip(-1)))


class ConvUsedTwice(Plain):
    def forward(self, x):  # the conv output is also used raw: folding would change that use
        y = self.conv(x)
        return self.bn(y), y


def _outputs(model: nn.Module, x: torch.Tensor):
    """``(model(x), folded copy(x), fusion report)``; the copy traced on another input."""
    with torch.no_grad():
        ref = model(x)
        copy, report = inference_copy(model, torch.rand(1, 3, 8, 8), channels_last=False)
        return ref, copy(x), report


@pytest.mark.parametrize("cls, folded", [(Plain, 1), (InPlace, 0), (TwoBNs, 0), (BNOnSum, 0),
                                         (Shared, 1)])
def test_fold_decided_by_traced_calls(cls, folded):
    model = _random_stats(cls())
    ref, out, report = _outputs(model, torch.randn(2, 3, 8, 8))
    assert report.fused == folded
    assert report.batchnorms == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(report.skipped) == report.batchnorms - folded
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the original keeps its BatchNorms (it may go on training)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_hand_computed_fold():
    """Conv 1x1 weight 2, bias 1; BN mean 1, var 3 (eps 1), gamma 4, beta 5:
    y = 4 * (2x + 1 - 1) / 2 + 5 = 4x + 5."""
    model = Plain()
    model.conv = nn.Conv2d(1, 1, 1)
    model.bn = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        model.conv.weight.fill_(2.0)
        model.conv.bias.fill_(1.0)
        model.bn.running_mean.fill_(1.0)
        model.bn.running_var.fill_(3.0)
        model.bn.weight.fill_(4.0)
        model.bn.bias.fill_(5.0)
    model.eval()
    report = fuse_conv_bn(model, torch.zeros(1, 1, 2, 2))
    assert report.fused == 1 and isinstance(model.bn, nn.Identity)
    assert model.conv.weight.item() == pytest.approx(4.0)
    assert model.conv.bias.item() == pytest.approx(5.0)


def test_conv_output_used_elsewhere_is_not_folded():
    model = _random_stats(ConvUsedTwice())
    ref, out, report = _outputs(model, torch.randn(1, 3, 8, 8))
    # The trace cannot see the raw use of y; the output check on the example undoes the fold.
    assert report.fused == 0 and report.skipped
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recipe, size, skipped", [
    ("helmet_yolo.py", 64, 0),          # timm MobileNetV4: BatchNormAct2d keeps its activation
    ("helmet_yolo_dense.py", 64, 0),    # CSP-Darknet
    ("digits_faster_rcnn.py", 64, 0),
    ("receipt_dbnet.py", 64, 2),        # the BNs after ConvTranspose2d stay
    ("fracture_unet.py", 64, 0),
])
def test_every_family_predicts_the_same(recipe, size, skipped):
    torch.manual_seed(0)
    model = _random_stats(MODELS.build(load(ROOT / "recipes" / recipe)["model"], key="model"))
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        ref = output_tensors(model(x))
        copy, report = inference_copy(
            model, torch.rand(1, channels, 2 * model.size_divisor, 2 * model.size_divisor))
        out = output_tensors(copy(x))
    assert report.fused == report.batchnorms - skipped > 0
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-6)


def _task(recipe_inference=None):
    torch.manual_seed(0)
    model = _random_stats(MODELS.build(load(ROOT / "recipes" / "helmet_yolo.py")["model"],
                                       key="model"))
    recipe = {} if recipe_inference is None else {"inference": recipe_inference}
    return SimpleNamespace(model=model, recipe=recipe)


def test_inference_task_cached_until_weights_change():
    task = _task()
    task.model.train()
    view = inference_task(task)
    assert task.model.training and not view.model.training
    assert isinstance(view, InferenceTask) and view.report.fused == view.report.batchnorms
    assert view.model is not task.model
    assert inference_task(task).model is view.model  # cached
    assert not any(isinstance(m, nn.BatchNorm2d) for m in view.model.modules())
    with torch.no_grad():
        next(task.model.parameters()).add_(1.0)  # what an optimizer step does
    assert inference_task(task).model is not view.model
    assert view.recipe is task.recipe  # everything else is the task's
    kept = inference_task(task).model
    drop_inference_copy(task)
    assert inference_task(task).model is not kept


def test_inference_options_from_recipe():
    assert inference_task(_task({"fuse_bn": False, "channels_last": False})).__class__ is (
        SimpleNamespace)
    only_cl = inference_task(_task({"fuse_bn": False}))
    assert only_cl.report is None
    with pytest.raises(ConfigError, match="inference: fuse_bn must be True or False"):
        inference_task(_task({"fuse_bn": "yes"}))
    with pytest.raises(ConfigError, match="unknown key"):
        inference_task(_task({"fuse": True}))


def test_bf16_features_keep_a_float32_head():
    task = _task({"precision": "bf16-mixed"})
    view = inference_task(task)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        feats = view.model.features(x)
        ref = task.model(x)
        out = view.model(x)
    assert all(f.dtype == torch.float32 for f in feats)  # the head sees float32 maps
    assert out["cls_logits"].dtype == torch.float32
    scale = float(ref["cls_logits"].abs().max())
    err = float((out["cls_logits"] - ref["cls_logits"]).abs().max())
    assert 0 < err < 0.05 * scale  # bf16 convolutions: different, but close
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        inference_task(_task({"precision": "16"}))
    with pytest.raises(ConfigError, match="precision must be one of"):
        inference_task(_task({"precision": "int8"}))


def test_model_without_image_forward_runs_as_trained(caplog):
    class PredictOnly(nn.Module):  # a custom model that only implements predict()
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

    task = SimpleNamespace(model=PredictOnly(), recipe={})
    with caplog.at_level("WARNING"):
        assert inference_task(task) is task
    assert "runs PredictOnly as trained" in caplog.text


def test_model_built_under_inference_mode():
    """Weights made inside torch.inference_mode() have no version counter: the cache key uses
    their storage instead (this raised 'Inference tensors do not track version counter')."""
    with torch.inference_mode():
        task = _task()
        view = inference_task(task)
        assert inference_task(task).model is view.model
        x = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(view.model(x)["cls_logits"], task.model(x)["cls_logits"],
                                   rtol=1e-4, atol=1e-4)


def test_sync_batchnorm_folds_too():
    """train.sync_batchnorm turns every BatchNorm into SyncBatchNorm (not a BatchNorm2d)."""
    model = _random_stats(Plain())
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    assert isinstance(model.bn, nn.SyncBatchNorm)
    ref, out, report = _outputs(model, torch.randn(2, 3, 8, 8))
    assert report.fused == 1 == report.batchnorms
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
