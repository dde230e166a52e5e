"""DBHead: output shapes at input resolution, the binary-map formula, loss terms against
DBLoss as an oracle, gradients, mapping polygons back to original pixels, empty images,
config errors, and HRNet-W44 levels (shapes on the meta device: no weights, no compute)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.data.db_targets import make_db_targets
from detlab.errors import ConfigError, DataError
from detlab.losses.db import DBLoss
from detlab.models import Model
from detlab.models.backbones.timm import TimmBackbone
from detlab.models.heads.db import DBHead
from detlab.models.necks.db_fpn import DBFPN
from detlab.postprocess.db_polygons import DBPostProcessor
from detlab.structures import Batch

WORDS = [np.array([[10, 10], [50, 10], [50, 26], [10, 26]], np.float32),
         np.array([[20, 34], [70, 32], [71, 44], [21, 46]], np.float32),
         np.array([[60, 5], [75, 5], [75, 15], [60, 15]], np.float32)]


def _tiny_model(**head) -> Model:
    torch.manual_seed(0)
    return Model(
        backbone=dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3, 4)),
        neck=dict(type="DBFPN", inner_channels=32),
        head=dict(type="DBHead", **head),
    )


def _neck_head(channels, strides, inner_channels=16, **kwargs) -> torch.nn.Sequential:
    """DBFPN + DBHead on a list of levels (the head's branches a quarter of the neck width)."""
    neck = DBFPN(channels, strides, inner_channels)
    head = DBHead(neck.channels, neck.strides, branch_channels=inner_channels // 4, **kwargs)
    return torch.nn.Sequential(neck, head)


def _batch(words_per_image: list[list[np.ndarray]], size=(48, 80)) -> Batch:
    torch.manual_seed(1)
    h, w = size
    targets, meta = [], []
    for i, words in enumerate(words_per_image):
        ignore = np.zeros(len(words), bool)
        if len(words) > 2:
            ignore[2] = True  # one "###" word
        maps = make_db_targets(words, ignore, h, w)
        targets.append({"polygons": words, "ignore": torch.as_tensor(ignore),
                        **{k: torch.from_numpy(v) for k, v in maps.items()}})
        meta.append(dict(image_id=i, path=f"{i}.png", orig_size=(h, w), input_size=(h, w),
                         scale=(1.0, 1.0)))
    return Batch(images=torch.randn(len(words_per_image), 3, h, w), targets=targets, meta=meta)


@pytest.mark.parametrize(
    "strides, feat_sizes, expected",
    [
        ((4, 8, 16, 32), [(16, 24), (8, 12), (4, 6), (2, 3)], (64, 96)),  # the paper: 2 deconvs
        ((2, 4, 8, 16, 32), [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)], (64, 96)),  # 1 deconv
        ((8, 16), [(8, 12), (4, 6)], (64, 96)),  # 2 deconvs + bilinear x2
        ((1, 2), [(64, 96), (32, 48)], (64, 96)),  # no deconv: 1x1 conv
    ],
)
def test_outputs_at_input_resolution(strides, feat_sizes, expected) -> None:
    channels = [8 * (i + 1) for i in range(len(strides))]
    head = _neck_head(channels, list(strides))
    feats = [torch.randn(2, c, *s) for c, s in zip(channels, feat_sizes)]
    out = head(feats)
    assert set(out) == {"prob_logits", "thresh", "binary"}
    for value in out.values():
        assert value.shape == (2, 1, *expected)
    assert 0 <= out["thresh"].min() and out["thresh"].max() <= 1


def test_model_output_shape_for_64x96_input() -> None:
    model = _tiny_model()
    out = model(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, 1, 64, 96) for k in ("prob_logits", "thresh", "binary")}
    model.eval()  # same outputs in eval mode (no branching on training), only BN stats differ
    assert set(model(torch.randn(1, 3, 64, 96))) == set(out)


@pytest.mark.parametrize("k", [50.0, 7.0])
def test_binary_map_formula(k: float) -> None:
    torch.manual_seed(0)
    head = _neck_head([8, 16], [4, 8], k=k)
    out = head([torch.randn(1, 8, 6, 6), torch.randn(1, 16, 3, 3)])
    expected = 1.0 / (1.0 + torch.exp(-k * (torch.sigmoid(out["prob_logits"]) - out["thresh"])))
    torch.testing.assert_close(out["binary"], expected, rtol=1e-5, atol=1e-6)


def test_loss_equals_db_loss_on_cropped_outputs_and_reaches_every_parameter() -> None:
    loss = DBLoss(prob_weight=5.0, thresh_weight=10.0, binary_weight=1.0, negative_ratio=3.0)
    model = _tiny_model(loss=loss)
    batch = _batch([WORDS, WORDS[:1]])
    terms = model.loss(batch)
    assert sorted(terms) == ["loss_binary", "loss_prob", "loss_thresh"]
    out = model(batch.images)  # BN in train mode: same batch, same statistics
    crop = {k2: out[k1][..., :48, :80] for k1, k2 in
            (("prob_logits", "prob"), ("thresh", "thresh"), ("binary", "binary"))}
    targets = {k: torch.stack([t[k] for t in batch.targets]) for k in
               ("prob_map", "prob_mask", "thresh_map", "thresh_mask")}
    expected = loss(crop, targets)
    for key, value in terms.items():
        assert torch.isfinite(value) and value > 0
        torch.testing.assert_close(value, expected[key])
    sum(terms.values()).backward()
    # timm zero-initialises each residual block's last BN, so some backbone grads are exactly
    # 0 at init; every head parameter must get a non-zero one.
    missing = [n for n, p in model.named_parameters() if p.grad is None or
               not torch.isfinite(p.grad).all()
               or (n.startswith("head.") and not p.grad.abs().sum() > 0)]
    assert not missing, missing[:10]


def test_image_without_words_gives_finite_loss() -> None:
    model = _tiny_model()
    terms = model.loss(_batch([[], []]))
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["loss_prob"] > 0  # the hardest negatives still push false positives down
    sum(terms.values()).backward()


def test_postprocess_maps_polygons_back_to_original_pixels() -> None:
    """Input 64x96 padded batch; the image was resized by 0.5 (orig 100x150 -> 50x75). A text
    kernel inside the content region and a blob in the padding (must be ignored)."""
    logits = torch.full((1, 1, 64, 96), -8.0)
    logits[0, 0, 10:20, 20:50] = 6.0  # rows 10..19, cols 20..49: inside the 50x75 content
    logits[0, 0, 52:62, 80:94] = 6.0  # in the padding only
    meta = [dict(image_id=0, path="a.png", orig_size=(100, 150), input_size=(50, 75),
                 scale=(0.5, 0.5))]
    batch = Batch(images=torch.zeros(1, 3, 64, 96), targets=[{}], meta=meta)
    post = dict(type="DBPostProcessor", binarize_threshold=0.3, box_threshold=0.6,
                output="box", box_unclip_ratio=1.5)
    head = DBHead([8], [4], postprocessor=post)
    outputs = {"prob_logits": logits, "thresh": torch.zeros_like(logits),
               "binary": torch.zeros_like(logits)}
    (pred,) = head.postprocess(outputs, batch)
    assert len(pred.polygons) == 1 and pred.scores.shape == (1,)
    # Oracle: the post-processor on the content region, mapped back by hand.
    prob = torch.sigmoid(logits[0, 0, :50, :75]).numpy()
    (box,), scores = DBPostProcessor(output="box", box_unclip_ratio=1.5)(prob)
    np.testing.assert_allclose(pred.polygons[0], box / 0.5, atol=1e-4)
    np.testing.assert_allclose(pred.scores.numpy(), scores, atol=1e-6)
    # Kernel cols 20..49 / rows 10..19 -> x 40..98, y 20..38 in the original, before unclip.
    x, y = pred.polygons[0][:, 0], pred.polygons[0][:, 1]
    assert x.min() < 40 and x.max() > 98 and y.min() < 20 and y.max() > 38
    assert x.max() < 120 and y.max() < 60  # nothing from the padding blob (cols 80+ -> x 160+)


def test_postprocessor_is_swappable_and_stored() -> None:
    head = DBHead([8], [4], postprocessor=dict(type="DBPostProcessor", polygon_unclip_ratio=2.1,
                                               test=dict(box_threshold=0.7)))
    val, test = head.postprocessor.for_stage("val"), head.postprocessor.for_stage("test")
    assert isinstance(val, DBPostProcessor) and isinstance(test, DBPostProcessor)
    assert val.polygon_unclip_ratio == test.polygon_unclip_ratio == 2.1
    assert (val.box_threshold, test.box_threshold) == (0.6, 0.7)  # default 0.6 kept for val
    assert "polygon_unclip_ratio" in head.postprocessor.sweepable


def test_stage_picks_the_post_processor() -> None:
    """A val/test override changes only that stage's polygons (map from the swap test)."""
    logits = torch.full((1, 1, 32, 32), -8.0)
    logits[0, 0, 8:16, 4:28] = 0.0  # probability 0.5: above binarize 0.3, below box 0.6
    batch = Batch(images=torch.zeros(1, 3, 32, 32), targets=[{}],
                  meta=[dict(image_id=0, orig_size=(32, 32), scale=(1.0, 1.0))])
    head = DBHead([8], [4], postprocessor=dict(type="DBPostProcessor", val=dict(box_threshold=0.4)))
    outputs = {"prob_logits": logits, "thresh": torch.zeros_like(logits),
               "binary": torch.zeros_like(logits)}
    assert len(head.postprocess(outputs, batch, stage="val")[0].polygons) == 1
    assert len(head.postprocess(outputs, batch, stage="test")[0].polygons) == 0


def test_old_recipe_keys_name_the_new_ones() -> None:
    backbone = dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3, 4))
    with pytest.raises(ConfigError, match=r"model\.head\.postprocess was renamed "
                                          r"model\.head\.postprocessor"):
        Model(backbone=backbone, neck=dict(type="DBFPN", inner_channels=16),
              head=dict(type="DBHead", postprocess=dict(type="DBPostProcessor")))
    with pytest.raises(ConfigError, match=r"model\.head\.inner_channels was renamed "
                                          r"model\.neck\.inner_channels"):
        Model(backbone=backbone, head=dict(type="DBHead", inner_channels=16))
    with pytest.raises(ConfigError, match=r"one fused feature map, got 4 levels.*DBFPN"):
        Model(backbone=backbone, head=dict(type="DBHead"))


def test_checkpoint_with_the_neck_inside_the_head_loads() -> None:
    """Weights saved when DBHead built its neck (keys model.head.neck.*) load into
    model.neck (DBFPN.remap_old_keys) and give the same outputs."""
    model = _tiny_model().eval()
    old = {(k.replace("neck.", "head.neck.", 1) if k.startswith("neck.") else k): v
           for k, v in model.state_dict().items()}
    assert any(k.startswith("head.neck.lateral") for k in old)
    fresh = Model(backbone=dict(type="TimmBackbone", name="resnet10t", out_indices=(1, 2, 3, 4)),
                  neck=dict(type="DBFPN", inner_channels=32), head=dict(type="DBHead")).eval()
    missing, unexpected = fresh.load_state_dict(old, strict=True)
    assert not missing and not unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["prob_logits"], model(x)["prob_logits"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k \\(amplifying factor\\)"),
        (dict(branch_channels=0), "branch_channels must be an int >= 1"),
        (dict(loss=3), "loss must be a config dict or a callable"),
        (dict(postprocessor=dict(type="DBPostProcessor", output="mask")), "output"),
        (dict(in_channels=[8, 16], strides=[4, 8]), "one fused feature map"),
        (dict(norm="layer"), "norm must be one of"),
    ],
)
def test_config_errors(kwargs, match) -> None:
    args = dict(in_channels=[8], strides=[4]) | kwargs
    with pytest.raises(ConfigError, match=match):
        DBHead(**args)


def test_missing_or_misshaped_targets_are_data_errors() -> None:
    model = _tiny_model()
    batch = _batch([WORDS])
    del batch.targets[0]["thresh_map"]
    with pytest.raises(DataError, match="no 'thresh_map' target"):
        model.loss(batch)
    batch = _batch([WORDS])
    batch.targets[0]["prob_map"] = batch.targets[0]["prob_map"][:40]
    with pytest.raises(DataError, match="expected \\(48, 80\\)"):
        model.loss(batch)


def test_hrnet_w44_levels_feed_the_head() -> None:
    """HRNet-W44 via timm features_only, shapes only (meta device: no weights allocated)."""
    with torch.device("meta"):
        incre = TimmBackbone("hrnet_w44", out_indices=(1, 2, 3, 4))
        branches = TimmBackbone("hrnet_w44", out_indices=(1, 2, 3, 4), feature_location="")
    assert (incre.channels, incre.strides) == ([128, 256, 512, 1024], [4, 8, 16, 32])
    assert (branches.channels, branches.strides) == ([44, 88, 176, 352], [4, 8, 16, 32])
    neck = DBFPN(branches.channels, branches.strides)
    head = DBHead(neck.channels, neck.strides)
    assert neck.channels == [256] and head.branch_channels == 64  # the paper's widths


@pytest.mark.slow
def test_hrnet_w44_model_at_1024_px_on_meta_device() -> None:
    with torch.device("meta"):
        model = Model(backbone=dict(type="TimmBackbone", name="hrnet_w44",
                                    out_indices=(1, 2, 3, 4), feature_location=""),
                      neck=dict(type="DBFPN"), head=dict(type="DBHead"))
        out = model(torch.empty(1, 3, 1024, 1024))
    assert all(v.shape == (1, 1, 1024, 1024) for v in out.values())


def test_probability_map_starts_at_a_low_prior() -> None:
    """Untrained, (almost) every pixel is below the default binarization threshold 0.3."""
    model = _tiny_model().eval()
    with torch.no_grad():
        prob = model(torch.randn(2, 3, 64, 96))["prob_logits"].sigmoid()
    assert prob.median() < 0.05 and (prob > 0.3).float().mean() < 0.05
