"""The input geometry is one component of a detection dataset (issue 12 item 7): one object
passed to the base, ``geometry=dict(...)`` in recipes, the flat keys kept as shorthand, the same
geometry reaching ``detlab predict``."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from det_files import write_png

from detlab.data.datasets.coco_json import CocoDetection
from detlab.data.datasets.detection_base import DetectionDataset
from detlab.data.datasets.synthetic_helmets import SyntheticHelmets
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.geometry import InputGeometry, letterbox_geometry
from detlab.data.predict_spec import build_predict_dataset
from detlab.errors import ConfigError
from detlab.registry import DATASETS


@pytest.fixture
def root(tmp_path):
    write_png(tmp_path / "images" / "train" / "a.png", 50, 120, [(10, 10, 40, 30)])
    label = tmp_path / "labels" / "train" / "a.txt"
    label.parent.mkdir(parents=True)
    label.write_text("0 0.2083333 0.4 0.25 0.4\n")
    return tmp_path


def test_base_takes_one_geometry_object():
    params = list(inspect.signature(DetectionDataset.__init__).parameters)
    assert params[:5] == ["self", "transforms", "geometry", "mean", "std"]
    kinds = inspect.signature(DetectionDataset.__init__).parameters
    assert all(kinds[k].kind is inspect.Parameter.KEYWORD_ONLY
               for k in ("img_size", "stride", "scale_up", "pad_value"))

    class Mine(DetectionDataset):
        class_names = ["a"]

        def __init__(self, geometry):
            super().__init__(None, geometry)

    g = InputGeometry(img_size=96, pad="stride", stride=16, pad_value=0.0)
    assert Mine(g).geometry is g
    assert (Mine(g).img_size, Mine(g).stride, Mine(g).pad_value) == (96, 16, 0.0)
    # the old positional call (transforms, img_size, stride, ...) names the new contract
    with pytest.raises(ConfigError, match="geometry=640: expected a dict of InputGeometry "
                                          "fields.*keyword-only shorthand"):
        Mine(640)


def test_geometry_dict_equals_the_shorthand(root):
    a = YoloDetection(root, class_names=["x"], geometry=dict(img_size=64, stride=16,
                                                             scale_up=False, pad_value=0))
    b = YoloDetection(root, class_names=["x"], img_size=64, stride=16, scale_up=False,
                      pad_value=0)
    assert a.geometry == b.geometry == InputGeometry(
        img_size=64, resize="long_side", scale_up=False, pad="stride", stride=16,
        pad_value=0.0, center=True)
    sa, sb = a[0], b[0]
    assert torch.equal(sa["image"], sb["image"]) and sa["meta"] == sb["meta"]
    assert tuple(sa["image"].shape) == (3, 32, 64)  # 50x120 -> 27x64, rows padded to 32
    # stride=None in the shorthand is pad="size" in the component
    c = YoloDetection(root, class_names=["x"], img_size=64, stride=None)
    assert c.geometry.pad == "size" and tuple(c[0]["image"].shape) == (3, 64, 64)
    assert c.stride is None
    # unset fields take the dataset's defaults: 640 for files, keep-size for synthetic sets
    assert YoloDetection(root, class_names=["x"], geometry={}).geometry.img_size == 640
    assert SyntheticHelmets(num_samples=1, image_size=64, geometry=dict(stride=8)
                            ).geometry.img_size is None


def test_geometry_and_shorthand_together_is_an_error(root):
    with pytest.raises(ConfigError, match=r"YoloDetection.img_size=320 and "
                                          r"YoloDetection.geometry both set the input geometry"):
        DATASETS.build(dict(type="YoloDetection", root=str(root), class_names=["x"],
                            geometry=dict(img_size=192), img_size=320), key="data.train")
    with pytest.raises(ConfigError, match="unknown key"):
        YoloDetection(root, class_names=["x"], geometry=dict(size=64))
    with pytest.raises(ConfigError, match="pad_value"):
        YoloDetection(root, class_names=["x"], geometry=dict(pad_value=300))
    with pytest.raises(ConfigError, match="img_size"):
        letterbox_geometry("Mine", None, img_size=0)


def test_predict_gets_the_val_geometry(root, tmp_path):
    val = dict(type="YoloDetection", root=str(root), class_names=["x"],
               geometry=dict(img_size=64, stride=16, pad_value=0), mean=(0, 0, 0),
               std=(1, 1, 1))
    data = dict(val=val)
    image = root / "images" / "train" / "a.png"
    pred = build_predict_dataset(data, lambda: DATASETS.build(val, key="data.val"), [str(image)])
    assert pred.geometry == DATASETS.build(val, key="data.val").geometry
    assert torch.equal(pred[0]["image"], DATASETS.build(val, key="data.val")[0]["image"])
    # from the config alone (the val files are gone): the same geometry
    spec = YoloDetection.input_spec_from_config(dict(val))
    assert InputGeometry.from_config(spec["geometry"]) == pred.geometry
    spec = CocoDetection.input_spec_from_config(dict(img_size=96, stride=None))
    assert InputGeometry.from_config(spec["geometry"]) == InputGeometry(
        img_size=96, pad="size", stride=32, pad_value=114.0)
    assert np.allclose(spec["mean"], (0.485, 0.456, 0.406))
