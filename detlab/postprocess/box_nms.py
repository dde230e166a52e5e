"""Box post-processing: score threshold, pre-NMS top-k, NMS, max detections."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_float, check_int
from ..errors import ConfigError
from ..ops.nms import (
    NMS_METHODS,
    PER_CLASS_ROWS_FROM,
    NMSMethod,
    nms,
    per_class_standard_rows,
)
from ..registry import POSTPROCESSORS

__all__ = ["BoxPostProcessor"]

#: planned_prefix: images seen before planning, and how many recent ones it looks at.
_PLAN_AFTER, _PLAN_WINDOW = 4, 64


Detections = tuple[Tensor, Tensor, Tensor]


@POSTPROCESSORS.register
class BoxPostProcessor:
    """Turn per-box class probabilities into final detections for one image or a batch.

    Multi-label like YOLOv8: every (box, class) pair with probability > ``score_threshold`` is a
    candidate, so one box may be kept for several classes (``multi_label=False`` keeps only each
    box's best class). The ``pre_nms_topk`` highest-scoring candidates go through NMS
    (:func:`detlab.ops.nms.nms`), and the ``max_detections`` best survivors are returned.
    Equal scores are ordered by ``box * C + class`` id, and NMS only looks as far down the
    candidates as ``max_detections`` survivors need (:meth:`_prefix`): the detections are those
    of one NMS pass over all candidates in a stable descending sort, ties included.

    Args:
        score_threshold: minimum class probability of a candidate (and the final threshold of
            Soft-NMS). 0.001 for mAP evaluation, ~0.25 for deployment.
        pre_nms_topk: candidates kept before NMS, per image.
        max_detections: detections returned per image.
        iou_threshold: NMS threshold (see :func:`detlab.ops.nms.nms`).
        method: ``"standard"``, ``"soft_gaussian"``, ``"soft_linear"`` or ``"diou"``.
        class_agnostic: suppress across classes too.
        sigma: Gaussian Soft-NMS width.
        multi_label: every class over the threshold is a candidate (True), or only the best.
    """

    #: Detections per image and class an evaluator reads (set by ``detlab sweep`` and
    #: ``detlab eval`` from :meth:`~detlab.evaluation.base.Evaluator.detections_read_per_class`
    #: through :func:`~detlab.postprocess.evaluated.evaluated_only`), or ``None``.
    #: When set below ``max_detections``, hard NMS also stops once every class with a
    #: candidate has this many detections. Each class then holds the first
    #: ``min(evaluated_per_class, n_c)`` of the ``n_c`` detections the full output has of it,
    #: in the same order (the output is a prefix of the full one), so an evaluator that reads
    #: no more gives the same numbers from less NMS; the list is not the full output, so it
    #: is never set where predictions are written or shown.
    evaluated_per_class: int | None = None

    #: Settings ``detlab sweep`` may vary (``model.head.postprocessor.<knob>``).
    sweepable: tuple[str, ...] = (
        "score_threshold", "pre_nms_topk", "max_detections", "iou_threshold", "method",
        "class_agnostic", "sigma", "multi_label",
    )

    def __init__(
        self,
        score_threshold: float = 0.001,
        pre_nms_topk: int = 30000,
        max_detections: int = 300,
        iou_threshold: float = 0.7,
        method: NMSMethod = "standard",
        class_agnostic: bool = False,
        sigma: float = 0.5,
        multi_label: bool = True,
    ) -> None:
        owner = "BoxPostProcessor"
        if method == "wbf":
            raise ConfigError(
                f"{owner}: method='wbf' is not a single-model post-processing: Weighted Boxes "
                "Fusion averages the boxes several models (or test-time augmentation passes) "
                "found for one object, and over one model's candidates at an evaluation score "
                "threshold its averaged score is diluted by the many low-score near-duplicates "
                "of every box (and 'max' confidence makes it NMS with moved boxes). Fuse the "
                "outputs of several models with detlab.ops.wbf.weighted_boxes_fusion; here use "
                f"one of {NMS_METHODS}"
            )
        self.score_threshold = check_float(owner, "score_threshold", score_threshold, low=0, high=1)
        self.iou_threshold = check_float(owner, "iou_threshold", iou_threshold, low=0, high=1)
        self.pre_nms_topk = check_int(owner, "pre_nms_topk", pre_nms_topk, low=1)
        self.max_detections = check_int(owner, "max_detections", max_detections, low=1)
        self.method: NMSMethod = check_choice(owner, "method", method, NMS_METHODS)
        self.sigma = check_float(owner, "sigma", sigma, low=0, low_open=True)
        self.class_agnostic = check_bool(owner, "class_agnostic", class_agnostic)
        self.multi_label = check_bool(owner, "multi_label", multi_label)

    def ignored_settings(self) -> dict[str, str]:
        """Settings the chosen ``method`` makes no difference to, with the reason (for
        ``detlab sweep``, which refuses or flags a sweep over them)."""
        ignored = {}
        if self.method == "soft_gaussian":
            ignored["iou_threshold"] = ("Gaussian Soft-NMS decays every overlapping box by "
                                        "exp(-IoU²/sigma) and has no IoU threshold")
        if self.method != "soft_gaussian":
            ignored["sigma"] = f"sigma is the width of Gaussian Soft-NMS, not of {self.method!r}"
        return ignored

    def __repr__(self) -> str:
        return (
            f"BoxPostProcessor(score_threshold={self.score_threshold}, pre_nms_topk="
            f"{self.pre_nms_topk}, max_detections={self.max_detections}, iou_threshold="
            f"{self.iou_threshold}, method={self.method!r}, class_agnostic={self.class_agnostic},"
            f" sigma={self.sigma}, multi_label={self.multi_label})"
        )

    def candidates(self, scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``k`` best (box, class) candidates of each image's ``(B, N, C)`` probabilities.

        Returns ``(values, box_index, labels)``, each ``(B, k)``, sorted by decreasing value,
        equal values by increasing ``box * C + class`` id (by box index when not
        ``multi_label``), so a shorter prefix is always the start of a longer one and NMS
        breaks ties the same way however many candidates it is given. Values not over
        ``score_threshold`` are set to -1 (so the valid ones form a prefix).
        """
        b, n, c = scores.shape
        if self.multi_label:
            flat = scores.reshape(b, n * c)
        else:
            flat, labels_all = scores.max(dim=2)
        values, idx = _ordered_topk(flat, k)
        if self.multi_label:
            box_index, labels = idx // c, idx % c
        else:
            box_index, labels = idx, labels_all.gather(1, idx)
        values = torch.where(values > self.score_threshold, values, torch.full_like(values, -1))
        return values, box_index, labels

    def __call__(self, boxes: Tensor, scores: Tensor) -> Detections:
        """Detections of one image: ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N, C)`` probabilities
        → ``(boxes (K, 4), scores (K,), labels (K,) int64)``, sorted by decreasing score."""
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.dim() != 2 or (
            scores.shape[0] != boxes.shape[0]
        ):
            raise ValueError(
                f"boxes must be (N, 4) and scores (N, C), got {tuple(boxes.shape)}, "
                f"{tuple(scores.shape)}"
            )
        return self.batched(boxes[None], scores[None])[0]

    def batched(
        self, boxes: Tensor | Sequence[Tensor], scores: Tensor | Sequence[Tensor]
    ) -> list[Detections]:
        """Detections for a batch: ``(B, N, 4)`` and ``(B, N, C)`` tensors, or lists of per-image
        ``(N_i, 4)`` and ``(N_i, C)`` tensors → one ``(boxes, scores, labels)`` per image."""
        if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
            if len(boxes) != len(scores):
                raise ValueError(f"{len(boxes)} box tensors but {len(scores)} score tensors")
            return [self.batched(b[None], s[None])[0] for b, s in zip(boxes, scores)]
        if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.dim() != 3 or (
            scores.shape[:2] != boxes.shape[:2]
        ):
            raise ValueError(
                f"boxes must be (B, N, 4) and scores (B, N, C), got {tuple(boxes.shape)}, "
                f"{tuple(scores.shape)}"
            )
        b, n, c = scores.shape
        if n == 0 or c == 0:
            return [_empty(boxes, scores) for _ in range(b)]
        limit = min(self.pre_nms_topk, n * c if self.multi_label else n)
        return self._prefix(boxes, scores, limit)

    def _prefix(self, boxes: Tensor, scores: Tensor, limit: int) -> list[Detections]:
        """NMS over a score-sorted prefix of the candidates, lengthened only where needed.

        Greedy (standard, DIoU) NMS keeps a box or not by looking only at higher-scoring boxes,
        so the first ``max_detections`` survivors of a prefix are those of all candidates.
        Soft-NMS picks are exact while the picked (decayed) score is >= the best score left
        out of the prefix (scores only decay; ties go to the lower, in-prefix index).

        Hard NMS on the CPU starts with :meth:`planned_prefix` candidates, everything else
        with :meth:`first_prefix`. For the images whose prefix gives
        fewer than ``max_detections`` exact detections, hard NMS continues where it stopped
        (:meth:`_continue_hard`) and Soft-NMS reruns x4 longer prefixes. Both are exact, and
        ~20x faster than NMS over 30000 candidates at a 0.001 threshold."""
        soft = self.method.startswith("soft")
        # CPU hard NMS plans its first prefix from the images before (its cost grows with the
        # candidates it is given); CUDA's kernel does not, and recording would sync per image
        learn = not soft and boxes.device.type == "cpu"
        k = self.planned_prefix(limit) if learn else self.first_prefix(limit)
        present = None if soft else self._classes_present(scores)
        out: list[Detections | None] = [None] * boxes.shape[0]
        pending = list(range(boxes.shape[0]))
        while pending:
            everyone = len(pending) == len(out)
            rows = scores if everyone else scores[pending]
            # Soft-NMS also needs the best candidate left out (the k+1-th) as a bound.
            values, box_index, labels = self.candidates(rows, min(limit, k + soft))
            bounds = values[:, k].tolist() if values.shape[1] > k else [None] * len(pending)
            values, box_index, labels = values[:, :k], box_index[:, :k], labels[:, :k]
            counts = (values >= 0).sum(dim=1).tolist()
            # one gather for all images, then views: per-image fancy indexing costs more
            candidates = (boxes if everyone else boxes[pending]).gather(
                1, box_index[..., None].expand(-1, -1, 4))
            unfinished = []
            many = [row for row, m in enumerate(counts) if m > PER_CLASS_ROWS_FROM]
            if many and self.method == "standard" and not self.class_agnostic and (
                    boxes.device.type == "cpu"):
                # what nms() does for each of these images, prepared for all of them at once
                batched = per_class_standard_rows(candidates, values, labels, counts, many,
                                                  self.iou_threshold)
            else:
                batched = {}
            for row, (i, m) in enumerate(zip(pending, counts)):
                cand = candidates[row, :m]
                if row in batched:
                    keep = batched[row][:self.max_detections]
                    kept = values[row, keep]
                else:
                    keep, kept = nms(
                        cand, values[row, :m], labels[row, :m], self.method, self.iou_threshold,
                        self.class_agnostic, self.sigma, self.score_threshold,
                        self.max_detections,
                    )
                exact = keep.numel()
                if soft and bounds[row] is not None and bounds[row] >= 0:
                    exact = int((kept >= bounds[row]).sum())
                out[i] = (cand[keep], kept, labels[row, :m][keep])
                needed = None
                if soft:
                    if not (exact >= self.max_detections or m < k or k >= limit):
                        unfinished.append(i)
                else:
                    needed = self._complete_at(keep, out[i][2], present, i, learn)
                    if needed is None and (m < k or k >= limit):
                        needed = m
                    elif needed is None:
                        seen = box_index[row, :m] * scores.shape[2] + labels[row, :m]
                        out[i], needed = self._continue_hard(boxes[i], scores[i], out[i], keep,
                                                             seen, limit, present, i)
                if learn and needed is not None:
                    self._record_needed(needed)
            pending, k = unfinished, min(limit, 4 * k)
        return out  # type: ignore[return-value]

    def first_prefix(self, limit: int) -> int:
        """Candidates per image in the first NMS pass: ``max(4 * max_detections, 1024)``, or all
        of them where that is over half (Soft-NMS, which reruns longer prefixes from the start)
        or over a quarter (hard NMS, which continues where a prefix fell short, at the cost of
        a ``topk`` and one more NMS call) of them."""
        k = min(limit, max(4 * self.max_detections, 1024))
        share = 2 if self.method.startswith("soft") else 4
        return limit if share * k >= limit else k

    def _classes_present(self, scores: Tensor) -> Tensor | None:
        """``(B, C)`` bool: the classes with a candidate in each image, when
        :attr:`evaluated_per_class` can end NMS early (else ``None``)."""
        cap = self.evaluated_per_class
        if cap is None or cap >= self.max_detections:
            return None
        if self.multi_label:
            return (scores > self.score_threshold).any(dim=1)
        best, label = scores.max(dim=2)  # only each box's best class is a candidate
        hits = torch.zeros(scores.shape[0], scores.shape[2], device=scores.device)
        return hits.scatter_add_(1, label, (best > self.score_threshold).float()) > 0

    def _complete_at(self, positions: Tensor, labels: Tensor, present: Tensor | None,
                     image: int, position: bool) -> int | None:
        """Whether hard NMS of an image is done, from its detections so far: their ascending
        candidate ``positions`` (in the image's sorted candidates) and ``labels``. Done when
        there are ``max_detections``, or (:attr:`evaluated_per_class`) each class in
        ``present[image]`` has that many. Returns ``None`` if not done, else how many
        candidates that took (``position``; 0 without it: the value costs a host read)."""
        n = positions.numel()
        at = None
        if n >= self.max_detections:
            if not position:
                return 0
            at = int(positions[self.max_detections - 1]) + 1
        cap = self.evaluated_per_class
        if present is not None and cap is not None and n >= cap:
            classes = present[image].nonzero().flatten()
            counts = torch.bincount(labels, minlength=present.shape[1])
            if classes.numel() and bool((counts[classes] >= cap).all()):
                if not position:
                    return 0
                # the cap-th detection of each class, in candidate order
                by_class = positions[torch.argsort(labels, stable=True)]
                starts = counts.cumsum(0) - counts
                last = int(by_class[starts[classes] + cap - 1].max()) + 1
                at = last if at is None else min(at, last)
        return at

    def _missing(self, labels: Tensor, present: Tensor | None, image: int) -> int:
        """Detections an image still lacks, given the ``labels`` of those it has: up to
        ``max_detections``, or (:attr:`evaluated_per_class`) the sum over its classes of
        what each lacks of that many, if fewer."""
        missing = self.max_detections - labels.numel()
        cap = self.evaluated_per_class
        if present is not None and cap is not None:
            classes = present[image].nonzero().flatten()
            counts = torch.bincount(labels, minlength=present.shape[1])[classes]
            missing = min(missing, int((cap - counts).clamp(min=0).sum()))
        return missing

    def planned_prefix(self, limit: int) -> int:
        """Candidates per image in the first hard-NMS pass on the CPU: the median of the
        prefixes the last 64 images needed (up to the candidate where their
        ``max_detections``-th detection was kept, or every class its
        :attr:`evaluated_per_class`-th, or all of theirs), at least
        ``max_detections``; :meth:`first_prefix` until 4 images have been seen. Only the
        speed depends on it, never the detections: a short prefix is continued
        (:meth:`_continue_hard`). On the VOC face set (6800 candidates an image) the images
        need 400-660 candidates at IoU 0.8 and 1850-6800 at IoU 0.5, so any fixed start is
        2-3x too long for the one or too short for the other."""
        needed = getattr(self, "_needed", None)
        if needed is None or len(needed) < _PLAN_AFTER:
            return self.first_prefix(limit)
        # the median: continuing a short prefix costs less than NMS over a long one
        median = sorted(needed)[len(needed) // 2]
        return min(limit, max(self.max_detections, median))

    def _record_needed(self, needed: int) -> None:
        if getattr(self, "_needed", None) is None:
            self._needed: deque[int] = deque(maxlen=_PLAN_WINDOW)
        self._needed.append(needed)

    def _continue_hard(self, boxes: Tensor, scores: Tensor, found: Detections,
                       found_at: Tensor, seen: Tensor, limit: int, present: Tensor | None,
                       image: int) -> tuple[Detections, int]:
        """Hard NMS of one image's ``(N, 4)`` boxes / ``(N, C)`` scores past the candidates
        already run (``seen``: their ``box * C + class`` ids), which kept only ``found`` (not
        enough: :meth:`_complete_at`), at candidate positions ``found_at``; ``present`` and
        ``image`` as there.

        The boxes kept so far stay kept, and each later candidate is suppressed exactly when
        a kept, higher-scoring box overlaps it: NMS over the kept boxes followed by the next
        candidates gives the decisions NMS over all candidates gives (kept boxes never
        suppress each other: the later would not have been kept). Each step takes as many
        further candidates as the keep rate so far predicts the missing detections need (x2,
        at least 256; :meth:`_missing`).
        New candidates are told apart by id, not by position: ``topk`` may order equal scores
        differently for a longer prefix. Also returns the prefix NMS over all candidates
        needed: up to the ``max_detections``-th kept one (or all valid ones)."""
        kept_boxes, kept_scores, kept_labels = found
        n, c = scores.shape
        done = seen.numel()
        seen_mask = torch.zeros(n * c, dtype=torch.bool, device=scores.device)
        seen_mask[seen] = True
        while True:
            rate = max(kept_boxes.shape[0], 1) / done
            missing = self._missing(kept_labels, present, image)
            more = max(256, int(2 * missing / rate))
            k = min(limit, done + more)
            values, box_index, labels = self.candidates(scores[None], k)
            m = int((values[0] >= 0).sum())
            ids = box_index[0, :m] * c + labels[0, :m]
            new = ~seen_mask[ids]
            seen_mask[ids] = True
            done = k
            index = box_index[0, :m][new]
            cand = torch.cat([kept_boxes, boxes[index]])
            cand_scores = torch.cat([kept_scores, values[0, :m][new]])
            cand_labels = torch.cat([kept_labels, labels[0, :m][new]])
            keep, kept = nms(cand, cand_scores, cand_labels, self.method, self.iou_threshold,
                             self.class_agnostic, self.sigma, self.score_threshold,
                             self.max_detections)
            # positions in the sorted candidates: the kept boxes come first and stay
            found_at = torch.cat([found_at, new.nonzero().flatten()])[keep]
            kept_boxes, kept_scores, kept_labels = cand[keep], kept, cand_labels[keep]
            needed = self._complete_at(found_at, kept_labels, present, image, True)
            if needed is not None:
                return (kept_boxes, kept_scores, kept_labels), needed
            if m < k or k >= limit:
                return (kept_boxes, kept_scores, kept_labels), m


def _ordered_topk(flat: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``topk`` of ``(B, M)`` values with ties ordered by index and, where tied values straddle
    the ``k``-th place, the lowest-index ones taken: the first ``k`` of a stable descending
    sort, without sorting all ``M`` (``topk`` alone leaves both to the implementation)."""
    values, idx = flat.topk(k, dim=1)
    if k == 0 or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        # an exported graph's TopK: ONNX specifies ties by lower index already
        return values, idx
    m = flat.shape[1]
    if values.dtype == torch.float32 and m < 2**31 and bool((values[:, -1] > 0).all()):
        # one sort of a unique int64 key: the bits of a float32 > 0 order as the value does
        # (> 0, not >= 0: -0.0 == 0.0 but its bits are negative)
        key = values.view(torch.int32).to(torch.int64) * m + (m - 1 - idx)
        perm = key.sort(dim=1, descending=True).indices
        values, idx = values.gather(1, perm), idx.gather(1, perm)
    else:
        idx, perm = idx.sort(dim=1)
        values, perm = values.gather(1, perm).sort(dim=1, descending=True, stable=True)
        idx = idx.gather(1, perm)
    if k < flat.shape[1]:
        last = values[:, -1:]
        inside = (values == last).sum(dim=1)
        outside = (flat == last).sum(dim=1) - inside
        for r in (outside > 0).nonzero().flatten().tolist():
            count = int(inside[r])
            idx[r, k - count:] = (flat[r] == last[r]).nonzero().flatten()[:count]
    return values, idx


def _empty(boxes: Tensor, scores: Tensor) -> Detections:
    return (
        boxes.new_zeros((0, 4)),
        scores.new_zeros((0,)),
        torch.zeros(0, dtype=torch.long, device=scores.device),
    )
