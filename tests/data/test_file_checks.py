"""Datasets fail at construction (before any model is built) on a wrong image folder, a missing
or unreadable first image; ``check_files=True`` checks every file."""

from __future__ import annotations

import pytest
from det_files import coco_dict, write_json, write_png

from detlab.data.datasets.coco_json import CocoDetection
from detlab.data.datasets.yolo_txt import YoloDetection
from detlab.data.file_checks import check_image_files, image_size
from detlab.errors import DataError

IMAGES = [{"id": 1, "file_name": "a.png", "width": 30, "height": 20},
          {"id": 2, "file_name": "b.png", "width": 30, "height": 20}]


@pytest.fixture
def coco(tmp_path):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "img" / name, 20, 30)
    ann = write_json(tmp_path / "ann.json", coco_dict(IMAGES, [], [{"id": 1, "name": "x"}]))
    return ann, tmp_path / "img"


def test_coco_wrong_img_dir_fails_at_construction(coco, tmp_path):
    ann, img_dir = coco
    with pytest.raises(DataError, match=r"image folder not found: .*imgs \(images listed in "
                                        r".*ann\.json\)"):
        CocoDetection(ann, tmp_path / "imgs")
    (img_dir / "a.png").unlink()
    with pytest.raises(DataError, match=r"image file listed in .*ann\.json not found: .*a\.png"):
        CocoDetection(ann, img_dir)


def test_yolo_unreadable_first_image_fails_at_construction(tmp_path):
    write_png(tmp_path / "images" / "train" / "b.png", 20, 30)
    (tmp_path / "images" / "train" / "a.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"(cannot decode image file|cannot read image) .*a\.png"):
        YoloDetection(tmp_path, class_names=["x"])


def test_check_all_and_header_size(tmp_path):
    good = write_png(tmp_path / "a.png", 20, 30)
    assert image_size(good) == (20, 30)
    check_image_files([good, tmp_path / "gone.png"], "list.txt")  # only the first by default
    with pytest.raises(DataError, match=r"listed in list\.txt not found: .*gone\.png"):
        check_image_files([good, tmp_path / "gone.png"], "list.txt", check_all=True)
    check_image_files([], "empty.txt")


def test_text_datasets_check_the_first_image_at_construction(tmp_path):
    from detlab.data.datasets.icdar import IcdarTxt, ReceiptJson

    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "gt" / "gt_a.txt").write_text("1,1,9,1,9,5,1,5,word\n")
    with pytest.raises(DataError, match=r"(cannot decode image file|cannot read image) .*a\.png"):
        IcdarTxt(str(tmp_path / "img"), str(tmp_path / "gt"))
    ann = tmp_path / "r.json"
    ann.write_text('{"images": {"a.png": {"words": {}}}}')
    with pytest.raises(DataError, match=r"(cannot decode image file|cannot read image) .*a\.png"):
        ReceiptJson(str(ann), str(tmp_path / "img"))
