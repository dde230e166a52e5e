"""The second export format: a traced TorchScript module (``--format torchscript``).

The same graphs as ONNX (:mod:`detlab.export.graphs`), traced with ``torch.jit.trace``; the
``detlab.*`` metadata travel as the extra file ``detlab.json`` (``torch.jit.load(path,
_extra_files={"detlab.json": ""})``). Checked against the checkpoint on the val batch like
the ONNX file; ``detlab predict`` does not run ``.pt`` files (use ONNX for that).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .parity import ParityReport

__all__ = ["export_torchscript", "check_torchscript"]


def export_torchscript(graph: nn.Module, images: Tensor, out: str | Path,
                       metadata: dict[str, Any]) -> Path:
    """Trace ``graph`` on ``images`` and save it at ``out`` with ``metadata`` as
    ``detlab.json``. Traced shapes follow the input (a batch of any size runs, except for
    Faster R-CNN, whose per-image loop is unrolled)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings: Python ints from fixed shapes
        traced = torch.jit.trace(graph, (images,), check_trace=False)
    torch.jit.save(traced, str(out), _extra_files={"detlab.json": json.dumps(metadata)})
    return out


def check_torchscript(graph: nn.Module, path: str | Path, images: Tensor, names: list[str],
                      per_image: bool, atol: float = 1e-4) -> ParityReport:
    """Max abs diff of every output of the saved module vs ``graph`` on ``images`` (image by
    image when ``per_image``)."""
    report = ParityReport(batch_size=int(images.shape[0]), atol=atol, runtime="TorchScript")
    loaded = torch.jit.load(str(path))
    chunks = [images[i : i + 1] for i in range(images.shape[0])] if per_image else [images]
    with torch.no_grad():
        for chunk in chunks:
            for name, ref, got in zip(names, graph(chunk), loaded(chunk)):
                if ref.shape != got.shape:
                    diff = float("inf")
                elif ref.numel() == 0:
                    diff = 0.0
                else:
                    diff = float(np.abs(ref.double().numpy() - got.double().numpy()).max())
                report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), diff)
    for name, diff in report.max_abs_diff.items():
        if not diff <= atol:
            report.problems.append(f"{name}: max abs diff {diff:.3g} > {atol:g}")
    return report
