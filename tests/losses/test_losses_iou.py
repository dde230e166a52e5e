"""IoU-family losses: torchvision as oracle, hand values, degenerate boxes, Inner-IoU, Wise-IoU."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detlab.errors import ConfigError
from detlab.losses.iou import CIoULoss, DIoULoss, GIoULoss, InnerIoULoss, IoULoss, WIoULoss
from detlab.registry import LOSSES


def random_boxes(n: int, seed: int, scale: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


def degenerate_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-grid boxes, many of them zero-width, zero-height, points, identical or far apart."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 64, (n, 4), generator=g).float()
    b = torch.randint(0, 64, (n, 4), generator=g).float()
    a = torch.cat([torch.minimum(a[:, :2], a[:, 2:]), torch.maximum(a[:, :2], a[:, 2:])], 1)
    b = torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], 1)
    kind = torch.arange(n) % 10  # 8: ordinary pair (gradients must flow), 9: sub-pixel boxes
    a[kind == 0, 2] = a[kind == 0, 0]  # zero width
    a[kind == 1, 3] = a[kind == 1, 1]  # zero height
    a[kind == 2, 2:] = a[kind == 2, :2]  # point
    b[kind == 3] = a[kind == 3]  # identical
    a[kind == 4, 2:] = a[kind == 4, :2]  # identical points
    b[kind == 4] = a[kind == 4]
    b[kind == 5] = a[kind == 5] + 5000.0  # far apart
    a[kind == 6, 2] = a[kind == 6, 0]  # identical zero-width boxes
    b[kind == 6] = a[kind == 6]
    b[kind == 7, 2:] = b[kind == 7, :2]  # point target
    tiny = torch.tensor([0.0, 0.0, 0.05, 0.04])
    a[kind == 9] = a[kind == 9, :1].repeat(1, 4) + tiny
    b[kind == 9] = a[kind == 9] + torch.tensor([0.02, 0.01, 0.03, 0.01])
    return a, b


ALL_LOSSES = [
    IoULoss(), GIoULoss(), DIoULoss(), CIoULoss(),
    *(InnerIoULoss(ratio=r, base=k) for r in (0.7, 1.3) for k in ("iou", "giou", "diou", "ciou")),
    WIoULoss(),
]


# -- torchvision as oracle --------------------------------------------------------------------
TV_LOSSES = [
    (GIoULoss, tvops.generalized_box_iou_loss),
    (DIoULoss, tvops.distance_box_iou_loss),
    (CIoULoss, tvops.complete_box_iou_loss),
    (IoULoss, lambda a, b, reduction: (1 - tvops.box_iou(a, b).diagonal()).mean()),
]


@pytest.mark.parametrize("ours, theirs", TV_LOSSES)
def test_value_and_gradient_match_torchvision(ours, theirs):
    target = random_boxes(40, 1)
    pred_a = (target + torch.randn(40, 4, generator=torch.Generator().manual_seed(2)) * 8)
    pred_a = torch.cat([pred_a[:, :2], torch.maximum(pred_a[:, 2:], pred_a[:, :2] + 1)], 1)
    pred_b = pred_a.clone().requires_grad_(True)
    pred_a.requires_grad_(True)
    got = ours()(pred_a, target)
    want = theirs(pred_b, target, reduction="mean")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got.backward()
    want.backward()
    torch.testing.assert_close(pred_a.grad, pred_b.grad, atol=1e-6, rtol=1e-4)


# -- hand values --------------------------------------------------------------------------------
A, B = [[0.0, 0.0, 2.0, 2.0]], [[1.0, 1.0, 3.0, 3.0]]


@pytest.mark.parametrize(
    "loss, expected",
    [
        (IoULoss(), 1 - 1 / 7),
        (GIoULoss(), 1 - (1 / 7 - 2 / 9)),
        (DIoULoss(), 1 - (1 / 7 - 2 / 18)),
        (CIoULoss(), 1 - (1 / 7 - 2 / 18)),  # same aspect ratio: v = 0
        (IoULoss(weight=2.5), 2.5 * (1 - 1 / 7)),
        # inner boxes at ratio 0.5: [0.5,0.5,1.5,1.5] and [1.5,1.5,2.5,2.5] touch → IoU_inner 0
        (InnerIoULoss(ratio=0.5, base="iou"), 1.0),
        (InnerIoULoss(ratio=0.5, base="giou"), 1 - (1 / 7 - 2 / 9) + 1 / 7),
    ],
)
def test_hand_values(loss, expected):
    assert loss(torch.tensor(A), torch.tensor(B)).item() == pytest.approx(expected, abs=1e-6)


def test_wiou_hand_value():
    # first training call: mean ← 0.99·1 + 0.01·(6/7); β = (6/7)/mean; r = β / (3·1.9^(β−3))
    loss = WIoULoss(momentum=0.01)
    l_iou = 6 / 7
    mean = 0.99 + 0.01 * l_iou
    beta = l_iou / mean
    r = beta / (3 * 1.9 ** (beta - 3))
    expected = r * math.exp(2 / 18) * l_iou
    assert loss(torch.tensor(A), torch.tensor(B)).item() == pytest.approx(expected, rel=1e-6)
    assert loss.iou_loss_mean.item() == pytest.approx(mean, rel=1e-6)


# -- reduction, weights -------------------------------------------------------------------------
def test_weight_reduction_and_avg_factor():
    pred, target = random_boxes(6, 3), random_boxes(6, 4)
    per_box = GIoULoss(reduction="none")(pred, target)
    assert per_box.shape == (6,)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 3.0])
    torch.testing.assert_close(GIoULoss(reduction="none")(pred, target, w), per_box * w)
    torch.testing.assert_close(GIoULoss(reduction="sum")(pred, target, w), (per_box * w).sum())
    torch.testing.assert_close(GIoULoss()(pred, target, w), (per_box * w).mean())
    torch.testing.assert_close(
        GIoULoss(weight=2.0)(pred, target, w, avg_factor=4.0), 2 * (per_box * w).sum() / 4,
    )
    with pytest.raises(ValueError, match="avg_factor"):
        GIoULoss(reduction="sum")(pred, target, avg_factor=2.0)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (IoULoss, {"reduction": "avg"}, "reduction"),
        (IoULoss, {"weight": -1.0}, "weight"),
        (GIoULoss, {"eps": 0.0}, "eps"),
        (InnerIoULoss, {"ratio": 0.0}, "ratio"),
        (InnerIoULoss, {"base": "eiou"}, "base"),
        (WIoULoss, {"momentum": 0.0}, "momentum"),
        (WIoULoss, {"alpha": -1}, "alpha"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        IoULoss()(torch.zeros(3, 4), torch.zeros(2, 4))


def test_registered():
    for name in ("IoULoss", "GIoULoss", "DIoULoss", "CIoULoss", "InnerIoULoss", "WIoULoss"):
        assert name in LOSSES
    built = LOSSES.build({"type": "InnerIoULoss", "ratio": 1.2, "base": "giou"})
    assert isinstance(built, InnerIoULoss) and built.name == "inner_giou"


# -- degenerate boxes ---------------------------------------------------------------------------
def _loss_id(loss) -> str:
    return f"{type(loss).__name__}-{getattr(loss, 'kind', '')}{getattr(loss, 'ratio', '')}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", ALL_LOSSES, ids=_loss_id)
def test_degenerate_boxes_finite_value_and_gradient(loss, dtype):
    a, b = degenerate_pairs(64, 5)
    pred = a.to(dtype).requires_grad_(True)
    per_box = type(loss)(**_same_args(loss), reduction="none")(pred, b.to(dtype))
    assert per_box.dtype == torch.float32
    assert torch.isfinite(per_box).all()
    per_box.sum().backward()
    assert pred.grad.dtype == dtype
    assert torch.isfinite(pred.grad).all()
    if not isinstance(loss, IoULoss):  # plain IoU is flat for every degenerate pair
        assert pred.grad.abs().sum() > 0


def _same_args(loss) -> dict:
    if isinstance(loss, InnerIoULoss):
        return {"ratio": loss.ratio, "base": loss.kind}
    return {}


@pytest.mark.parametrize("loss", ALL_LOSSES[:5] + ALL_LOSSES[-1:])
def test_empty_batch_is_zero_with_graph(loss):
    pred = torch.zeros(0, 4, requires_grad=True)
    value = loss(pred, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()
    assert pred.grad.shape == (0, 4)


def test_fp32_under_autocast():
    pred, target = random_boxes(8, 6), random_boxes(8, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = CIoULoss()(pred.bfloat16(), target.bfloat16())
    assert value.dtype == torch.float32
    rounded = CIoULoss()(pred.bfloat16().float(), target.bfloat16().float())
    torch.testing.assert_close(value, rounded)


# -- Inner-IoU ------------------------------------------------------------------------------------
@pytest.mark.parametrize("base, plain", [("iou", IoULoss), ("giou", GIoULoss),
                                         ("diou", DIoULoss), ("ciou", CIoULoss)])
def test_inner_iou_with_ratio_one_is_the_base_loss(base, plain):
    pred, target = random_boxes(32, 8), random_boxes(32, 9)
    torch.testing.assert_close(
        InnerIoULoss(ratio=1.0, base=base, reduction="none")(pred, target),
        plain(reduction="none")(pred, target),
    )


# -- Wise-IoU ---------------------------------------------------------------------------------
def test_wiou_running_mean_updates_in_training_only():
    loss = WIoULoss(momentum=0.5)
    pred, target = random_boxes(10, 10), random_boxes(10, 11)
    batch_mean = IoULoss(reduction="none")(pred, target).mean().item()
    loss(pred, target)
    assert loss.iou_loss_mean.item() == pytest.approx(0.5 + 0.5 * batch_mean, rel=1e-6)
    loss(pred, target)
    assert loss.iou_loss_mean.item() == pytest.approx(0.25 + 0.75 * batch_mean, rel=1e-6)
    loss.eval()
    loss(pred, target)
    assert loss.iou_loss_mean.item() == pytest.approx(0.25 + 0.75 * batch_mean, rel=1e-6)
    loss.train()
    loss(torch.zeros(0, 4), torch.zeros(0, 4))  # nothing to average: no update
    assert loss.iou_loss_mean.item() == pytest.approx(0.25 + 0.75 * batch_mean, rel=1e-6)


def test_wiou_state_dict_round_trip():
    trained = WIoULoss(momentum=0.3)
    pred, target = random_boxes(10, 12), random_boxes(10, 13)
    for _ in range(3):
        trained(pred, target)
    state = trained.state_dict()
    assert set(state) == {"iou_loss_mean"}
    fresh = WIoULoss(momentum=0.3)
    assert fresh.iou_loss_mean.item() == 1.0
    fresh.load_state_dict(state)
    assert fresh.iou_loss_mean.item() == trained.iou_loss_mean.item()
    fresh.eval()
    trained.eval()
    torch.testing.assert_close(fresh(pred, target), trained(pred, target))


def test_wiou_focus_is_non_monotonic():
    # r = β / (δ α^(β−δ)) peaks at β = 1/ln α ≈ 1.56. With the mean fixed at 0.1 (eval mode) and
    # concentric boxes (ρ = 0, so L_v1 = L_IoU): L_IoU = 0.15 (β = 1.5) weighs more than both a
    # near-perfect box (0.01, β = 0.1) and an outlier (0.98, β = 9.8).
    loss = WIoULoss(reduction="none").eval()
    loss.iou_loss_mean.fill_(0.1)
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    half = torch.tensor([0.99, 0.85, 0.02]).sqrt() * 5  # IoU = (2·half)² / 100
    pred = torch.stack([5 - half, 5 - half, 5 + half, 5 + half], dim=1)
    l_iou = IoULoss(reduction="none")(pred, target)
    torch.testing.assert_close(l_iou, torch.tensor([0.01, 0.15, 0.98]))
    beta = l_iou / 0.1
    expected_r = beta / (3.0 * 1.9 ** (beta - 3.0))
    r = loss(pred, target) / l_iou
    torch.testing.assert_close(r, expected_r)
    assert r[1] > r[0] and r[1] > r[2]
