"""Overlay figures: panels, titles and legends of boxes, text polygons and segmentation errors."""

import numpy as np

from detlab.plots.detection import boxes_figure
from detlab.plots.segmentation import error_overlay, segmentation_overlay_figure
from detlab.plots.text import text_overlay_figure


def _legend(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_boxes_figure_names_scores_and_legend():
    image = np.zeros((40, 40, 3), np.uint8)
    sample = {"image": image, "name": 7, "gt_boxes": np.array([[1, 1, 10, 10]]),
              "gt_labels": np.array([1]), "boxes": np.array([[1, 1, 10, 10], [5, 5, 9, 9]]),
              "scores": np.array([0.87, 0.1]), "labels": np.array([0, 1])}
    fig = boxes_figure([sample, sample], ["helmet_on", "helmet_off"], "val", min_score=0.25)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "image 7"
    assert [t.get_text() for t in fig.axes[0].texts] == ["helmet_on 0.87"]  # 0.1 < min_score
    assert len(fig.axes[0].patches) == 2  # one ground truth, one kept prediction
    assert _legend(fig) == ["helmet_on", "helmet_off", "ground truth",
                            "prediction (score >= 0.25)"]
    # ground truth only (training batch): solid boxes, class legend only
    gt_only = {k: sample[k] for k in ("image", "gt_boxes", "gt_labels")}
    fig = boxes_figure([gt_only], ["helmet_on", "helmet_off"], "train")
    assert _legend(fig) == ["helmet_off"] and fig._suptitle.get_text() == "train"


def test_text_overlay_counts_and_colours():
    square = lambda x: np.array([[x, 0], [x + 5, 0], [x + 5, 5], [x, 5]], float)  # noqa: E731
    sample = {"image": np.zeros((20, 40, 3), np.uint8), "name": "r1",
              "preds": [square(0), square(20)], "pred_status": np.array([1, 0]),
              "gts": [square(0), square(30), square(10)], "gt_status": np.array([1, 0, -1])}
    fig = text_overlay_figure([sample], "val")
    ax = fig.axes[0]
    assert ax.get_title() == "r1  TP 1  FP 1  missed 1"
    colours = [p.get_edgecolor()[:3] for p in ax.patches]
    assert len(colours) == 4  # 2 predictions, the missed and the don't-care ground truth
    assert _legend(fig) == ["true positive", "false positive", "missed ground truth",
                            "not scored (don't care)"]


def test_segmentation_overlay_colours_and_counts():
    image = np.full((4, 4, 3), 100, np.uint8)
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0, 0] = gt[0, 0] = True   # TP
    pred[1, 1] = True              # FP
    gt[2, 2] = gt[3, 3] = True     # FN x2
    out = error_overlay(image, pred, gt, alpha=1.0)
    assert np.allclose(out[0, 0], (0.17, 0.63, 0.17)) and np.allclose(out[1, 1], (0.84, 0.15, 0.16))
    assert np.allclose(out[3, 3], (0.12, 0.47, 0.95)) and np.allclose(out[0, 1], 100 / 255)
    fig = segmentation_overlay_figure([{"image": image, "pred": pred, "gt": gt, "name": "s3"}])
    assert fig.axes[0].get_title() == "s3  TP 1  FP 1  FN 2"
    assert _legend(fig) == ["true positive", "false positive", "false negative (missed)"]


def test_hmean_vs_binarization_threshold():
    from detlab.plots.text import hmean_figure, hmean_vs_threshold
    from detlab.postprocess.db_polygons import DBPostProcessor

    prob = np.zeros((64, 96), np.float32)
    prob[24:40, 20:76] = 0.8          # one text kernel, probability 0.8
    prob[4:10, 4:14] = 0.4            # a weaker blob: a false positive below 0.4 only
    word = np.array([[14, 18], [82, 18], [82, 46], [14, 46]], float)
    sample = {"prob_map": prob, "scale": (1.0, 1.0), "orig_size": (64, 96), "gts": [word],
              "ignore": np.zeros(1, bool)}
    pp = DBPostProcessor(box_threshold=0.3)
    curves = hmean_vs_threshold([sample], pp, [0.3, 0.5, 0.85])
    assert curves["precision"].tolist() == [0.5, 1.0, 0.0]   # the blob counts at 0.3
    assert curves["recall"].tolist() == [1.0, 1.0, 0.0]      # nothing above 0.8
    assert curves["hmean"][1] == 1.0 and pp.binarize_threshold == 0.3  # a copy was changed
    fig = hmean_figure([0.3, 0.5, 0.85], curves, current=0.3)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["precision", "recall", "H-mean: best 1.000 at 0.50",
                      "model's threshold 0.3"]
    assert fig.axes[0].get_xlabel() == "binarization threshold"


def test_boxes_figure_keeps_labels_apart():
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 10, 40, 40], [11, 11, 41, 41], [60, 60, 90, 90]] * 7, float)
    scores = np.linspace(0.9, 0.5, len(boxes))
    sample = {"image": image, "gt_boxes": np.zeros((0, 4)), "gt_labels": np.zeros(0, int),
              "boxes": boxes, "scores": scores, "labels": np.zeros(len(boxes), int)}
    ax = boxes_figure([sample], ["digit"], "val", max_boxes=15).axes[0]
    assert len(ax.patches) == 15                        # the 15 highest scores
    assert [t.get_text() for t in ax.texts] == ["digit 0.90", "digit 0.86"]  # one per spot
