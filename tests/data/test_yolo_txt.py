"""YoloDetection: folder and list-file layouts, names files, exact pixel boxes from normalized
labels, missing label files, polygon lines, and a DataError with file:line for every bad line."""

from __future__ import annotations

import numpy as np
import pytest
from det_files import PLAIN, red_mask, write_png

from detlab.data.datasets.yolo_txt import YoloDetection, label_path_for
from detlab.errors import ConfigError, DataError
from detlab.registry import DATASETS

NAMES = ["helmet", "head"]


@pytest.fixture
def yolo(tmp_path):
    """images/train/{a,b,c}.png; a has 2 objects, b none (no label file), c an empty file."""
    root = tmp_path / "ds"
    write_png(root / "images" / "train" / "a.png", 40, 80, [(8, 4, 24, 20)])
    write_png(root / "images" / "train" / "b.png", 32, 32)
    write_png(root / "images" / "train" / "c.png", 32, 32)
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    # (8, 4, 24, 20) in an 80x40 image: center (16, 12), size 16x16 → normalized.
    (labels / "a.txt").write_text("0 0.2 0.3 0.2 0.4\n\n1 0.875 0.5 0.25 0.5\n")
    (labels / "c.txt").write_text("")
    return root


def test_folder_layout_boxes_and_meta(yolo):
    ds = YoloDetection(yolo, "train", class_names=NAMES, img_size=None, **PLAIN)
    assert len(ds) == 3 and ds.class_names == NAMES
    sample = ds[0]
    target, meta = sample["target"], sample["meta"]
    assert meta["image_id"] == "a" and meta["orig_size"] == (40, 80)
    np.testing.assert_allclose(target["orig_boxes"].numpy(),
                               [[8, 4, 24, 20], [60, 10, 80, 30]], atol=1e-5)
    assert target["labels"].tolist() == [0, 1] and target["ignore"].tolist() == [False, False]
    # No resize; padded 40x80 → 64x96: 12 px on top, 8 on the left.
    assert meta["pad"] == (12, 8) and meta["scale"] == (1.0, 1.0)
    np.testing.assert_allclose(target["boxes"].numpy(),
                               [[16, 16, 32, 32], [68, 22, 88, 42]], atol=1e-5)
    ys, xs = np.nonzero(red_mask(sample["image"]))
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (16, 16, 32, 32)


def test_missing_and_empty_label_files_mean_no_objects(yolo):
    ds = YoloDetection(yolo, class_names=NAMES, img_size=32)
    for i in (1, 2):
        target = ds[i]["target"]
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_object_areas_without_decoding(yolo):
    ds = YoloDetection(yolo, class_names=NAMES)
    (yolo / "images" / "train" / "a.png").write_bytes(b"")  # never decoded
    np.testing.assert_allclose(ds.object_areas(0), [0.2 * 0.4, 0.25 * 0.5])
    assert ds.object_areas(1).shape == (0,)


@pytest.mark.parametrize("text", ["names: [helmet, head]\nnc: 2\n",
                                  "names:\n  0: helmet\n  1: head\n"])
def test_names_file(yolo, tmp_path, text):
    names = tmp_path / "data.yaml"
    names.write_text(text)
    assert YoloDetection(yolo, names_file=names).class_names == NAMES


def test_list_file_relative_to_its_folder(yolo):
    (yolo / "train.txt").write_text("images/train/a.png\n\nimages/train/c.png\n")
    ds = YoloDetection(yolo, list_file="train.txt", class_names=NAMES)
    assert len(ds) == 2
    assert ds[0]["meta"]["image_id"] == "images/train/a"
    assert ds[0]["target"]["labels"].tolist() == [0, 1]


def test_label_path_convention(tmp_path):
    img = tmp_path / "images" / "x" / "images" / "val" / "a.jpg"
    assert label_path_for(img) == tmp_path / "images" / "x" / "labels" / "val" / "a.txt"
    assert label_path_for(tmp_path / "frames" / "b.png") == tmp_path / "frames" / "b.txt"


def test_polygon_line_gives_its_bounding_box(yolo):
    (yolo / "labels" / "train" / "c.txt").write_text("1 0.25 0.25 0.75 0.5 0.5 0.75\n")
    ann = YoloDetection(yolo, class_names=NAMES).annotations(2)
    np.testing.assert_allclose(ann.boxes, [[0.25, 0.25, 0.75, 0.75]])
    assert ann.labels.tolist() == [1]


def test_registered(yolo):
    ds = DATASETS.build(dict(type="YoloDetection", root=str(yolo), class_names=NAMES))
    assert isinstance(ds, YoloDetection)


BAD_LINES = {
    "too_few_fields": ("0 0.5 0.5 0.2", "expected 'class cx cy w h'"),
    "odd_polygon": ("0 0.1 0.1 0.2 0.2 0.3", "expected 'class cx cy w h'"),
    "not_a_number": ("0 0.5 half 0.2 0.2", "non-numeric"),
    "class_out_of_range": ("2 0.5 0.5 0.2 0.2", r"class '2' is not an integer in \[0, 2\)"),
    "negative_class": ("-1 0.5 0.5 0.2 0.2", "class '-1'"),
    "fractional_class": ("0.5 0.5 0.5 0.2 0.2", "class '0.5'"),
    "pixel_coordinates": ("0 40 20 16 16", r"normalized to \[0, 1\]"),
    "zero_width": ("1 0.5 0.5 0 0.2", "width and height must be > 0"),
    "nan": ("1 nan 0.5 0.1 0.2", "non-finite"),
}


@pytest.mark.parametrize("line,pattern", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_malformed_line_names_file_and_line(yolo, line, pattern):
    label = yolo / "labels" / "train" / "c.txt"
    label.write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")
    with pytest.raises(DataError, match=pattern) as info:  # label files are read at build time
        YoloDetection(yolo, class_names=NAMES)
    assert f"{label}:3:" in str(info.value)


def test_names_file_errors(yolo, tmp_path):
    with pytest.raises(DataError, match="names file not found"):
        YoloDetection(yolo, names_file=tmp_path / "none.yaml")
    bad = tmp_path / "data.yaml"
    bad.write_text("nc: 2\n")
    with pytest.raises(DataError, match="data.yaml: has no key 'names'"):
        YoloDetection(yolo, names_file=bad)
    bad.write_text("names:\n  1: helmet\n")
    with pytest.raises(DataError, match="must map ids 0..K-1"):
        YoloDetection(yolo, names_file=bad)


def test_layout_errors(yolo, tmp_path):
    with pytest.raises(DataError, match="YOLO image folder not found: .*images/val"):
        YoloDetection(yolo, "val", class_names=NAMES)
    with pytest.raises(DataError, match="list file not found"):
        YoloDetection(yolo, list_file="missing.txt", class_names=NAMES)
    (yolo / "gone.txt").write_text("images/train/zzz.png\n")
    with pytest.raises(DataError, match="gone.txt not found: .*zzz.png"):  # first: always
        YoloDetection(yolo, list_file="gone.txt", class_names=NAMES)
    with pytest.raises(DataError, match="gone.txt not found: .*zzz.png"):
        YoloDetection(yolo, list_file="gone.txt", class_names=NAMES, check_files=True)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(), "exactly one of class_names"),
    (dict(class_names=NAMES, names_file="x.yaml"), "exactly one of class_names"),
    (dict(class_names="helmet"), "class_names"),
])
def test_bad_arguments(yolo, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        YoloDetection(yolo, **kwargs)
    with pytest.raises(ConfigError, match="root"):
        YoloDetection(class_names=NAMES)
