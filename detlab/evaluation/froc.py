"""FROC: lesion sensitivity vs mean false positives per scan, over score thresholds.

Inputs are scored candidates: ``tp_scores``, one per ground-truth lesion (the highest score of
a candidate that hits it; a lesion no candidate hits is left out but counted in
``num_lesions``), ``fp_scores``, one per candidate that hits no lesion, and ``num_scans``, the
number of scans (or slices) the false positives are averaged over. At a threshold ``t`` the
sensitivity is ``#(tp_scores >= t) / num_lesions`` and the false-positive rate
``#(fp_scores >= t) / num_scans``. This is the same operating-point construction as MONAI's
``compute_froc_curve_data`` (LUNA16 / CAMELYON16), except that MONAI leaves out the lowest
score as a threshold; here every distinct score is one, plus the point (0, 0) above the highest.
Sensitivities at given FP rates are linear interpolations of the curve (``np.interp``, as
MONAI's ``compute_froc_score``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["FROC_FP_RATES", "froc_curve", "froc_sensitivities", "froc_metric_names"]

# LUNA16's operating points: 1/8 ... 8 false positives per scan
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc_metric_names(rates: Sequence[float] = FROC_FP_RATES) -> tuple[str, ...]:
    """``froc_sens@<rate>`` for each rate, then ``froc_score`` (their mean)."""
    return (*(f"froc_sens@{r:g}" for r in rates), "froc_score")


def _scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise DataError(f"FROC {name} must be finite, got {arr[~np.isfinite(arr)][:3].tolist()}")
    return arr


def froc_curve(tp_scores: Sequence[float] | np.ndarray, fp_scores: Sequence[float] | np.ndarray,
               num_lesions: int, num_scans: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points ``(thresholds, fps_per_scan, sensitivity)``, thresholds descending
    from ``inf`` (nothing detected: the point (0, 0)) to the lowest score; both rates are then
    non-decreasing. Sensitivity is NaN throughout when ``num_lesions == 0``.

    Raises:
        DataError: non-finite scores, more true-positive scores than lesions, or
            ``num_scans < 1``.
    """
    tp = _scores(tp_scores, "tp_scores")
    fp = _scores(fp_scores, "fp_scores")
    if num_scans < 1:
        raise DataError(f"FROC needs num_scans >= 1, got {num_scans}")
    if len(tp) > num_lesions:
        raise DataError(f"{len(tp)} true-positive scores for {num_lesions} lesions: at most one "
                        "score per lesion")
    thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([tp, fp]))[::-1]])
    # counts of scores >= t via sorted search (ascending arrays)
    tp_sorted, fp_sorted = np.sort(tp), np.sort(fp)
    n_tp = len(tp) - np.searchsorted(tp_sorted, thresholds, side="left")
    n_fp = len(fp) - np.searchsorted(fp_sorted, thresholds, side="left")
    sens = n_tp / num_lesions if num_lesions > 0 else np.full(len(thresholds), np.nan)
    return thresholds, n_fp / float(num_scans), np.asarray(sens, dtype=np.float64)


def froc_sensitivities(fps_per_scan: np.ndarray, sensitivity: np.ndarray,
                       rates: Sequence[float] = FROC_FP_RATES) -> dict[str, float]:
    """``{froc_sens@<rate>: sensitivity, ..., froc_score: mean}``, linear interpolation of the
    curve at each FP rate (beyond the last point: its sensitivity). NaN without lesions."""
    names = froc_metric_names(rates)
    if len(sensitivity) == 0 or np.isnan(sensitivity).all():
        return dict.fromkeys(names, float("nan"))
    values = np.interp(np.asarray(rates, np.float64), fps_per_scan, sensitivity)
    out = {name: float(v) for name, v in zip(names, values)}
    out["froc_score"] = float(np.mean(values))
    return out
