"""What ``tools/bench_train.py --compile`` compiles (backbone, neck, head forward; Faster R-CNN's
RPN conv head and RoI box head) traces into one graph per module with TorchDynamo
(``fullgraph=True``) and does not recompile on the next step. Dynamo only (``backend="eager"``):
tracing is what breaks or recompiles, and inductor's C++ build would take minutes here (the
bench runs it)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from test_every_head import CASES

from detlab.models import Model


def _parts(model):
    """The parts ``tools/bench_train.py``'s ``_detlab_parts`` compiles."""
    head = model.head
    if hasattr(head, "rpn") and hasattr(head, "roi"):
        return [model.backbone, model.neck, head.rpn.core.head, head.roi.box_head]
    return [p for p in (model.backbone, model.neck, head) if p is not None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_parts_have_no_graph_breaks_or_recompiles(name):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, batch = Model(**CASES[name].model), CASES[name].batch()
    dynamo.reset()
    for part in _parts(model):  # fullgraph: a graph break raises
        part.forward = torch.compile(part.forward, backend="eager", fullgraph=True)
    try:
        with dynamo.config.patch(error_on_recompile=True):
            for _ in range(2):  # the second training step on the same shapes reuses the graphs
                losses = model.loss(batch)
                sum(losses.values()).backward()
    finally:
        dynamo.reset()
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_check_catches_a_recompile():
    """The same setting fails when a second call needs a new graph (here: a new dtype)."""
    dynamo.reset()
    layer = torch.nn.Linear(3, 2)
    layer.forward = torch.compile(layer.forward, backend="eager", fullgraph=True)
    try:
        with dynamo.config.patch(error_on_recompile=True):
            layer(torch.randn(4, 3))
            with pytest.raises(Exception, match="(?i)recompil"):
                layer.double()(torch.randn(4, 3, dtype=torch.float64))
    finally:
        dynamo.reset()
