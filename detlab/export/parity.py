"""The exported graph against the checkpoint, on a real batch, with onnxruntime.

Raw outputs: the largest absolute difference per output must be <= ``atol`` (1e-4).
Post-processed boxes: every image keeps the same boxes as the checkpoint's own post-processing
(each pairs with one of the same label; scores within ``atol``, coordinates ``BOX_ATOL`` px);
segmentation masks must be identical; probability maps within ``atol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .graphs import RawGraph, head_family, test_postprocessor
from .onnx import require

__all__ = ["ParityReport", "session", "run_session", "match_boxes", "check_parity"]

ATOL = 1e-4
#: Kept box coordinates (input pixels): the decode multiplies raw distances by the stride (up to
#: 64), so float32 rounding of the raw outputs (~1e-5) grows to ~1e-3 px there.
BOX_ATOL = 1e-2


@dataclass
class ParityReport:
    """What :func:`check_parity` measured: ``max_abs_diff`` per compared output, problems
    (empty when parity holds) and, for box graphs, the kept boxes per image."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    #: detections that differ only at the cut (a top-k / max-detections cap among scores
    #: tied to float noise; :func:`match_boxes`)
    at_cut: int = 0
    differing_pixels: dict[str, int] = field(default_factory=dict)
    batch_size: int = 0
    atol: float = ATOL
    box_atol: float = BOX_ATOL
    runtime: str = "onnxruntime"

    @property
    def ok(self) -> bool:
        """Whether parity holds."""
        return not self.problems

    def lines(self) -> list[str]:
        """Human-readable report lines (printed by ``detlab export``)."""
        out = [f"parity vs {self.runtime} on {self.batch_size} val image(s) (atol {self.atol:g}"
               + (f", kept box coordinates {self.box_atol:g} px" if self.kept else "") + "):"]
        out += [f"  {name}: max abs diff {diff:.3g}" for name, diff in self.max_abs_diff.items()]
        out += [f"  {name}: {n} pixel(s) differ" for name, n in self.differing_pixels.items()]
        if self.kept:
            same = ("identical to the checkpoint's" if not self.at_cut else
                    f"the checkpoint's, but for {self.at_cut} at the cut-off score, tied to "
                    f"{CUT_SCORE_ATOL:g}")
            out.append(f"  kept boxes per image: {self.kept} ({same})"
                       if self.ok else f"  kept boxes per image (onnx): {self.kept}")
        out += [f"  FAILED: {p}" for p in self.problems]
        out.append("  parity: " + ("ok" if self.ok else "FAILED"))
        return out


def session(path: str | Path) -> Any:
    """An onnxruntime CPU session for ``path``, using as many threads as torch does."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are not the user's
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(sess: Any, images: Tensor | np.ndarray, per_image: bool,
                batched: Sequence[bool] | None = None) -> list[np.ndarray]:
    """The session's outputs for ``images`` ``(B, C, H, W)``: one run, or one run per image
    (a fixed batch of 1), batch-shaped outputs (``batched``, default all) concatenated along
    axis 0 and the others (anchor points, strides) taken from the first run."""
    arr = images.detach().cpu().float().numpy() if isinstance(images, Tensor) else images
    if not per_image:
        return sess.run(None, {"images": arr})
    runs = [sess.run(None, {"images": arr[i : i + 1]}) for i in range(arr.shape[0])]
    batched = [True] * len(runs[0]) if batched is None else list(batched)
    return [np.concatenate([r[j] for r in runs], axis=0) if batched[j] else runs[0][j]
            for j in range(len(runs[0]))]


def _diff(a: Any, b: np.ndarray) -> float:
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


#: Scores within this of the lowest kept score are "at the cut": where a top-k or
#: max-detections cap falls among scores that differ between runtimes by float noise (~1e-6),
#: either runtime may keep either box.
CUT_SCORE_ATOL = 1e-5


def match_boxes(ref: tuple[Any, Any, Any], got: tuple[Any, Any, Any], box_atol: float
                ) -> tuple[float, float, int] | None:
    """Pair every reference detection with an unused one of ``got`` of the same label whose
    coordinates are within ``box_atol`` (boxes whose scores tie to float precision may come out
    in either order). Detections left unpaired are accepted only at the cut (their score within
    :data:`CUT_SCORE_ATOL` of the lowest score kept by either side).

    Returns ``(max box diff, max score diff, boxes differing at the cut)``, or None when the
    counts differ or a detection above the cut does not pair."""
    rb, rs, rl = (np.asarray(t.detach().cpu() if isinstance(t, Tensor) else t, np.float64)
                  for t in ref)
    gb, gs, gl = (np.asarray(t, np.float64) for t in got)
    if len(rb) != len(gb):
        return None
    if not len(rb):
        return 0.0, 0.0, 0
    cut = min(float(rs.min()), float(gs.min())) + CUT_SCORE_ATOL
    free = np.ones(len(gb), bool)
    box_diff = score_diff = 0.0
    unpaired = 0
    for b, s, lab in sorted(zip(rb, rs, rl), key=lambda t: -t[1]):
        diffs = np.abs(gb - b).max(axis=1)
        ok = free & (gl == lab) & (diffs <= box_atol)
        if not ok.any():
            if s > cut:
                return None
            unpaired += 1
            continue
        j = int(np.flatnonzero(ok)[np.argmin(np.abs(gs[ok] - s))])
        free[j] = False
        box_diff, score_diff = max(box_diff, float(diffs[j])), max(score_diff,
                                                                   abs(float(gs[j]) - s))
    if (gs[free] > cut).any():
        return None
    return box_diff, score_diff, unpaired


def _compare_boxes(report: ParityReport, i: int, ref: tuple[Tensor, Tensor, Tensor],
                   got: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    report.kept.append(len(got[0]))
    matched = match_boxes(ref, got, report.box_atol)
    if matched is None:
        report.problems.append(
            f"image {i}: onnx keeps {len(got[0])} boxes (labels {got[2].tolist()[:10]}), the "
            f"checkpoint {len(ref[0])} ({ref[2].tolist()[:10]}), not the same boxes")
        return
    for name, diff in zip(("boxes", "scores"), matched[:2]):
        report.max_abs_diff[name] = max(report.max_abs_diff.get(name, 0.0), diff)
    report.at_cut += matched[2]


def check_parity(model: nn.Module, graph: nn.Module, onnx_path: str | Path, images: Tensor,
                 dynamic_batch: bool, batched: Sequence[bool] | None = None,
                 atol: float = ATOL) -> ParityReport:
    """Compare ``graph`` exported at ``onnx_path`` with ``model`` on ``images`` (module
    docstring). A fixed-batch file runs image by image (``batched``: which outputs have a
    batch axis, :func:`~detlab.export.graphs.batched_outputs`); a dynamic one in one run."""
    family = head_family(model.head)
    report = ParityReport(batch_size=int(images.shape[0]), atol=atol)
    sess = session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    per_image = not dynamic_batch or family == "faster_rcnn"
    with torch.no_grad():
        if family == "faster_rcnn":  # one image per run: proposals differ in number
            _faster_rcnn(report, model, graph, sess, names, images)
        else:
            got = dict(zip(names, run_session(sess, images, per_image, batched)))
            if isinstance(graph, RawGraph):
                for name, ref in zip(names, graph(images)):
                    report.max_abs_diff[name] = _diff(ref, got[name])
            elif family == "yolo":
                _yolo(report, model, images, got)
            else:
                for name, ref in zip(names, graph(images)):
                    if ref.dtype == torch.bool:
                        wrong = int((ref.cpu().numpy() != got[name]).sum())
                        report.differing_pixels[name] = wrong
                        if wrong:
                            report.problems.append(f"{name}: {wrong} pixel(s) differ")
                    else:
                        report.max_abs_diff[name] = _diff(ref, got[name])
    for name, diff in report.max_abs_diff.items():
        limit = report.box_atol if (report.kept and name == "boxes") else atol
        if not diff <= limit:
            report.problems.append(f"{name}: max abs diff {diff:.3g} > {limit:g}")
    return report


def _yolo(report: ParityReport, model: nn.Module, images: Tensor,
          got: dict[str, np.ndarray]) -> None:
    """Reference: the head's own decode + BoxPostProcessor (input pixels, before the clip to
    the original image that predict adds on both paths)."""
    head = model.head
    out = model(images)
    boxes = head.decode(out["box_dist"], out["anchor_points"], out["strides"])
    ref = test_postprocessor(head).batched(boxes, out["cls_logits"].float().sigmoid())
    for i, det in enumerate(ref):
        n = int(got["num_detections"][i])
        _compare_boxes(report, i, det, (got["boxes"][i, :n], got["scores"][i, :n],
                                        got["labels"][i, :n]))


def _faster_rcnn(report: ParityReport, model: nn.Module, graph: nn.Module, sess: Any,
                 names: list[str], images: Tensor) -> None:
    from ..structures import Batch

    raw = isinstance(graph, RawGraph)
    for i in range(images.shape[0]):
        image = images[i : i + 1]
        got = dict(zip(names, sess.run(None, {"images": image.cpu().numpy()})))
        if raw:
            for name, ref in zip(names, graph(image)):
                key = name
                report.max_abs_diff[key] = max(report.max_abs_diff.get(key, 0.0),
                                               _diff(ref, got[name]))
            continue
        h, w = (int(v) for v in image.shape[-2:])
        meta = {"scale": (1.0, 1.0), "pad": (0, 0), "orig_size": (h, w), "input_size": (h, w)}
        pred = model.predict(Batch(images=image, meta=[meta]), stage="test")[0]
        _compare_boxes(report, i, (pred.boxes, pred.scores, pred.labels),
                       (got["boxes"], got["scores"], got["labels"]))
