"""The heads' extension hooks and their one post-processing slot (issue 12): the custom-head
guide's YOLO example (run from the page, one training step), each head's build/init hooks, old
recipe keys naming the new ones, and the one norm vocabulary of ``models/layers.py``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from detlab.errors import ConfigError
from detlab.models import Model
from detlab.models.heads import AttentionUNetHead, DBHead, YOLOHead
from detlab.models.layers import NORMS, conv_norm_act, double_conv, norm_layer
from detlab.registry import HEADS, MODELS

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "custom-head.md"
_TIMM = dict(type="TimmBackbone", name="resnet10t", pretrained=False, out_indices=(1, 2, 3, 4))


def _guide_block(title: str) -> str:
    match = re.search(rf'```python title="{re.escape(title)}"\n(.*?)```', GUIDE.read_text(),
                      re.S)
    assert match, f"no block {title!r} in {GUIDE}"
    return match.group(1)


def test_guide_yolo_example_changes_the_cls_branch_in_15_lines_and_trains(tmp_path) -> None:
    from test_every_head import _det_batch

    code = _guide_block("deep_cls_yolo.py")
    head_code = code[:code.index("model, data, train, evaluator = ")]  # imports + subclass
    lines = [ln for ln in head_code.splitlines() if ln.strip() and not ln.startswith('"""')]
    assert len(lines) <= 15, lines
    assert not re.search(r"\b_[a-z]\w*", head_code), "the example uses a private name"
    namespace: dict = {}
    exec(compile(head_code, "deep_cls_yolo.py", "exec"), namespace)
    cls = namespace["DeepClsYOLOHead"]
    try:
        torch.manual_seed(0)
        model = Model(backbone=_TIMM, neck=dict(type="PAN", levels=(2, 3, 4, 5), out_channels=16),
                      head=dict(type=cls, num_classes=2, prior_prob=0.01))
        branch = model.head.cls_branches[0]
        assert len(branch) == 4 and all(isinstance(m, nn.Module) for m in branch)
        assert branch[-1].bias.detach().sigmoid().allclose(torch.tensor(0.01))  # hook ran
        reg = model.head.reg_branches[0]
        assert len(reg) == 3 and torch.equal(reg[-1].bias, torch.ones_like(reg[-1].bias))
        batch = _det_batch()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        losses = model.loss(batch)
        sum(losses.values()).backward()
        before = branch[1][0].weight.detach().clone()
        optimizer.step()
        assert all(torch.isfinite(v) for v in losses.values())
        assert not torch.equal(before, branch[1][0].weight)  # the new conv is trained
    finally:
        HEADS._items.pop("DeepClsYOLOHead", None)  # test hygiene: the guide's class only


def test_yolo_default_branches_equal_the_hook_output() -> None:
    head = YOLOHead([8, 8], [8, 16], num_classes=2, cls_channels=8, reg_channels=16)
    assert head.cls_channels == 8 and head.reg_channels == 16
    assert [type(m).__name__ for m in head.cls_branches[0]] == [
        "Conv2dNormActivation", "Conv2dNormActivation", "Conv2d"]
    # YOLOv8's per-level prior: 5 objects per class on a 640² image at stride 8
    bias = head.cls_branches[0][-1].bias
    assert bias.allclose(torch.tensor(math.log(5 / 2 / (640 / 8) ** 2)))
    # score_prior: the highest level's (stride 16) initial probability
    assert head.score_prior == pytest.approx(1 / (1 + (2 * (640 / 16) ** 2) / 5))


def test_init_cls_bias_hook_is_called_per_level() -> None:
    class Half(YOLOHead):
        def init_cls_bias(self, branch: nn.Module, prior: float) -> None:
            super().init_cls_bias(branch, 0.5)

    head = Half([8, 8], [8, 16], num_classes=2, cls_channels=8, reg_channels=16)
    assert all(torch.equal(b[-1].bias, torch.zeros(2)) for b in head.cls_branches)


def test_db_and_unet_hooks() -> None:
    class OneConvDB(DBHead):
        def build_thresh_branch(self, in_channels: int) -> nn.Module:
            return nn.Conv2d(in_channels, 1, 1)

    db = OneConvDB([16], [4])
    out = db([torch.randn(1, 16, 8, 8)])
    assert isinstance(db.thresh_branch, nn.Conv2d) and out["thresh"].shape == (1, 1, 32, 32)
    assert db.prob_branch[-1].bias.sigmoid().allclose(torch.tensor(0.01))  # init_prob_bias

    class PlainBlocks(AttentionUNetHead):
        def build_decoder_block(self, in_channels: int, out_channels: int) -> nn.Module:
            return nn.Conv2d(in_channels, out_channels, 3, padding=1)

    unet = PlainBlocks([8, 16], [1, 2], num_classes=1, loss=nn.Identity(), decoder_channels=[4])
    assert isinstance(unet.blocks[0], nn.Conv2d) and len(unet.gates) == 1
    assert unet([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])["logits"].shape == (
        1, 1, 8, 8)


@pytest.mark.parametrize("head, old, new", [
    (dict(type="YOLOHead", num_classes=2, postprocess=dict(type="BoxPostProcessor")),
     "model.head.postprocess", "model.head.postprocessor"),
    (dict(type="AttentionUNetHead", num_classes=1, loss=nn.Identity(), threshold=0.3),
     "model.head.threshold", "model.head.postprocessor.threshold"),
])
def test_old_head_keys_name_the_new_key(head, old, new) -> None:
    neck = dict(type="PAN", levels=(2, 3, 4, 5), out_channels=16) if "YOLO" in head["type"] \
        else None
    with pytest.raises(ConfigError, match=re.escape(f"{old} was renamed {new}")):
        MODELS.build(dict(type="Model", backbone=_TIMM, neck=neck, head=head))


def test_postprocessor_val_and_test_stages_differ_for_yolo() -> None:
    head = YOLOHead([8, 8], [8, 16], num_classes=2, postprocessor=dict(
        type="BoxPostProcessor", test=dict(score_threshold=0.25)))
    val, test = head.postprocessor.for_stage("val"), head.postprocessor.for_stage("test")
    assert (val.score_threshold, test.score_threshold) == (0.001, 0.25)
    assert (val.iou_threshold, val.max_detections) == (0.7, 300)  # the defaults kept
    assert "score_threshold" in head.postprocessor.sweepable


def test_one_norm_vocabulary() -> None:
    assert NORMS == ("batch", "group", "instance", "none")
    assert isinstance(norm_layer("batch", 8), nn.BatchNorm2d)
    group = norm_layer("group", 48)
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 16  # gcd(32, 48)
    inst = norm_layer("instance", 8)
    assert isinstance(inst, nn.InstanceNorm2d) and inst.affine
    assert norm_layer("none", 8) is None
    with pytest.raises(ConfigError, match="must be one of"):
        norm_layer("layer", 8)
    for norm in NORMS:  # every block takes every name
        x = torch.randn(2, 4, 6, 6)
        assert conv_norm_act(4, 8, 3, norm=norm)(x).shape == (2, 8, 6, 6)
        assert double_conv(4, 8, norm)(x).shape == (2, 8, 6, 6)
        DBHead([16], [4], norm=norm)
        YOLOHead([8], [8], num_classes=1, norm=norm)


def test_resume_treats_postprocessor_settings_as_not_architecture() -> None:
    from detlab.engine.resume_check import _is_architecture

    assert not _is_architecture("model.head.postprocessor.test.score_threshold")
    assert _is_architecture("model.neck.inner_channels")
