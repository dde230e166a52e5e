"""Every head under ``bf16`` autocast with channels-last weights and images (what
``train.precision=bf16-mixed`` and ``tools/bench_train.py --channels-last`` run): finite
float32 loss terms, finite gradients, predictions with the same count and dtype as in float32.
CPU autocast runs the same code path as CUDA's (device-agnostic heads: nothing here is
CPU-only), so this catches a head that breaks under mixed precision without a GPU."""

from __future__ import annotations

import pytest
import torch
from test_every_head import CASES

from detlab.models import Model


@pytest.mark.parametrize("name", sorted(CASES))
def test_head_under_bf16_autocast_channels_last(name: str) -> None:
    torch.set_num_threads(1)
    case = CASES[name]
    torch.manual_seed(0)
    model = Model(**case.model).to(memory_format=torch.channels_last)
    batch = case.batch()
    batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(batch)
    for key, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), (key, value)
        assert value.dtype == torch.float32, (key, value.dtype)  # losses reduce in fp32
    sum(losses.values()).backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad[:5]
    model.eval()
    with torch.no_grad():
        reference = model.predict(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.predict(batch)
    assert len(mixed) == len(reference) == len(batch.images)
    for ref, got in zip(reference, mixed):
        for field in ("boxes", "scores", "probs"):
            r, g = getattr(ref, field), getattr(got, field)
            if r is not None:
                assert g is not None and g.dtype == r.dtype and torch.isfinite(g).all(), field
