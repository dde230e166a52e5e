"""What the overlay plots are given: the slices with the most wrong pixels, boxes in the
picture's pixels, training boxes shifted by the letterbox padding."""

import numpy as np
import torch

from detlab.engine.plot_samples import SampleKeeper, train_batch_samples
from detlab.evaluation.segmentation import SegmentationEvaluator
from detlab.structures import Batch, Prediction


def test_keeps_slices_with_most_wrong_pixels():
    keeper = SampleKeeper(max_images=3)
    ev = SegmentationEvaluator(threshold=0.5)
    for i, wrong in enumerate([3, 9, 0, 5]):
        probs = torch.zeros(1, 8, 8)
        probs.view(-1)[:wrong] = 0.9  # `wrong` false-positive pixels
        batch = Batch(images=torch.rand(1, 1, 8, 8), targets=[{"orig_mask": torch.zeros(1, 8, 8)}],
                      meta=[{"image_id": f"s{i}", "orig_size": (8, 8)}])
        keeper.add([Prediction(probs=probs)], batch, ev)
    kept = keeper.masks
    assert [s["name"] for s in kept] == ["s1", "s3", "s0"]  # s2: nothing wrong
    assert [int(s["pred"].sum()) for s in kept] == [9, 5, 3] and kept[0]["image"].shape == (8, 8, 3)


def test_box_samples_in_original_pixels():
    keeper = SampleKeeper()
    # input 32x32 = original 16x16 scaled by 2 (no padding)
    batch = Batch(images=torch.rand(1, 3, 32, 32),
                  targets=[{"boxes": torch.tensor([[4.0, 4.0, 20.0, 12.0]]),
                            "labels": torch.tensor([1])}],
                  meta=[{"image_id": 3, "orig_size": (16, 16), "scale": (2.0, 2.0),
                         "input_size": (32, 32)}])
    pred = Prediction(boxes=torch.tensor([[1.0, 1.0, 5.0, 5.0]]), scores=torch.tensor([0.7]),
                      labels=torch.tensor([0]))
    keeper.add([pred], batch, None)
    s = keeper.boxes[0]
    assert s["image"].shape == (16, 16, 3)
    assert s["gt_boxes"].tolist() == [[2.0, 2.0, 10.0, 6.0]] and s["labels"].tolist() == [0]


def test_train_batch_boxes_shifted_by_padding():
    batch = Batch(images=torch.rand(1, 3, 32, 32),
                  targets=[{"boxes": torch.tensor([[4.0, 10.0, 20.0, 14.0]]),
                            "labels": torch.tensor([0])}],
                  meta=[{"image_id": 0, "orig_size": (16, 32), "scale": (1.0, 1.0),
                         "pad": (8, 0), "input_size": (16, 32)}])
    (s,) = train_batch_samples(batch)
    assert s["image"].shape == (16, 32, 3)
    assert np.allclose(s["gt_boxes"], [[4.0, 2.0, 20.0, 6.0]])
