"""Data safety (issue 11, items 2 and 3): files named in annotations stay under the data root,
every bad value is a DataError naming file and place, and repairs (clip to the image, drop
empty boxes/words) happen in original pixels at parse time and are counted and logged."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from det_files import PLAIN, coco_dict, write_json, write_png

from detlab.data.datasets.coco_json import CocoDetection
from detlab.data.datasets.icdar import IcdarTxt, ReceiptJson
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.validation import DataReport, parse_number, resolve_inside
from detlab.errors import DataError

CATS = [{"id": 1, "name": "a"}]


def _coco(tmp_path, anns, images=None, **kw):
    write_png(tmp_path / "img" / "a.png", 60, 100)
    images = images or [{"id": 1, "file_name": "a.png", "width": 100, "height": 60}]
    ann = write_json(tmp_path / "ann.json", coco_dict(images, anns, CATS))
    return CocoDetection(ann, tmp_path / "img", img_size=None, stride=None or 4, **PLAIN, **kw)


def _box(bbox, i=1):
    return {"id": i, "image_id": 1, "category_id": 1, "bbox": bbox}


# -- paths stay inside the data root ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside.png", "./../img/../outside.png", "ABS"])
def test_coco_file_name_outside_img_dir_is_refused(tmp_path, name):
    outside = write_png(tmp_path / "outside.png", 60, 100)
    name = str(outside) if name == "ABS" else name
    images = [{"id": 1, "file_name": name, "width": 100, "height": 60}]
    with pytest.raises(DataError, match=r"ann.json: images\[0\] key 'file_name'.*outside the "
                                        r"data root.*allow_outside_root=True"):
        _coco(tmp_path, [], images)
    ds = _coco(tmp_path, [], images, allow_outside_root=True)  # the recipe opt-out
    assert ds[0]["meta"]["orig_size"] == (60, 100)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    outside = write_png(tmp_path / "outside.png", 60, 100)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "link.png").symlink_to(outside)
    images = [{"id": 1, "file_name": "link.png", "width": 100, "height": 60}]
    with pytest.raises(DataError, match="link.png' resolves to .*outside.png, outside"):
        _coco(tmp_path, [], images)


def test_resolve_inside_accepts_inner_paths(tmp_path):
    assert resolve_inside(tmp_path, "a/../b.png", "here") == tmp_path / "a/../b.png"
    with pytest.raises(DataError, match="here: file name '' must be a non-empty path"):
        resolve_inside(tmp_path, "", "here")


def test_yolo_list_entry_outside_root(tmp_path):
    root = tmp_path / "ds"
    write_png(root / "images" / "a.png", 32, 32)
    write_png(tmp_path / "x.png", 32, 32)
    (root / "train.txt").write_text("images/a.png\n../x.png\n")
    with pytest.raises(DataError, match=r"train.txt:2: file '../x.png' resolves to"):
        YoloDetection(root, list_file="train.txt", class_names=["a"])
    ds = YoloDetection(root, list_file="train.txt", class_names=["a"], allow_outside_root=True)
    assert len(ds) == 2


def test_receipt_image_name_outside_folder(tmp_path):
    write_png(tmp_path / "x.png", 20, 20)
    (tmp_path / "r").mkdir()
    ann = write_json(tmp_path / "r" / "ann.json", {"images": {"../x.png": {"words": {}}}})
    with pytest.raises(DataError, match=r"images\['../x.png'\]: file '../x.png' resolves to"):
        ReceiptJson(ann_file=str(ann))


# -- COCO: reject what cannot be right ---------------------------------------------------------
@pytest.mark.parametrize("width, match", [(1e308, "'width' = 1e\\+308"), (0, "width = 0"),
                                          (10**400, "width = 1000"), (-5, "width = -5")])
def test_coco_image_size_must_be_a_positive_int(tmp_path, width, match):
    images = [{"id": 1, "file_name": "a.png", "width": width, "height": 60}]
    with pytest.raises(DataError, match=r"images\[0\].*" + match):
        _coco(tmp_path, [], images)


@pytest.mark.parametrize("anns, match", [
    ([_box([10, 10, -5, 8])], r"annotations\[0\] key 'bbox' = \[10, 10, -5, 8\]: width and "
                              "height must be >= 0"),
    ([_box([10, 10, 5, 8]), _box([20, 10, 5, 8])], r"annotations\[1\] repeats annotation id 1"),
    ([_box([1e6, 10, 5, 8])], r"annotations\[0\] box .* more than 10 image sizes outside"),
    ([_box([10, 10, 1e308, 8])], r"annotations\[0\] box .* more than 10 image sizes outside"),
    ([_box([10, 10, 10**400, 8])], r"annotations\[0\] key 'bbox' = .*finite numbers"),
    ([{**_box([10, 10, 5, 8]), "iscrowd": "yes"}], r"key 'iscrowd' = 'yes': expected 0 or 1"),
])
def test_coco_bad_boxes(tmp_path, anns, match):
    with pytest.raises(DataError, match=match):
        _coco(tmp_path, anns)


# -- COCO: repair and count ------------------------------------------------------------------
def test_coco_clips_in_original_pixels_and_counts(tmp_path, caplog):
    anns = [_box([90, 50, 20, 20], 1),  # overshoots right and bottom: -> [90, 50, 100, 60]
            _box([-4, 5, 10, 10], 2),  # overshoots left: -> [0, 5, 6, 15]
            _box([10, 10, 0, 5], 3),  # zero width: dropped
            _box([200, 10, 5, 5], 4)]  # entirely outside (not far): dropped
    for i in range(5, 41):  # 36 clean boxes keep the dropped fraction (2/40) at 5 %
        anns.append(_box([1, 1, 2, 2], i))
    with caplog.at_level(logging.INFO, logger="detlab.data"):
        ds = _coco(tmp_path, anns)
    target = ds[0]["target"]
    np.testing.assert_array_equal(target["orig_boxes"][:2].numpy(),
                                  [[90, 50, 100, 60], [0, 5, 6, 15]])
    assert len(target["orig_boxes"]) == 38
    report = ds.data_report()
    assert report.objects == 40 and report.samples == 1
    assert report.counts == {("clipped", "outside image"): 2, ("dropped", "zero area"): 1,
                             ("dropped", "outside image"): 1}
    assert report.summary() == ("CocoDetection (ann.json): 1 images, 40 boxes, clipped 2 "
                                "(outside image), dropped 1 (outside image), dropped 1 (zero area)")
    records = [r for r in caplog.records if r.name == "detlab.data"]
    assert records[0].levelno == logging.WARNING and records[0].getMessage() == report.summary()
    assert "annotations[2]" in caplog.text  # the dropped zero-width box is named


def test_coco_max_bad_fraction(tmp_path):
    anns = [_box([10, 10, 0, 5], 1), _box([1, 1, 2, 2], 2)]
    with pytest.raises(DataError, match=r"dropped 1 of 2 boxes \(50.0%\), more than "
                                        r"max_bad_fraction=0.05: 1 zero area \(e.g. ann.json: "
                                        r"annotations\[0\]\)"):
        _coco(tmp_path, anns)
    assert len(_coco(tmp_path, anns, max_bad_fraction=0.5)[0]["target"]["boxes"]) == 1


def test_coco_unselected_categories_are_counted_as_ignored(tmp_path):
    write_png(tmp_path / "img" / "a.png", 60, 100)
    data = coco_dict([{"id": 1, "file_name": "a.png", "width": 100, "height": 60}],
                     [_box([1, 1, 5, 5], 1), {**_box([1, 1, 5, 5], 2), "category_id": 2}],
                     [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    ds = CocoDetection(write_json(tmp_path / "ann.json", data), tmp_path / "img", classes=["a"])
    assert ds.data_report().counts == {("ignored", "category not in classes"): 1}


# -- YOLO -------------------------------------------------------------------------------------
def _yolo(tmp_path, label: bytes, **kw):
    root = tmp_path / "ds"
    write_png(root / "images" / "train" / "a.png", 40, 80)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train" / "a.txt").write_bytes(label)
    return YoloDetection(root, class_names=["a", "b"], **kw)


def test_yolo_non_utf8_label_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"a.txt:2: YOLO label file is not valid UTF-8 \(byte "
                                        r"0xff at offset 18\)"):
        _yolo(tmp_path, b"0 0.5 0.5 0.1 0.1\n\xff 0.5 0.5 0.1 0.1\n")


@pytest.mark.parametrize("token", ["1_0", "\uff11", "0x1"])
def test_yolo_refuses_what_float_would_accept(tmp_path, token):
    with pytest.raises(DataError, match="a.txt:1: non-numeric value"):
        _yolo(tmp_path, f"0 0.5 0.5 {token} 0.1\n".encode())


def test_yolo_overshoot_clipped_and_duplicate_dropped_are_counted(tmp_path):
    lines = "0 0.95 0.5 0.2 0.4\n" + "1 0.5 0.5 0.2 0.2\n" * 2 + "".join(
        f"1 0.{i + 10} 0.2 0.1 0.1\n" for i in range(18))
    ds = _yolo(tmp_path, lines.encode())
    ann = ds.load_raw(0)[1]
    np.testing.assert_allclose(ann.boxes[0], [68, 12, 80, 28])  # x2 = 1.05 * 80 -> 80
    assert ds.data_report().counts == {("clipped", "outside image"): 1,
                                       ("dropped", "duplicate line"): 1}
    with pytest.raises(DataError, match=r"dropped 1 of 21 boxes \(4.8%\).*duplicate line"):
        _yolo(tmp_path, lines.encode(), max_bad_fraction=0.01)


def test_yolo_image_listed_twice(tmp_path):
    root = tmp_path / "ds"
    write_png(root / "images" / "a.png", 32, 32)
    (root / "train.txt").write_text("images/a.png\n./images/a.png\n")
    with pytest.raises(DataError, match=r"train.txt: images 1 and 2 .* share the id 'images/a'"):
        YoloDetection(root, list_file="train.txt", class_names=["a"])


# -- text formats ------------------------------------------------------------------------------
def _icdar(tmp_path, text: str):
    write_png(tmp_path / "img" / "img_1.png", 60, 100)
    (tmp_path / "gt").mkdir(exist_ok=True)
    (tmp_path / "gt" / "gt_img_1.txt").write_text(text)
    return IcdarTxt(img_dir=str(tmp_path / "img"), ann_dir=str(tmp_path / "gt"))


def test_icdar_nine_numbers_is_a_shifted_polygon(tmp_path):
    with pytest.raises(DataError, match=r"gt_img_1.txt:1: 9 numbers before the transcription"):
        _icdar(tmp_path, "0,10,8,50,8,50,20,10,20,word\n")
    ds = _icdar(tmp_path, "10,8,50,8,50,20,10,20,2015\n")  # a numeric transcription is fine
    assert len(ds[0]["target"]["polygons"]) == 1


def test_icdar_words_clipped_at_parse_time_and_counted(tmp_path):
    ds = _icdar(tmp_path, "-10,10,30,10,30,20,-10,20,a\n" + "10,8,50,8,50,20,10,20,b\n" * 1
                + "".join(f"{i},30,{i + 5},30,{i + 5},40,{i},40,w\n" for i in range(0, 90, 5)))
    polygons = ds.records[0][1]
    assert polygons[0][:, 0].min() == 0 and Polygon_area(polygons[0]) == pytest.approx(300.0)
    assert ds.data_report().counts == {("clipped", "outside image"): 1}
    assert ds.data_report().objects == 20


def Polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0].astype(np.float64), p[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@pytest.mark.parametrize("points, match", [
    ([[6, 4], [1e6, 4], [20, 12]], r"words\['1'\]: point \(1e\+06, 4\) lies more than 10"),
    ([[6, 4], [1e308, 4], [20, 12]], r"words\['1'\]: point 1 = \(1e\+308, 4\) is far outside"),
    ([[6, 4], [True, 4], [20, 12]], r"words\['1'\]: point 1 = \[True, 4\]: expected \[x, y\]"),
    ([[6, 4], ["12", 4], [20, 12]], r"words\['1'\]: point 1 = \['12', 4\]"),
])
def test_receipt_bad_points(tmp_path, points, match):
    write_png(tmp_path / "r1.png", 24, 32)
    ann = write_json(tmp_path / "ann.json",
                     {"images": {"r1.png": {"words": {"1": {"points": points}}}}})
    with pytest.raises(DataError, match=match):
        ReceiptJson(ann_file=str(ann))


def test_receipt_repeated_key_is_refused(tmp_path):
    write_png(tmp_path / "r1.png", 24, 32)
    word = '{"points": [[1, 1], [5, 1], [5, 5]]}'
    (tmp_path / "ann.json").write_text(
        '{"images": {"r1.png": {"words": {"1": %s, "1": %s}}}}' % (word, word))
    with pytest.raises(DataError, match="repeats the key '1'"):
        ReceiptJson(ann_file=str(tmp_path / "ann.json"))


# -- the report itself -------------------------------------------------------------------------
def test_report_summary_enforce_and_dict():
    report = DataReport("X (f.json)", "boxes", samples=4, objects=10)
    report.count("clipped", "outside image", "f.json: annotations[3]")
    report.count("skipped", "unreadable", "a.png")
    assert report.summary() == ("X (f.json): 4 images, 10 boxes, skipped 1 (unreadable), "
                                "clipped 1 (outside image)")
    report.enforce(0.25)  # 1 of 4 images skipped: at the limit, not above
    with pytest.raises(DataError, match=r"skipped 1 of 4 samples \(25.0%\)"):
        report.enforce(0.2)
    assert report.as_dict()["counts"][0] == {"kind": "clipped", "reason": "outside image",
                                             "count": 1, "examples": ["f.json: annotations[3]"]}


def test_parse_number():
    assert parse_number(" -1.5e3 ") == -1500.0 and parse_number(".5") == 0.5
    assert np.isnan(parse_number("nan"))
    for bad in ("1_0", "\uff11", "0x10", "1e", "", "1 2"):
        with pytest.raises(ValueError):
            parse_number(bad)


def test_clean_data_logs_info_and_counts_nothing(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="detlab.data"):
        ds = _coco(tmp_path, [_box([10, 10, 5, 8])])
    assert ds.data_report().counts == {}
    assert [r.levelno for r in caplog.records if r.name == "detlab.data"] == [logging.INFO]
    assert "nothing repaired" in caplog.text
    json.dumps(ds.data_report().as_dict())
