"""Plot figures: panels, titles and legends (not pixels), and the numbers behind them."""

import numpy as np
import pytest
import torch

from detlab.plots.common import save_figure
from detlab.plots.curves import curves_figure, group_series
from detlab.plots.detection import (
    best_f1_threshold,
    confusion_figure,
    confusion_matrix,
    f1_confidence,
    f1_figure,
    pr_figure,
)
from detlab.plots.froc import froc_figure
from detlab.evaluation.froc import froc_curve


def _legend(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_curves_one_panel_per_term_and_grouped_metrics(tmp_path):
    history = {
        e: {"train/loss": 1.0 / (e + 1), "train/loss_cls": 0.5, "train/loss_box": 0.4,
            "val/AP": 0.1 * e, "val/AP_small": 0.1, "val/AP_medium": 0.2,
            "val/AP_large": float("nan"), "val/AP/helmet": 0.3, "val/AP/head": 0.2,
            "val/AR1": 0.1, "val/AR100": 0.3, "val/primary": 0.1 * e, "lr-AdamW": 1e-3}
        for e in range(3)
    }
    fig = curves_figure(history, title="run", primary="AP")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "train loss_cls", "train loss_box", "val AP (primary)",
                      "val AP by size", "val AP per class", "val AR", "learning rate"]
    by_title = dict(zip(titles, fig.axes))
    assert _legend(by_title["val AP by size"]) == ["small", "medium"]  # NaN series left out
    assert _legend(by_title["val AP per class"]) == ["helmet", "head"]
    assert _legend(by_title["val AR"]) == ["max 1 dets", "max 100 dets"]
    assert by_title["train loss"].get_xlabel() == "epoch"
    assert by_title["train loss"].get_lines()[0].get_ydata().tolist() == [1.0, 0.5, 1 / 3]
    assert fig._suptitle.get_text() == "run"
    assert save_figure(fig, tmp_path / "curves.png").stat().st_size > 1000


def test_curves_group_operating_points():
    panels = group_series({0: {"val/froc_sens@0.125": 0.2, "val/froc_sens@8": 0.9,
                               "val/dice/0": 0.5}})
    assert list(panels) == ["val froc_sens", "val dice per class"]
    assert list(panels["val froc_sens"]) == ["@0.125", "@8"]


def _records():
    f = lambda *rows: np.asarray(rows, np.float64).reshape(-1, 4)  # noqa: E731
    return [
        {"gt_boxes": f([0, 0, 10, 10], [20, 20, 30, 30]), "gt_labels": np.array([0, 1]),
         "gt_ignore": np.zeros(2, bool),
         "dt_boxes": f([0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]),
         "dt_scores": np.array([0.9, 0.8, 0.7, 0.1]), "dt_labels": np.array([0, 0, 1, 1])},
        {"gt_boxes": f([0, 0, 10, 10]), "gt_labels": np.array([1]),
         "gt_ignore": np.zeros(1, bool), "dt_boxes": f(), "dt_scores": np.zeros(0),
         "dt_labels": np.zeros(0, np.int64)},
    ]


def test_confusion_matrix_hand_made():
    cm = confusion_matrix(_records(), 2, iou=0.5, conf=0.25)
    # rows predicted (0, 1, background), columns true
    assert cm.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    fig = confusion_figure(cm, ["on", "off"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["on", "off", "background"]
    assert ax.get_xlabel() == "true" and ax.get_ylabel() == "predicted"
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "1"]
    assert "IoU 0.5" in ax.get_title() and len(fig.axes) == 2  # + colour bar


def test_f1_confidence_hand_made():
    thr, f1, has_gt = f1_confidence(_records(), 2)
    assert has_gt.tolist() == [True, True]
    assert f1[0, 500] == pytest.approx(2 / 3)  # .9 TP and .8 FP: P 1/2, R 1
    assert f1[0, 850] == pytest.approx(1.0)    # only .9
    assert f1[0, 950] == 0.0 and f1[1].max() == 0.0
    assert best_f1_threshold(thr, f1, has_gt) == pytest.approx(0.9)  # highest of the ties
    fig = f1_figure(thr, f1, has_gt, ["on", "off"])
    labels = _legend(fig.axes[0])
    assert labels[:2] == ["on", "off"]
    assert labels[2] == "all classes: best F1 0.500 at 0.90"  # mean of (1, 0), highest tie


def test_pr_figure_area_is_logged_ap():
    from detlab.evaluation.coco import CocoEvaluator
    from detlab.structures import Batch, Prediction

    ev = CocoEvaluator(class_names=["on", "off"], relative_areas=None)
    for i, r in enumerate(_records()):
        batch = Batch(images=torch.zeros(1, 3, 64, 64),
                      targets=[{"orig_boxes": torch.as_tensor(r["gt_boxes"]),
                                "labels": torch.as_tensor(r["gt_labels"])}],
                      meta=[{"image_id": i, "orig_size": (64, 64)}])
        ev.update([Prediction(boxes=torch.as_tensor(r["dt_boxes"]),
                              scores=torch.as_tensor(r["dt_scores"]),
                              labels=torch.as_tensor(r["dt_labels"]))], batch)
    metrics = ev.compute()
    data = ev.curve_data()
    assert data["precision"].shape == (10, 101, 2)
    fig = pr_figure(data["precision"], data["class_names"], data["recall_thresholds"],
                    data["iou_thresholds"])
    assert [ax.get_title() for ax in fig.axes] == ["IoU 0.5", "IoU 0.50:0.95"]
    # class on: .9 matches its box exactly, .8 is a false positive ranked below: AP50 = 1
    assert _legend(fig.axes[0]) == ["on AP=1.000", "off AP=0.000",
                                    f"all classes AP={metrics['AP50']:.3f}"]
    assert metrics["AP50"] == pytest.approx(0.5)
    assert _legend(fig.axes[1])[-1] == f"all classes AP={metrics['AP']:.3f}"
    assert fig.axes[0].get_xlabel() == "recall" and fig.axes[0].get_ylabel() == "precision"


def test_froc_figure_legend_has_score():
    curve = froc_curve([0.9, 0.6, 0.3], [0.8, 0.5, 0.4, 0.2], 4, 2)
    fig = froc_figure([curve], ["fracture"])
    ax = fig.axes[0]
    assert _legend(ax) == ["fracture: FROC score 0.536"]
    assert ax.get_xlabel() == "mean false positives per scan"
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.125", "0.25", "0.5", "1", "2",
                                                             "4", "8"]
