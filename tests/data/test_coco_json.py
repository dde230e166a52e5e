"""CocoDetection: category-id mapping, crowd → ignore, empty images, letterbox meta and boxes
(hand-computed), HorizontalFlip, every DataError, and the CocoEvaluator reading its targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from det_files import PLAIN, coco_dict, red_mask, write_json, write_png

from detlab.data.collate import collate
from detlab.data.datasets.coco_json import CocoDetection
from detlab.errors import ConfigError, DataError
from detlab.evaluation.coco import CocoEvaluator
from detlab.registry import DATASETS
from detlab.structures import Prediction

CATEGORIES = [{"id": 7, "name": "c7"}, {"id": 1, "name": "c1"}, {"id": 5, "name": "c5"}]
IMAGES = [
    {"id": 10, "file_name": "a.png", "width": 100, "height": 60},
    {"id": 11, "file_name": "sub/b.png", "width": 40, "height": 80},
    {"id": 12, "file_name": "empty.png", "width": 50, "height": 50},
]
ANNOTATIONS = [
    {"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 20, 30, 15], "iscrowd": 0},
    {"id": 2, "image_id": 10, "category_id": 1, "bbox": [50, 5, 20, 40], "iscrowd": 1},
    {"id": 3, "image_id": 11, "category_id": 5, "bbox": [4, 8, 12, 16]},
]


@pytest.fixture
def coco(tmp_path):
    write_png(tmp_path / "img" / "a.png", 60, 100, [(10, 20, 40, 35), (50, 5, 70, 45)])
    write_png(tmp_path / "img" / "sub" / "b.png", 80, 40, [(4, 8, 16, 24)])
    write_png(tmp_path / "img" / "empty.png", 50, 50)
    ann = write_json(tmp_path / "ann.json", coco_dict(IMAGES, ANNOTATIONS, CATEGORIES))
    return ann, tmp_path / "img"


def test_category_ids_map_to_sorted_contiguous_labels(coco):
    ds = CocoDetection(*coco, img_size=64, **PLAIN)
    assert ds.category_ids == [1, 5, 7] and ds.class_names == ["c1", "c5", "c7"]
    assert ds.num_classes == 3
    assert ds[0]["target"]["labels"].tolist() == [2, 0]  # ids 7, 1
    assert ds[1]["target"]["labels"].tolist() == [1]  # id 5


def test_classes_select_and_order_categories(coco):
    ds = CocoDetection(*coco, classes=["c7", "c5"], img_size=64)
    assert ds.class_names == ["c7", "c5"] and ds.category_ids == [7, 5]
    assert ds[0]["target"]["labels"].tolist() == [0]  # the c1 annotation is dropped
    assert ds[1]["target"]["labels"].tolist() == [1]


def test_targets_meta_and_crowd(coco):
    ds = CocoDetection(*coco, img_size=64, **PLAIN)
    sample = ds[0]
    target, meta = sample["target"], sample["meta"]
    # 60x100 → 38x64 (scale 0.64, round(38.4) = 38), padded to 64x64: 13 px on top.
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert meta["orig_size"] == (60, 100) and meta["input_size"] == (38, 64)
    assert meta["scale"] == pytest.approx((38 / 60, 0.64)) and meta["pad"] == (13, 0)
    assert meta["image_id"] == 10 and meta["path"].endswith("a.png")
    orig = np.array([[10, 20, 40, 35], [50, 5, 70, 45]], np.float32)
    np.testing.assert_array_equal(target["orig_boxes"].numpy(), orig)
    sy, sx = 38 / 60, 0.64
    expected = orig * [sx, sy, sx, sy] + [0, 13, 0, 13]
    np.testing.assert_allclose(target["boxes"].numpy(), expected, atol=1e-4)
    assert target["ignore"].tolist() == [False, True]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    # The drawn red rectangle of the first box lies inside its input box.
    ys, xs = np.nonzero(red_mask(sample["image"]))
    assert xs.min() >= np.floor(expected[0, 0]) and ys.max() < np.ceil(expected[1, 3])


def test_image_without_annotations_is_a_sample(coco):
    sample = CocoDetection(*coco, img_size=64)[2]
    assert sample["target"]["boxes"].shape == (0, 4)
    assert sample["target"]["labels"].shape == (0,) and sample["target"]["ignore"].shape == (0,)
    assert sample["target"]["orig_boxes"].shape == (0, 4)
    assert sample["target"]["boxes"].dtype == torch.float32


def test_horizontal_flip_moves_boxes_not_orig_boxes(coco):
    ds = CocoDetection(*coco, img_size=None, transforms=[dict(type="HorizontalFlip", p=1.0)],
                       **PLAIN)
    sample = ds[1]  # 80x40, no resize; padded to 96x64 → pad (8, 12)
    assert sample["meta"]["pad"] == (8, 12)
    # Flipped inside the 40 px wide image, then shifted by the pad.
    expected = [[40 - 16 + 12, 8 + 8, 40 - 4 + 12, 24 + 8]]
    np.testing.assert_allclose(sample["target"]["boxes"].numpy(), expected, atol=1e-3)
    np.testing.assert_array_equal(sample["target"]["orig_boxes"].numpy(), [[4, 8, 16, 24]])
    ys, xs = np.nonzero(red_mask(sample["image"]))
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (36, 16, 48, 32)


def test_transform_dropping_a_box_keeps_fields_aligned(coco):
    # Crop keeps x in [0, 30) of the 60x100 image: box 1 is cut to (10, 20, 30, 35), the crowd
    # box at x >= 50 leaves; labels, ignore and orig_boxes must follow the survivor.
    crop = dict(type="Crop", x_min=0, y_min=0, x_max=30, y_max=60)
    sample = CocoDetection(*coco, img_size=None, transforms=[crop])[0]
    target = sample["target"]
    assert sample["meta"]["input_size"] == (60, 30) and sample["meta"]["pad"] == (2, 1)
    np.testing.assert_allclose(target["boxes"].numpy(), [[11, 22, 31, 37]], atol=1e-3)
    assert target["labels"].tolist() == [2] and target["ignore"].tolist() == [False]
    np.testing.assert_array_equal(target["orig_boxes"].numpy(), [[10, 20, 40, 35]])


def test_object_areas_from_annotations_only(coco, tmp_path):
    ds = CocoDetection(*coco)
    (tmp_path / "img" / "a.png").unlink()  # no decoding needed
    np.testing.assert_allclose(ds.object_areas(0), [30 * 15 / 6000])  # crowd box excluded
    np.testing.assert_allclose(ds.object_areas(1), [12 * 16 / 3200])
    assert ds.object_areas(2).shape == (0,)


def test_registered_and_built_from_config(coco):
    ds = DATASETS.build(dict(type="CocoDetection", ann_file=str(coco[0]), img_dir=str(coco[1])))
    assert isinstance(ds, CocoDetection) and len(ds) == 3


def test_collate_and_evaluator_use_the_targets(coco):
    """Perfect predictions score AP 1 both from orig_boxes and from boxes mapped back with
    the letterbox meta: the two views of the ground truth agree."""
    ds = CocoDetection(*coco, img_size=64)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch.images.shape == (3, 3, 64, 64)
    preds = [Prediction(boxes=t["orig_boxes"], scores=torch.ones(len(t["labels"])),
                        labels=t["labels"]) for t in batch.targets]
    for drop_orig in (False, True):
        if drop_orig:
            for t in batch.targets:
                del t["orig_boxes"]
        ev = CocoEvaluator(class_names=ds.class_names, relative_areas=None)
        ev.update(preds, batch)
        assert ev.compute()["AP"] == pytest.approx(1.0)


# -- errors ---------------------------------------------------------------------------------
def _broken(data_edit):
    data = json.loads(json.dumps(coco_dict(IMAGES, ANNOTATIONS, CATEGORIES)))
    data_edit(data)
    return data


ERROR_CASES = {
    "no_annotations_key": (lambda d: d.pop("annotations"), r"has no key 'annotations'"),
    "no_categories_key": (lambda d: d.pop("categories"), r"has no key 'categories'"),
    "image_without_file_name": (lambda d: d["images"][1].pop("file_name"),
                                r"images\[1\] has no key 'file_name'"),
    "annotation_without_bbox": (lambda d: d["annotations"][2].pop("bbox"),
                                r"annotations\[2\] has no key 'bbox'"),
    "bbox_wrong_length": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
                          r"annotations\[0\] key 'bbox'"),
    "bbox_not_numbers": (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]),
                         r"annotations\[0\] key 'bbox'"),
    "unknown_image_id": (lambda d: d["annotations"][0].update(image_id=99),
                         r"annotations\[0\] key 'image_id' = 99"),
    "unknown_category": (lambda d: d["annotations"][1].update(category_id=3),
                         r"annotations\[1\] key 'category_id' = 3"),
    "category_id_not_int": (lambda d: d["categories"][0].update(id="7"),
                            r"categories\[0\] key 'id'"),
    "duplicate_image_id": (lambda d: d["images"][1].update(id=10), r"repeats image id 10"),
    "annotations_not_list": (lambda d: d.update(annotations={}), r"key 'annotations' = \{\}"),
}


@pytest.mark.parametrize("edit,pattern", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_annotation_file_names_file_and_key(tmp_path, edit, pattern):
    ann = write_json(tmp_path / "bad.json", _broken(edit))
    with pytest.raises(DataError, match=pattern) as info:
        CocoDetection(ann, tmp_path)
    assert str(ann) in str(info.value)


def test_missing_or_invalid_json(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.json"):
        CocoDetection(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        CocoDetection(bad, tmp_path)
    write_json(bad, [1, 2])
    with pytest.raises(DataError, match="bad.json: expected a JSON object"):
        CocoDetection(bad, tmp_path)


def test_unknown_class_name(coco):
    with pytest.raises(DataError, match=r"classes \['helmet'\] are not category names"):
        CocoDetection(*coco, classes=["c1", "helmet"])
    with pytest.raises(ConfigError, match="classes"):
        CocoDetection(*coco, classes="c1")


def test_missing_image_lazily_and_eagerly(coco):
    ann, img_dir = coco
    (img_dir / "sub" / "b.png").unlink()
    ds = CocoDetection(ann, img_dir)  # lazy: constructing works, loading names the file
    ds[0]
    with pytest.raises(DataError, match=r"image file not found: .*sub/b.png"):
        ds[1]
    with pytest.raises(DataError, match=r"ann.json not found: .*sub/b.png"):
        CocoDetection(ann, img_dir, check_files=True)


def test_image_size_disagreeing_with_annotation(coco):
    ann, img_dir = coco
    write_png(img_dir / "a.png", 61, 100)
    with pytest.raises(DataError, match=r"a.png is 61x100 .* says 60x100"):
        CocoDetection(ann, img_dir)[0]


@pytest.mark.parametrize("content", [b"not a png", b""])
def test_undecodable_image(coco, content):
    ann, img_dir = coco
    (img_dir / "a.png").write_bytes(content)
    with pytest.raises(DataError, match="cannot decode image file .*a.png"):
        CocoDetection(ann, img_dir)[0]


@pytest.mark.parametrize("kwargs,arg", [
    (dict(img_size=0), "img_size"), (dict(stride=0), "stride"), (dict(std=(1, 0, 1)), "std"),
    (dict(mean=(0.5,)), "mean"), (dict(img_size=None, stride=None), "stride=None"),
    (dict(pad_value=300), "pad_value"),
    (dict(transforms=[dict(type="HorizontalFlp")]), "HorizontalFlip"),
])
def test_bad_arguments(coco, kwargs, arg):
    with pytest.raises(ConfigError, match=arg):
        CocoDetection(*coco, **kwargs)
