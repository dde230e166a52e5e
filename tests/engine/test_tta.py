"""Test-time augmentation un-maps every view to the plain image: the h-flipped view of a
flipped image gives, after a flip computed here by hand, exactly the plain view's boxes
(YOLO), probability map and polygons (DB) and probabilities / masks (U-Net); a rescaled view
carries its own geometry in ``meta``; a letterboxed flip moves the content's pad."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detlab.engine.ensemble import TTASettings, _model_views, view_batch
from detlab.engine.inference import data_module
from detlab.errors import ConfigError
from detlab.ops.coords import boxes_to_original, crop_to_content
from detlab.structures import Batch

from ensemble_models import tiny_task

torch.set_num_threads(1)


def _plain_and_flipped_view(kind: str):
    task = tiny_task(kind)
    batch = next(iter(data_module(task).val_dataloader()))
    # the images fill the 64x64 input (no pad): the flipped tensor IS the flipped image
    assert all(tuple(m["pad"]) == (0, 0) and tuple(m["input_size"]) == (64, 64)
               for m in batch.meta)
    flipped = Batch(images=batch.images.flip(-1), targets=batch.targets, meta=batch.meta)
    with torch.inference_mode():
        plain = task.model.predict(batch, stage="test")
        view = [v[0] for v in _model_views(task, flipped, [("h", 1.0)])]
    return plain, view


def _raster(polygons, size=(64, 64)) -> np.ndarray:
    out = np.zeros(size, np.uint8)
    for p in polygons:
        cv2.fillPoly(out, [np.round(np.asarray(p) * 8).astype(np.int32)], 1, shift=3)
    return out


def test_yolo_flipped_view_of_flipped_image_gives_the_plain_boxes():
    plain, view = _plain_and_flipped_view("yolo")
    for p, v in zip(plain, view):
        assert len(p.boxes) > 5
        # by hand: the plain boxes of the flipped image are x -> 64 - x of the plain ones
        expected = torch.stack([64 - p.boxes[:, 2], p.boxes[:, 1], 64 - p.boxes[:, 0],
                                p.boxes[:, 3]], 1)
        torch.testing.assert_close(v.boxes, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(v.scores, p.scores)
        assert v.labels.tolist() == p.labels.tolist()


def test_db_flipped_view_gives_the_flipped_map_and_polygons():
    plain, view = _plain_and_flipped_view("db")
    assert sum(len(p.polygons) for p in plain) >= 3
    for p, v in zip(plain, view):
        torch.testing.assert_close(v.extras["prob_map"], p.extras["prob_map"].flip(-1))
        flipped = [np.stack([64 - q[:, 0], q[:, 1]], 1) for q in p.polygons]
        assert len(v.polygons) == len(p.polygons)
        np.testing.assert_array_equal(_raster(v.polygons), _raster(flipped))
        np.testing.assert_allclose(np.sort(v.scores.numpy()), np.sort(p.scores.numpy()),
                                   atol=1e-6)


def test_unet_flipped_view_gives_the_flipped_probabilities_and_masks():
    plain, view = _plain_and_flipped_view("unet")
    for p, v in zip(plain, view):
        assert 0.05 < p.mask.float().mean() < 0.5
        torch.testing.assert_close(v.probs, p.probs.flip(-1))
        assert torch.equal(v.mask, p.mask.flip(-1))


def test_rescaled_view_carries_its_geometry():
    meta = {"orig_size": (40, 80), "scale": (0.8, 0.8), "pad": (16, 0), "input_size": (32, 64)}
    batch = Batch(images=torch.rand(1, 3, 64, 64), meta=[meta])
    view = view_batch(batch, "none", 1.25)
    m = view.meta[0]
    assert tuple(view.images.shape[-2:]) == (80, 80)
    assert m["scale"] == (1.0, 1.0) and m["pad"] == (20.0, 0.0) and m["input_size"] == (40, 80)
    # a box of the original image, drawn at the view's input (orig * scale + pad), maps back
    box = np.array([[10.0, 5.0, 30.0, 25.0]])
    drawn = box * 1.0 + np.array([0, 20, 0, 20])
    np.testing.assert_allclose(boxes_to_original(drawn, m), box)
    assert meta["scale"] == (0.8, 0.8)  # the batch's own meta is untouched


def test_flipped_letterboxed_view_moves_the_pad_to_the_content():
    meta = {"orig_size": (64, 48), "scale": (1.0, 1.0), "pad": (0, 4), "input_size": (64, 48)}
    images = torch.rand(1, 3, 64, 64)
    view = view_batch(Batch(images=images, meta=[meta]), "h", 1.0)
    assert view.meta[0]["pad"] == (0.0, 12.0)  # 64 - 4 - 48
    torch.testing.assert_close(crop_to_content(view.images[0], view.meta[0]),
                               crop_to_content(images[0], meta).flip(-1))


def test_tta_settings_views_and_errors():
    views = TTASettings(flips=("h", "none"), scales=(0.5, 1.0)).views
    assert views[0] == ("none", 1.0) and set(views) == {("h", 0.5), ("none", 0.5), ("h", 1.0),
                                                        ("none", 1.0)}
    assert TTASettings.from_config(True) == TTASettings()
    assert TTASettings.from_config(None) is None
    with pytest.raises(ConfigError, match="flips"):
        TTASettings(flips=("d",))
    with pytest.raises(ConfigError, match="unknown key"):
        TTASettings.from_config({"flip": ("h",)})


def test_recipe_tta_is_used_by_the_shared_inference_loop():
    from detlab.engine.inference import predictions

    task = tiny_task("unet", extra=["+inference={'tta': {'flips': ['none', 'h']}}"])
    loader = data_module(task).val_dataloader()
    with torch.inference_mode():
        merged = [p for preds, _ in predictions(task, loader, "cpu") for p in preds]
        for i, batch in enumerate(loader):
            plain = task.model.predict(batch)
            mirrored = task.model.predict(Batch(images=batch.images.flip(-1),
                                                targets=batch.targets, meta=batch.meta))
            for j, (p, q) in enumerate(zip(plain, mirrored)):
                # by hand: the mean of the plain view and the mirrored image's map flipped back
                expected = (p.probs + q.probs.flip(-1)) / 2
                m = merged[i * loader.batch_size + j]
                torch.testing.assert_close(m.probs, expected)
                assert torch.equal(m.mask, expected >= task.model.head.threshold)
