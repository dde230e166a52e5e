"""TimmBackbone and UNetEncoder: shapes, weights from a local checkpoint, freezing, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import build_model_with_cfg, register_model
from torch import nn

from detlab.errors import ConfigError
from detlab.models.backbones import TimmBackbone, UNetEncoder
from detlab.registry import BACKBONES


@pytest.mark.parametrize(
    "kwargs, channels, strides",
    [
        (dict(), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
        (dict(in_chans=1), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
        (dict(out_indices=(1, 3)), [64, 256], [4, 16]),
    ],
)
def test_timm_resnet18_channels_strides_and_shapes(kwargs, channels, strides):
    bb = BACKBONES.build(dict(type="TimmBackbone", name="resnet18", **kwargs))
    assert bb.channels == channels and bb.strides == strides
    feats = bb(torch.randn(2, kwargs.get("in_chans", 3), 64, 96))
    expected = [(2, c, 64 // s, 96 // s) for c, s in zip(channels, strides)]
    assert [tuple(f.shape) for f in feats] == expected


def _saved_resnet18(tmp_path, wrap: str = "none"):
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    for v in state.values():  # make every tensor distinctive (BN weights are all ones at init)
        if v.is_floating_point():
            v.copy_(torch.randn_like(v))
    if wrap == "safetensors":
        path = tmp_path / "r18.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "r18.pth"
        torch.save({"state_dict": state} if wrap == "dict" else state, path)
    return str(path), state


@pytest.mark.parametrize("wrap", ["none", "dict", "safetensors"])
def test_checkpoint_weights_are_loaded(tmp_path, wrap):
    path, state = _saved_resnet18(tmp_path, wrap)
    bb = TimmBackbone("resnet18", checkpoint=path)
    loaded = bb.body.state_dict()
    assert len(loaded) > 100
    for k, v in loaded.items():  # FeatureListNet keeps resnet's key names (fc dropped)
        assert torch.equal(v, state[k]), k


def test_checkpoint_input_conv_adapted_to_one_channel(tmp_path):
    path, state = _saved_resnet18(tmp_path)
    bb = TimmBackbone("resnet18", checkpoint=path, in_chans=1)
    # timm's adapt_input_conv sums the RGB filters for a grey-scale input
    expected = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(bb.body.conv1.weight, expected)
    assert torch.equal(bb.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match=r"nope\.pth.*does not exist"):
        TimmBackbone("resnet18", checkpoint=missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ConfigError, match=r"garbage\.pth.*not a loadable"):
        TimmBackbone("resnet18", checkpoint=str(garbage))
    other = tmp_path / "r10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), other)
    with pytest.raises(ConfigError, match=r"r10t\.pth.*does not match.*resnet18.*keys"):
        TimmBackbone("resnet18", checkpoint=str(other))


def test_unknown_name_suggests_close_names():
    with pytest.raises(ConfigError, match=r"'resnet181'.*did you mean:.*resnet18"):
        TimmBackbone("resnet181")


class _PlainNet(nn.Module):
    """A model with no ``feature_info``: timm cannot wrap it with features_only."""

    def __init__(self, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3)

    def forward(self, x):
        return self.conv(x)


def detlab_test_plainnet(pretrained: bool = False, **kwargs):
    return build_model_with_cfg(_PlainNet, "detlab_test_plainnet", pretrained, **kwargs)


def test_model_without_features_only_support():
    if not timm.is_model("detlab_test_plainnet"):
        register_model(detlab_test_plainnet)
    with pytest.raises(ConfigError, match=r"detlab_test_plainnet.*features_only"):
        TimmBackbone("detlab_test_plainnet")


def test_bad_timm_kwarg_is_config_error():
    with pytest.raises(ConfigError, match="resnet18.*no_such_arg"):
        TimmBackbone("resnet18", no_such_arg=1)


@pytest.mark.parametrize(
    "name, frozen_stages, frozen_prefixes",
    [
        ("resnet18", 0, ()),
        ("resnet18", 2, ("conv1.", "bn1.", "layer1.")),  # stem (level 'act1') + layer1
        ("convnext_atto", 1, ("stem_0.", "stem_1.", "stages_0.")),  # first level is stages.0
        ("mobilenetv3_small_050", 2, ("conv_stem.", "bn1.", "blocks.0.")),
    ],
)
def test_frozen_stages(name, frozen_stages, frozen_prefixes):
    bb = TimmBackbone(name, frozen_stages=frozen_stages)
    params = dict(bb.body.named_parameters())
    frozen = {n for n, p in params.items() if not p.requires_grad}
    assert frozen == {n for n in params if n.startswith(frozen_prefixes)}
    assert len(frozen) < len(params)


def test_frozen_batch_norms_stay_in_eval_mode():
    bb = TimmBackbone("resnet18", frozen_stages=2).train()
    assert not bb.body.bn1.training and not bb.body.layer1[0].bn2.training
    assert bb.body.layer2[0].bn1.training
    before = bb.body.layer1[0].bn1.running_mean.clone()
    bb(torch.randn(2, 3, 64, 64) * 5 + 3)
    assert torch.equal(bb.body.layer1[0].bn1.running_mean, before)
    assert not torch.equal(bb.body.layer2[0].bn1.running_mean, torch.zeros(128))


@pytest.mark.parametrize("frozen_stages", [-1, 6, 1.5])
def test_frozen_stages_out_of_range(frozen_stages):
    with pytest.raises(ConfigError, match="frozen_stages"):
        TimmBackbone("resnet18", frozen_stages=frozen_stages)


@pytest.mark.parametrize(
    "kwargs, channels, strides",
    [
        (dict(), [32, 64, 128, 256, 512], [1, 2, 4, 8, 16]),
        (dict(depth=3, init_features=8, in_chans=3, norm="instance"), [8, 16, 32], [1, 2, 4]),
        (dict(depth=2, init_features=4, norm="none"), [4, 8], [1, 2]),
    ],
)
def test_unet_encoder_shapes(kwargs, channels, strides):
    enc = UNetEncoder(**kwargs)
    assert enc.channels == channels and enc.strides == strides
    feats = enc(torch.randn(2, kwargs.get("in_chans", 1), 32, 48))
    expected = [(2, c, 32 // s, 48 // s) for c, s in zip(channels, strides)]
    assert [tuple(f.shape) for f in feats] == expected
    n_norms = sum(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in enc.modules())
    assert n_norms == (0 if kwargs.get("norm") == "none" else 2 * len(channels))


@pytest.mark.parametrize("kwargs", [dict(depth=0), dict(init_features=-2), dict(norm="layer")])
def test_unet_encoder_bad_args(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        UNetEncoder(**kwargs)


# -- pretrained=True without network ------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (every TCP connection fails at once) and an empty weight cache."""
    import socket

    import huggingface_hub

    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return attempts


def test_pretrained_offline_fails_in_seconds_saying_what_to_do(offline, monkeypatch):
    import time

    def no_download(*args, **kwargs):  # timm must not get as far as its download retries
        raise AssertionError("timm.create_model was called")

    monkeypatch.setattr(timm, "create_model", no_download)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"timm/resnet18\.a1_in1k.*not in the local cache and "
                       r"huggingface\.co:443 cannot be reached.*model\.backbone\.checkpoint="):
        TimmBackbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < 2.0
    assert offline == [("huggingface.co", 443)]  # one probe, no retries
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        TimmBackbone("resnet18", pretrained=True)
    assert len(offline) == 1  # offline mode: not even a probe


def test_pretrained_uses_the_hub_cache_without_network(offline, tmp_path):
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in timm.create_model("resnet18").state_dict().items()}
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / "0123abc" / "model.safetensors"))
    bb = TimmBackbone("resnet18", pretrained=True)
    assert offline == []  # no connection attempted
    for k, v in bb.body.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("how", ["checkpoint", "overlay"])
def test_pretrained_with_a_local_file_needs_no_network(offline, tmp_path, how):
    path, state = _saved_resnet18(tmp_path)
    kwargs = (dict(checkpoint=path) if how == "checkpoint"
              else dict(pretrained_cfg_overlay=dict(file=path)))
    bb = TimmBackbone("resnet18", pretrained=True, **kwargs)
    assert offline == []
    for k, v in bb.body.state_dict().items():
        assert torch.equal(v, state[k]), k
