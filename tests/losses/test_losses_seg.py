"""Segmentation losses: hand-computed values, MONAI/torchvision as oracles, edge cases."""

from __future__ import annotations

import math

import monai.losses
import pytest
import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from detlab.errors import ConfigError, DataError
from detlab.losses import (
    CombinedLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    TverskyLoss,
    default_loss_name,
)
from detlab.losses.base import power_finite_grad
from detlab.registry import LOSSES

S = 1e-5  # default smooth


def logit(p: list[float]) -> torch.Tensor:
    p = torch.tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p)).float()


# One image, one channel, 2x2 pixels: p = [.9, .6, .2, .1], g = [1, 1, 0, 0]
# -> TP = .9 + .6 = 1.5, FP = .2 + .1 = .3, FN = .1 + .4 = .5.
LOGITS_1 = logit([0.9, 0.6, 0.2, 0.1]).reshape(1, 1, 2, 2)
TARGET_1 = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
# Two images 1x1x1x2. A: p = [.8, .4], g = [1, 0] -> TP .8, FP .4, FN .2.
#                     B: p = [.3, .5], g = [0, 0] -> TP 0,  FP .8, FN 0.
LOGITS_2 = logit([0.8, 0.4, 0.3, 0.5]).reshape(2, 1, 1, 2)
TARGET_2 = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(2, 1, 1, 2)
# Softmax, 2 classes, 1x2 pixels: p(class 1) = [.7, .2], labels [1, 0].
# class 0: p = [.3, .8], g = [0, 1] -> TP .8, FP .3, FN .2
# class 1: p = [.7, .2], g = [1, 0] -> TP .7, FP .2, FN .3
LOGITS_3 = torch.stack([torch.zeros(2), logit([0.7, 0.2])]).reshape(1, 2, 1, 2)
LABELS_3 = torch.tensor([[[1, 0]]])


def dice(tp, fp, fn):
    return 1 - (2 * tp + S) / (2 * tp + fp + fn + S)


def tversky(tp, fp, fn, a, b):
    return 1 - (tp + S) / (tp + a * fp + b * fn + S)


HAND_CASES = [
    # (id, loss, logits, target, valid, expected)
    ("dice", DiceLoss(), LOGITS_1, TARGET_1, None, dice(1.5, 0.3, 0.5)),
    ("dice_w3", DiceLoss(weight=3.0), LOGITS_1, TARGET_1, None, 3 * dice(1.5, 0.3, 0.5)),
    ("tversky", TverskyLoss(alpha=0.3, beta=0.7), LOGITS_1, TARGET_1, None,
     tversky(1.5, 0.3, 0.5, 0.3, 0.7)),
    ("focal_tversky", FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=0.75), LOGITS_1, TARGET_1,
     None, tversky(1.5, 0.3, 0.5, 0.3, 0.7) ** 0.75),
    ("focal_tversky_g2", FocalTverskyLoss(alpha=0.6, beta=0.4, gamma=2.0), LOGITS_1, TARGET_1,
     None, tversky(1.5, 0.3, 0.5, 0.6, 0.4) ** 2),
    # Image B has no ground truth. empty="pooled": its counts enter the ratio like any other.
    ("dice_batch_pooled", DiceLoss(batch=True, empty="pooled"), LOGITS_2, TARGET_2, None,
     dice(0.8, 1.2, 0.2)),
    ("dice_per_image_pooled", DiceLoss(batch=False, empty="pooled"), LOGITS_2, TARGET_2, None,
     (dice(0.8, 0.4, 0.2) + dice(0.0, 0.8, 0.0)) / 2),
    ("focal_tversky_per_image_pooled", FocalTverskyLoss(gamma=0.75, batch=False, empty="pooled"),
     LOGITS_2, TARGET_2, None,
     (tversky(0.8, 0.4, 0.2, 0.3, 0.7) ** 0.75 + tversky(0, 0.8, 0, 0.3, 0.7) ** 0.75) / 2),
    # empty="per_image" (default): B costs its false-positive fraction (.3 + .5) / 2 = .4.
    ("dice_batch", DiceLoss(batch=True), LOGITS_2, TARGET_2, None,
     (dice(0.8, 0.4, 0.2) + 0.4) / 2),
    ("dice_per_image", DiceLoss(batch=False), LOGITS_2, TARGET_2, None,
     (dice(0.8, 0.4, 0.2) + 0.4) / 2),
    ("focal_tversky_per_image", FocalTverskyLoss(gamma=0.75, batch=False), LOGITS_2, TARGET_2,
     None, (tversky(0.8, 0.4, 0.2, 0.3, 0.7) ** 0.75 + 0.4 ** 0.75) / 2),
    # valid pixels only: B's first pixel masked out -> FP fraction .5 / 1
    ("dice_per_image_valid", DiceLoss(batch=False), LOGITS_2, TARGET_2,
     torch.tensor([True, True, False, True]).reshape(2, 1, 2), (dice(0.8, 0.4, 0.2) + 0.5) / 2),
    ("dice_softmax_int", DiceLoss(activation="softmax"), LOGITS_3, LABELS_3, None,
     (dice(0.8, 0.3, 0.2) + dice(0.7, 0.2, 0.3)) / 2),
    ("tversky_softmax_nobg", TverskyLoss(0.3, 0.7, activation="softmax", include_background=False),
     LOGITS_3, LABELS_3, None, tversky(0.7, 0.2, 0.3, 0.3, 0.7)),
    # valid drops pixel 2 (p = .2, g = 0): FP = .1
    ("dice_valid", DiceLoss(), LOGITS_1, TARGET_1,
     torch.tensor([True, True, False, True]).reshape(1, 2, 2), dice(1.5, 0.1, 0.5)),
    # an ignore label (255) under valid=False is ignored; pixel 0 only: class 0 p .3 g 0,
    # class 1 p .7 g 1
    ("dice_softmax_ignore_pooled", DiceLoss(activation="softmax", empty="pooled"), LOGITS_3,
     torch.tensor([[[1, 255]]]), torch.tensor([True, False]).reshape(1, 1, 1, 2),
     (dice(0.0, 0.3, 0.0) + dice(0.7, 0.0, 0.3)) / 2),
    # class 0 has no ground truth on the one valid pixel: its FP fraction .3 / 1
    ("dice_softmax_ignore", DiceLoss(activation="softmax"), LOGITS_3,
     torch.tensor([[[1, 255]]]), torch.tensor([True, False]).reshape(1, 1, 1, 2),
     (0.3 + dice(0.7, 0.0, 0.3)) / 2),
    # sigmoid focal, alpha .25, gamma 2: alpha_t (1 - p_t)^2 (-log p_t), mean over 4 pixels
    ("focal", FocalLoss(), LOGITS_1, TARGET_1, None,
     (0.25 * 0.1**2 * -math.log(0.9) + 0.25 * 0.4**2 * -math.log(0.6)
      + 0.75 * 0.2**2 * -math.log(0.8) + 0.75 * 0.1**2 * -math.log(0.9)) / 4),
    ("focal_valid", FocalLoss(alpha=None, gamma=1.0), LOGITS_1, TARGET_1,
     torch.tensor([False, True, True, False]).reshape(1, 1, 2, 2),
     (0.4 * -math.log(0.6) + 0.2 * -math.log(0.8)) / 2),
    # softmax focal: true-class probabilities .7 and .8
    ("focal_softmax_int", FocalLoss(alpha=None, activation="softmax"), LOGITS_3, LABELS_3, None,
     (0.3**2 * -math.log(0.7) + 0.2**2 * -math.log(0.8)) / 2),
]


@pytest.mark.parametrize("loss,logits,target,valid,expected",
                         [c[1:] for c in HAND_CASES], ids=[c[0] for c in HAND_CASES])
def test_hand_values(loss, logits, target, valid, expected):
    assert loss(logits, target, valid).item() == pytest.approx(expected, abs=1e-6)


def _random_inputs(seed: int, b: int = 3, c: int = 2, size: int = 8, empty_image: bool = True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, size, size, generator=gen) * 3
    target = (torch.rand(b, c, size, size, generator=gen) > 0.8).float()
    if empty_image:
        target[0] = 0  # an empty image, the common case in lesion segmentation
    assert (target.sum((2, 3)) > 0).sum() == b * c - (c if empty_image else 0)
    return logits, target


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7), (0.9, 0.1)])
@pytest.mark.parametrize("empty", ["pooled", "per_image"])
def test_tversky_matches_monai(batch, include_background, alpha, beta, empty):
    # MONAI pools empty images like any other: equal always with empty="pooled", and with
    # empty="per_image" when every image has ground truth.
    logits, target = _random_inputs(0, empty_image=empty == "pooled")
    ours = TverskyLoss(alpha, beta, batch=batch, include_background=include_background,
                       empty=empty)
    ref = monai.losses.TverskyLoss(include_background=include_background, sigmoid=True,
                                   alpha=alpha, beta=beta, batch=batch)
    assert ours(logits, target).item() == pytest.approx(ref(logits, target).item(), abs=1e-5)


# -- empty targets: the table of cases, 4 x 1 x 256² as in the fracture slices ---------------
N = 256 * 256
SIG20 = 1 / (1 + math.exp(20))  # sigmoid(-20): what a confident "no lesion" pixel still holds
BLOCK = 16 * 16 / N  # a 16x16 false-positive blob, as a fraction of the image
HALF_DICE = 0.5  # p = .5 on a half-lesion image: TP = FP = FN = N/4


def _case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.full((4, 1, 256, 256), -20.0)
    target = torch.zeros(4, 1, 256, 256)
    if name == "empty_fp":
        logits[:, :, :16, :16] = 20.0
    elif name == "full_full":
        logits[:] = 20.0
        target[:] = 1.0
    elif name == "perfect":
        logits[..., :128] = 20.0
        target[..., :128] = 1.0
    elif name in ("half", "mixed"):
        target[..., :128] = 1.0
        logits[:] = 0.0
        if name == "mixed":  # images 0 and 1 empty and confidently right, 2 and 3 "half"
            target[:2] = 0.0
            logits[:2] = -20.0
    return logits, target


g = 0.75  # FocalTverskyLoss default gamma
EMPTY_TABLE = {
    # case: {loss: (empty="per_image" expected, empty="pooled" expected)}; None = MONAI's value
    "empty_empty": {"dice": (SIG20, None), "tversky": (SIG20, None),
                    "focal_tversky": (SIG20 * 1e-6 ** (g - 1), None)},
    "empty_fp": {"dice": (BLOCK, None), "tversky": (BLOCK, None),
                 "focal_tversky": (BLOCK ** g, None)},
    # right everywhere: ~1e-9 in exact arithmetic, 0 in fp32 (sigmoid(20) rounds to 1)
    "full_full": {"dice": (None, None), "tversky": (None, None), "focal_tversky": (None, None)},
    "perfect": {"dice": (None, None), "tversky": (None, None), "focal_tversky": (None, None)},
    "half": {"dice": (HALF_DICE, None), "tversky": (0.5, None), "focal_tversky": (0.5 ** g, None)},
    # per_image: two images at 0.5, two right: 0.25. pooled: the empty images' FP mass is noise.
    "mixed": {"dice": (0.25, None), "tversky": (0.25, None),
              "focal_tversky": (0.5 ** g / 2, None)},
}
LOSS_CLASSES = {"dice": DiceLoss, "tversky": TverskyLoss, "focal_tversky": FocalTverskyLoss}


def _monai(name: str, logits, target) -> float:
    if name == "dice":
        ref = monai.losses.DiceLoss(sigmoid=True, batch=True)
    else:
        ref = monai.losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=True)
    value = ref(logits, target).item()
    return value ** g if name == "focal_tversky" else value


@pytest.mark.parametrize("loss_name", list(LOSS_CLASSES))
@pytest.mark.parametrize("case", list(EMPTY_TABLE))
def test_empty_target_table(case, loss_name):
    logits, target = _case(case)
    per_image_expected, pooled_expected = EMPTY_TABLE[case][loss_name]
    kwargs = {} if loss_name == "dice" else {"alpha": 0.3, "beta": 0.7}
    per_image = LOSS_CLASSES[loss_name](**kwargs)(logits, target).item()
    pooled = LOSS_CLASSES[loss_name](empty="pooled", **kwargs)(logits, target).item()
    monai_value = _monai(loss_name, logits, target)
    assert pooled == pytest.approx(pooled_expected or monai_value, rel=1e-4, abs=1e-7)
    if per_image_expected is None:  # right everywhere
        assert per_image < 1e-6
    else:
        assert per_image == pytest.approx(per_image_expected, rel=1e-3, abs=1e-9)
    if case in ("full_full", "perfect", "half"):  # every image has ground truth: as MONAI
        assert per_image == pytest.approx(monai_value, rel=1e-4, abs=1e-7)


def test_confident_empty_prediction_costs_nothing_by_default():
    # The issue's numbers: logit -20 everywhere, empty ground truth, 4 x 1 x 256².
    logits, target = _case("empty_empty")
    assert DiceLoss(empty="pooled")(logits, target).item() == pytest.approx(0.982, abs=1e-3)
    assert TverskyLoss(empty="pooled")(logits, target).item() == pytest.approx(0.964, abs=1e-3)
    assert FocalTverskyLoss(empty="pooled")(logits, target).item() == pytest.approx(0.956, abs=1e-3)
    for cls in (DiceLoss, TverskyLoss, FocalTverskyLoss):
        for batch in (True, False):
            assert cls(batch=batch)(logits, target).item() < 1e-6
    # and a false positive on an empty slice costs more than a right answer, with a gradient
    # that pushes the blob's logits down
    fp_logits = logits.clone()
    fp_logits[:, :, :16, :16] = 2.0
    fp_logits.requires_grad_(True)
    loss = FocalTverskyLoss()(fp_logits, target)
    loss.backward()
    assert loss.item() > 1e-2 and (fp_logits.grad[:, :, :16, :16] > 0).all()


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_dice_matches_monai(batch, activation):
    logits, _ = _random_inputs(1, c=3)
    labels = torch.randint(0, 3, (3, 8, 8), generator=torch.Generator().manual_seed(2))
    ours = DiceLoss(activation=activation, batch=batch)
    ref = monai.losses.DiceLoss(sigmoid=activation == "sigmoid",
                                softmax=activation == "softmax", to_onehot_y=True, batch=batch)
    expected = ref(logits, labels[:, None]).item()
    assert ours(logits, labels).item() == pytest.approx(expected, abs=1e-5)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert ours(logits, onehot).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.5, 0.0), (0.75, 0.5)])
def test_focal_matches_torchvision(alpha, gamma):
    logits, target = _random_inputs(3)
    ref = sigmoid_focal_loss(logits, target, alpha=-1 if alpha is None else alpha, gamma=gamma,
                             reduction="mean")
    ours = FocalLoss(alpha=alpha, gamma=gamma)(logits, target)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


def test_valid_mask_equals_cropping():
    logits, target = _random_inputs(4, b=2, c=1)
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[:, :, :5] = True
    for loss in (DiceLoss(), TverskyLoss(0.3, 0.7), FocalTverskyLoss(), FocalLoss()):
        masked = loss(logits, target, valid)
        cropped = loss(logits[..., :5], target[..., :5])
        assert masked.item() == pytest.approx(cropped.item(), abs=1e-6), loss.name


def test_fp32_under_autocast():
    logits, target = _random_inputs(5)
    logits = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for loss in (DiceLoss(), FocalTverskyLoss(), FocalLoss()):
            out = loss(logits, target)
            assert out.dtype == torch.float32
            assert out.item() == pytest.approx(loss(logits.float(), target).item(), abs=1e-6)


EDGE_LOSSES = {
    "dice": DiceLoss(),
    "dice_per_image": DiceLoss(batch=False),
    "dice_softmax": DiceLoss(activation="softmax"),
    "tversky": TverskyLoss(0.3, 0.7),
    "tversky_per_image_nobg": TverskyLoss(batch=False, include_background=False),
    "focal_tversky_0.75": FocalTverskyLoss(gamma=0.75),
    "focal_tversky_0.75_per_image": FocalTverskyLoss(gamma=0.75, batch=False),
    "focal_tversky_0.5_softmax": FocalTverskyLoss(gamma=0.5, activation="softmax"),
    "focal_tversky_2": FocalTverskyLoss(gamma=2.0),
    "focal": FocalLoss(),
    "focal_0.5": FocalLoss(gamma=0.5),
    "focal_0.5_softmax": FocalLoss(alpha=None, gamma=0.5, activation="softmax"),
    "combined": CombinedLoss([dict(type="FocalTverskyLoss"), dict(type="FocalLoss")]),
}


def _edge_labels(case: str) -> torch.Tensor:
    """(2, 4, 4) class indices for 2 channels: empty = all background, full = all foreground."""
    if case == "random":
        return torch.randint(0, 2, (2, 4, 4), generator=torch.Generator().manual_seed(6))
    return torch.full((2, 4, 4), int(case == "full"))


@pytest.mark.parametrize("loss", EDGE_LOSSES.values(), ids=EDGE_LOSSES.keys())
@pytest.mark.parametrize("case", ["empty", "full", "random"])
@pytest.mark.parametrize("scale", [1.0, 100.0])  # 100: saturated logits matching the target
def test_edge_cases_finite_value_and_gradient(loss, case, scale):
    labels = _edge_labels(case)
    onehot = torch.stack([labels == 0, labels == 1], dim=1).float()
    softmax = getattr(loss, "activation", "sigmoid") == "softmax"
    # sigmoid: both channels hold the same mask, so "empty"/"full" is empty/full everywhere
    target = labels if softmax else onehot[:, 1:].repeat(1, 2, 1, 1)
    logits = (((onehot if softmax else target) * 2 - 1) * scale).requires_grad_()
    out = loss(logits, target)
    total = sum(out.values()) if isinstance(out, dict) else out
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(logits.grad).all()
    if scale == 100.0:  # a perfect prediction costs (almost) nothing
        assert total.item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("gamma,expected", [
    (0.5, [0.0, 1e-7 * 1e3, 0.5]),  # linear below 1e-6 with slope 1e-6 ** -0.5 = 1000
    (0.0, [1.0, 1.0, 1.0]),
    (2.0, [0.0, 1e-14, 0.0625]),
])
def test_power_finite_grad(gamma, expected):
    x = torch.tensor([0.0, 1e-7, 0.25], dtype=torch.float64, requires_grad=True)
    y = power_finite_grad(x, gamma)
    y.sum().backward()
    assert y.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-20)
    assert torch.isfinite(x.grad).all()


def test_combined_keys_and_weights():
    logits, target = LOGITS_1, TARGET_1
    combined = CombinedLoss([
        dict(type="DiceLoss", weight=2.0),
        DiceLoss(),
        dict(type=FocalLoss, name="bce_focal", alpha=None),
        dict(type="FocalTverskyLoss", weight=0.5),
    ])
    out = combined(logits, target)
    assert list(out) == ["loss_dice", "loss_dice_2", "loss_bce_focal", "loss_focal_tversky"]
    d = dice(1.5, 0.3, 0.5)
    expected = [2 * d, d, FocalLoss(alpha=None)(logits, target).item(),
                0.5 * tversky(1.5, 0.3, 0.5, 0.3, 0.7) ** 0.75]
    assert [v.item() for v in out.values()] == pytest.approx(expected, abs=1e-6)
    halved = CombinedLoss([DiceLoss(weight=2.0)], weight=0.5)(logits, target)
    assert halved["loss_dice"].item() == pytest.approx(d, abs=1e-6)


def test_combined_accepts_plain_module():
    class MeanSquaredLoss(nn.Module):
        def forward(self, logits, target, valid=None):
            return ((logits.sigmoid() - target) ** 2).mean()

    out = CombinedLoss([MeanSquaredLoss()])(LOGITS_1, TARGET_1)
    assert list(out) == ["loss_mean_squared"]
    assert out["loss_mean_squared"].item() == pytest.approx((0.01 + 0.16 + 0.04 + 0.01) / 4)


@pytest.mark.parametrize("class_name,expected", [
    ("FocalTverskyLoss", "focal_tversky"), ("DiceLoss", "dice"), ("FocalLoss", "focal"),
    ("CombinedLoss", "combined"), ("CIoULoss", "ciou"), ("SmoothL1Loss", "smooth_l1"),
    ("DFLoss", "df"), ("Loss", "loss"),
])
def test_default_names(class_name, expected):
    assert default_loss_name(class_name) == expected


def test_registered():
    for name in ("DiceLoss", "TverskyLoss", "FocalTverskyLoss", "FocalLoss", "CombinedLoss"):
        assert name in LOSSES
    assert LOSSES.build(dict(type="FocalTverskyLoss", gamma=0.5)).gamma == 0.5


BAD_ARGS = [
    (TverskyLoss, dict(alpha=-0.1), "alpha"),
    (TverskyLoss, dict(beta=float("nan")), "beta"),
    (FocalTverskyLoss, dict(gamma=0.0), "gamma"),
    (FocalTverskyLoss, dict(gamma=-1), "gamma"),
    (DiceLoss, dict(smooth=0.0), "smooth"),
    (DiceLoss, dict(activation="relu"), "activation"),
    (DiceLoss, dict(batch="yes"), "batch"),
    (DiceLoss, dict(include_background=None), "include_background"),
    (DiceLoss, dict(weight=-1.0), "weight"),
    (DiceLoss, dict(name="my dice"), "name"),
    (FocalLoss, dict(alpha=1.5), "alpha"),
    (FocalLoss, dict(gamma=-0.5), "gamma"),
    (FocalLoss, dict(activation="softmax"), "alpha"),  # alpha=0.25 default has no softmax meaning
    (CombinedLoss, dict(terms=[]), "terms"),
    (CombinedLoss, dict(terms=[dict(type="DiceLos")]), "DiceLoss"),  # did-you-mean
    (CombinedLoss, dict(terms=[CombinedLoss([DiceLoss()])]), "terms.0"),
]


@pytest.mark.parametrize("cls,kwargs,arg", BAD_ARGS)
def test_bad_args(cls, kwargs, arg):
    with pytest.raises(ConfigError, match=arg):
        cls(**kwargs)


BAD_INPUTS = [  # (loss, logits shape, target, valid, error)
    (DiceLoss(include_background=False), (1, 1, 2, 2), torch.zeros(1, 1, 2, 2), None, ConfigError),
    (DiceLoss(activation="softmax"), (1, 1, 2, 2), torch.zeros(1, 1, 2, 2), None, ConfigError),
    (DiceLoss(), (1, 2, 2, 2), torch.zeros(1, 2, 3, 3), None, DataError),
    (FocalLoss(), (1, 2, 2, 2), torch.tensor([[[0, 2], [1, 0]]]), None, DataError),  # label 2
    (TverskyLoss(), (1, 1, 2, 2), torch.tensor([[0, 1], [1, 0]]), None, DataError),  # no B dim
    (FocalLoss(), (1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 2, 2), DataError),
]


@pytest.mark.parametrize("loss,shape,target,valid,error", BAD_INPUTS)
def test_bad_inputs(loss, shape, target, valid, error):
    with pytest.raises(error):
        loss(torch.zeros(shape), target, valid)
