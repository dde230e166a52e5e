"""detlab.ops.coords and detlab.data.geometry: hand-computed letterbox values, forward then
inverse = identity, the one clipping convention ([0, w] x [0, h]) for boxes and polygons, the
content region of a centred letterbox, and predict's dataset built from data.val's spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.det_files import PLAIN, coco_dict, write_json, write_png
from detlab.data.datamodule import DataModule
from detlab.data.datasets.coco_json import CocoDetection
from detlab.data.datasets.image_files import ImageFiles
from detlab.data.geometry import InputGeometry
from detlab.errors import ConfigError
from detlab.models.heads.attention_unet import content_region as unet_content_region
from detlab.ops.coords import (
    boxes_to_original,
    content_region,
    maps_to_original,
    polygons_to_original,
)
from detlab.postprocess.db_polygons import DBPostProcessor

# A 48x80 image letterboxed to 64 with stride 32: resize to round(48 * 0.8) = 38 x 64, so
# sy = 38 / 48, sx = 0.8; padded to 64 x 64 with top = (64 - 38) // 2 = 13, left = 0.
META = {"orig_size": (48, 80), "scale": (38 / 48, 0.8), "pad": (13, 0), "input_size": (38, 64)}


def test_letterbox_meta_is_hand_computed():
    geometry = InputGeometry(img_size=64, pad="stride", stride=32)
    image = np.zeros((48, 80, 3), np.uint8)
    out, boxes, meta = geometry.apply(image, np.array([[10, 8, 30, 28]], np.float32))
    assert out.shape == (64, 64, 3)
    assert meta == {"orig_size": (48, 80), "scale": (38 / 48, 0.8), "input_size": (38, 64),
                    "pad": (13, 0)}
    np.testing.assert_allclose(boxes, [[8, 8 * 38 / 48 + 13, 24, 28 * 38 / 48 + 13]], rtol=1e-6)
    assert (out[:13] == 114).all() and (out[13 + 38:] == 114).all() and (out[13:51] == 0).all()


@pytest.mark.parametrize("geometry", [
    InputGeometry(img_size=64, pad="stride", stride=32),
    InputGeometry(img_size=64, pad="size"),
    InputGeometry(img_size=50, pad="stride", stride=16, center=False),
    InputGeometry(img_size=96, resize="fixed"),
    InputGeometry(img_size=None, pad="stride", stride=32),
])
def test_forward_then_inverse_is_identity(geometry):
    boxes = np.array([[0, 0, 80, 48], [10.5, 3.25, 40, 47]], np.float32)
    _, moved, meta = geometry.apply(np.zeros((48, 80, 3), np.uint8), boxes)
    np.testing.assert_allclose(boxes_to_original(moved, meta), boxes, atol=1e-4)
    polys = [np.array([[0, 0], [80, 0], [80, 48]], np.float32)]
    sy, sx = meta["scale"]
    top, left = meta["pad"]
    fwd = [p * np.array([sx, sy], np.float32) + np.array([left, top], np.float32) for p in polys]
    np.testing.assert_allclose(polygons_to_original(fwd, meta)[0], polys[0], atol=1e-4)


def test_one_clipping_convention_for_boxes_and_polygons():
    # x: (-5 - 0) / 0.8 = -6.25 -> 0 and 70 / 0.8 = 87.5 -> 80 (= w, the pixel edge, not 79)
    box = boxes_to_original(torch.tensor([[-5.0, 0.0, 70.0, 64.0]]), META)
    assert box.tolist() == [[0.0, 0.0, 80.0, 48.0]]
    poly = polygons_to_original([np.array([[-5, 0], [70, 0], [70, 64]])], META)[0]
    np.testing.assert_array_equal(poly, [[0, 0], [80, 0], [80, 48]])
    # DB's post-processor maps back with the same function: a word at the right edge of a
    # 40 px wide map ends at x = 40 (it clipped to 39 before).
    prob = np.zeros((20, 40), np.float32)
    prob[5:15, 20:40] = 1.0
    polygons, _ = DBPostProcessor(output="box")(prob, orig_size=(20, 40))
    assert max(float(p[:, 0].max()) for p in polygons) == 40.0


def test_content_region_of_a_centred_letterbox():
    assert content_region(META, (64, 64)) == (13, 0, 38, 64)
    # the U-Net's re-export is the same function (it gave 38 - 13 = 25 rows before)
    assert unet_content_region(META, (64, 64)) == (13, 0, 38, 64)
    # padded batch (collate adds 32 rows below), no input_size: what is left after the pad
    assert content_region({"pad": (4, 2)}, (96, 64)) == (4, 2, 92, 62)


def test_maps_to_original_crops_then_resizes():
    maps = torch.zeros(1, 64, 64)
    maps[:, 13:51] = 1.0  # the content rows
    back = maps_to_original(maps, META, mode="nearest-exact")
    assert back.shape == (1, 48, 80) and bool((back == 1).all())
    probs = torch.rand(2, 64, 64)
    crop = probs[:, 13:51, :]
    expected = torch.nn.functional.interpolate(crop[None], size=(48, 80), mode="bilinear",
                                               align_corners=False)[0]
    torch.testing.assert_close(maps_to_original(probs, META), expected)


def _coco(tmp_path):
    img = tmp_path / "img"
    write_png(img / "a.png", 48, 80, [(10, 8, 30, 28)])
    ann = write_json(tmp_path / "ann.json", coco_dict(
        [{"id": 5, "file_name": "a.png", "height": 48, "width": 80}],
        [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 8, 20, 20], "area": 400,
          "iscrowd": 0}],
        [{"id": 3, "name": "x"}]))
    return ann, img


def test_image_files_with_val_spec_build_val_tensor(tmp_path):
    ann, img = _coco(tmp_path)
    val = CocoDetection(str(ann), str(img), img_size=64, **PLAIN)
    files = ImageFiles([img], **val.input_spec())
    a, b = val[0], files[0]
    torch.testing.assert_close(b["image"], a["image"], rtol=0, atol=0)
    for key in ("orig_size", "scale", "pad", "input_size"):
        assert b["meta"][key] == a["meta"][key], key
    assert b["meta"]["image_id"] == "a.png"


def test_predict_defaults_to_val_and_refuses_a_different_data_predict(tmp_path):
    ann, img = _coco(tmp_path)
    val = dict(type="CocoDetection", ann_file=str(ann), img_dir=str(img), img_size=64)
    loader = DataModule({"val": val, "num_workers": 0}).predict_loader([str(img)])
    assert loader.dataset.geometry == InputGeometry(img_size=64, pad="stride", stride=32)
    bad = {"val": val, "num_workers": 0, "predict": dict(type="ImageFiles", img_size=64)}
    with pytest.raises(ConfigError) as err:
        DataModule(bad).predict_loader([str(img)])
    msg = str(err.value)
    assert "data.predict.geometry.pad='none' but data.val gives 'stride'" in msg
    assert "data.predict.pixels='float' but data.val gives 'uint8'" in msg
    same = {"val": val, "num_workers": 0, "predict": dict(
        type="ImageFiles", pixels="uint8",
        geometry=dict(img_size=64, pad="stride", stride=32))}
    assert len(DataModule(same).predict_loader([str(img)]).dataset) == 1


def test_predict_without_the_val_files_takes_the_val_config(tmp_path):
    """A checkpoint used where its val data is absent: the spec comes from data.val's config."""
    _, img = _coco(tmp_path)
    val = dict(type="CocoDetection", ann_file=str(tmp_path / "gone.json"), img_dir="/nowhere",
               img_size=48, pad_value=0)
    dataset = DataModule({"val": val, "num_workers": 0}).predict_loader([str(img)]).dataset
    assert dataset.geometry == InputGeometry(img_size=48, pad="stride", stride=32, pad_value=0)
    # 48x80 -> 29x48 (0.6), padded to 32x64: top (32 - 29) // 2 = 1, left (64 - 48) // 2 = 8
    assert dataset.pixels == "uint8" and dataset[0]["meta"]["pad"] == (1, 8)
