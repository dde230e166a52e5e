"""VocDetection: the 1-based -> continuous coordinate convention (checked on the drawn pixels),
classes, difficult handling, split lists, size checks, counters and every DataError."""

from __future__ import annotations

import time

import numpy as np
import pytest
from det_files import PLAIN, red_mask, voc_xml, write_voc

from detlab.data.datasets.voc import VOC_CLASSES, VocDetection, parse_voc_xml
from detlab.errors import ConfigError, DataError
from detlab.registry import DATASETS

IMAGES = {
    "a": dict(size=(100, 60), objects=[
        dict(name="dog", box=(11, 21, 40, 35)),
        dict(name="cat", box=(51, 6, 70, 45), difficult=1),
    ]),
    "b": dict(size=(40, 80), objects=[dict(name="person", box=(5, 9, 16, 24))]),
    "empty": dict(size=(50, 50), objects=[]),
}
RAW = dict(img_size=None, stride=1, **PLAIN)  # original pixels: boxes can be read off the image


@pytest.fixture
def voc(tmp_path):
    return write_voc(tmp_path / "VOC", IMAGES, splits={"train": ["a", "empty"], "val": ["b"]})


def test_one_based_inclusive_boxes_become_pixel_edges(voc):
    ds = VocDetection(voc, **RAW)
    assert ds.class_names == ["cat", "dog", "person"]  # sorted names found
    sample = ds[0]
    boxes = sample["target"]["boxes"].numpy()
    # <xmin>11</xmin> is the 11th pixel column, 0-based index 10: its left edge is x = 10.
    np.testing.assert_array_equal(boxes, [[10, 20, 40, 35], [50, 5, 70, 45]])
    assert sample["target"]["labels"].tolist() == [1, 0]
    assert sample["target"]["ignore"].tolist() == [False, True]  # difficult -> ignore
    red = red_mask(sample["image"])
    ys, xs = np.nonzero(red[:, :45])  # the dog only
    # the filled pixels of the drawn box are exactly [x1, x2) x [y1, y2) of detlab's box
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (10, 40, 20, 35)
    # relative area uses the same box: 30 x 15 px of a 100 x 60 image
    assert ds.object_areas(0).tolist() == pytest.approx([30 * 15 / 6000])


def test_split_lists_classes_and_registry(voc):
    train = DATASETS.build(dict(type="VocDetection", root=str(voc), split="train",
                                classes="voc", img_size=64))
    assert len(train) == 2 and train.class_names == list(VOC_CLASSES)
    assert train.annotations(0).labels.tolist() == [VOC_CLASSES.index("dog"),
                                                     VOC_CLASSES.index("cat")]
    assert train.annotations(1).boxes.shape == (0, 4)  # an image without objects
    val = VocDetection(voc, split="val", classes=["person"], img_size=64)
    assert val.annotations(0).labels.tolist() == [0] and val.annotations(0).image_id == "b"
    only_dog = VocDetection(voc, classes=["dog"], img_size=64)
    assert only_dog.annotations(0).labels.tolist() == [0]
    # the cat and the person are left out, counted with the first places
    assert only_dog.data_report().counts == {("ignored", "category not in classes"): 2}
    assert only_dog.data_report().examples[("ignored", "category not in classes")] == [
        "a.xml: object[1] ('cat')", "b.xml: object[0] ('person')"]
    assert only_dog.data_report().objects == 1


def test_difficult_drop_and_keep(voc):
    drop = VocDetection(voc, split="train", difficult="drop", **RAW)
    assert drop.annotations(0).labels.tolist() == [1]
    assert drop.data_report().counts == {("ignored", "difficult (difficult='drop')"): 1}
    keep = VocDetection(voc, split="train", difficult="keep", **RAW)
    assert keep.annotations(0).ignore.tolist() == [False, False]
    with pytest.raises(ConfigError, match="difficult"):
        VocDetection(voc, difficult="yes")


def test_boxes_outside_are_clipped_or_dropped_and_counted_far_ones_are_errors(tmp_path, caplog):
    root = write_voc(tmp_path, {"x": dict(size=(50, 40), objects=[
        dict(name="a", box=(0, 1, 51, 40))])})  # 0-based tool output: xmin=0, xmax=W+1
    ds = VocDetection(root, **RAW)
    # (0 - 1, 1 - 1, 51, 40) clipped to the 50 x 40 image, in original pixels
    assert ds.annotations(0).boxes.tolist() == [[0, 0, 50, 40]]
    assert ds.data_report().counts == {("clipped", "outside image"): 1}
    assert ds.data_report().examples[("clipped", "outside image")] == ["x.xml: object[0] ('a')"]
    objects = [dict(name="a", box=(1, 1, 10, 10)), dict(name="a", box=(41, 1, 60, 10)),
               dict(name="a", box=(55, 1, 60, 10))]  # 40..60 -> 40..50; 54..60: nothing inside
    (root / "Annotations" / "x.xml").write_text(voc_xml("x.png", (50, 40), objects))
    ds = VocDetection(root, max_bad_fraction=0.5, **RAW)
    assert ds.annotations(0).boxes.tolist() == [[0, 0, 10, 10], [40, 0, 50, 10]]
    assert ds.data_report().counts == {("clipped", "outside image"): 1,
                                       ("dropped", "outside image"): 1}
    assert f"VocDetection ({tmp_path.name}/Annotations): 1 images, 3 boxes, clipped 1" \
        in caplog.text
    with pytest.raises(DataError, match=r"VocDetection .*dropped 1 of 3 boxes .*max_bad_frac"):
        VocDetection(root, **RAW)  # 1 of 3 dropped > 5 %
    (root / "Annotations" / "x.xml").write_text(voc_xml("x.png", (50, 40), [
        dict(name="a", box=(1, 1, 10, 10)), dict(name="a", box=(1, 1, 600, 10))]))
    with pytest.raises(DataError, match=r"x\.xml: object\[1\] \('a'\): point \(600, 10\) "
                                        r"lies more than 10 image sizes outside the 50 x 40"):
        VocDetection(root, **RAW)


def test_size_checked_against_the_image_and_read_from_the_header_when_absent(tmp_path):
    root = write_voc(tmp_path, {"x": dict(size=(50, 40), objects=[
        dict(name="a", box=(1, 1, 10, 10))], write_size=False)})
    ds = VocDetection(root, **RAW)
    assert ds.annotations(0).size == (40, 50)  # from the PNG header
    assert ds.data_report().counts == {}
    (root / "Annotations" / "x.xml").write_text(voc_xml("x.png", (51, 40), []))
    with pytest.raises(DataError, match=r"x\.png is 40x50 \(h x w\) but .*x\.xml <size> says "
                                        r"40x51"):
        VocDetection(root, classes=["a"], **RAW)  # the first image: at construction


def test_check_files_compares_every_size(voc):
    (voc / "Annotations" / "empty.xml").write_text(voc_xml("empty.png", (50, 49), []))
    VocDetection(voc)  # only the first image ("a") is compared by default
    with pytest.raises(DataError, match=r"empty\.png is 50x50 .*empty\.xml <size> says 49x50"):
        VocDetection(voc, check_files=True)


@pytest.mark.parametrize("objects, message", [
    ([dict(name="a", box=(1, 1, "ten", 5))], r"object\[0\] \('a'\) <xmax> = 'ten' is not a num"),
    ([dict(name="a", box=(1, 1, 5, 5)), dict(name="a", box=(9, 1, 5, 5))],
     r"object\[1\] \('a'\) has xmin=9.*expected xmin <= xmax"),
    ([dict(name="a", box=(1, 1, 5, 5), difficult="maybe")], r"object\[0\].*<difficult>"),
    ([dict(name="", box=(1, 1, 5, 5))], r"object\[0\] has no <name>"),
])
def test_malformed_objects_name_file_and_object_index(tmp_path, objects, message):
    path = tmp_path / "bad.xml"
    path.write_text(voc_xml("bad.png", (20, 20), objects))
    with pytest.raises(DataError, match=r"bad\.xml: " + message):
        parse_voc_xml(path)


def test_entity_declarations_are_refused_fast(tmp_path):
    lol = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{"&lol%d;" % (i - 1) * 10}">' for i in range(1, 10)]
    path = tmp_path / "bomb.xml"
    path.write_text('<?xml version="1.0"?>\n<!DOCTYPE annotation [' + "".join(lol) + "]>\n"
                    "<annotation><filename>&lol9;</filename></annotation>\n")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"bomb\.xml: DOCTYPE/ENTITY declarations are not allowed"):
        parse_voc_xml(path)
    assert time.perf_counter() - start < 1.0
    (tmp_path / "junk.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"junk\.xml: not valid XML"):
        parse_voc_xml(tmp_path / "junk.xml")


def test_missing_paths_fail_at_construction(voc, tmp_path):
    with pytest.raises(DataError, match="VocDetection.root is not set"):
        VocDetection(None)
    with pytest.raises(DataError, match="VOC annotation folder not found"):
        VocDetection(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"VOC split list not found: .*test\.txt"):
        VocDetection(voc, split="test")
    with pytest.raises(DataError, match=r"image folder not found: .*images"):
        VocDetection(voc, img_dir="images")
    (voc / "JPEGImages" / "b.png").unlink()
    VocDetection(voc)  # only the first image is checked by default
    with pytest.raises(DataError, match=r"not found: .*b\.png"):
        VocDetection(voc, check_files=True)
    (voc / "JPEGImages" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot decode image file .*a\.png"):
        VocDetection(voc)


def test_same_scenes_as_coco_give_the_same_boxes(tmp_path):
    """detlab's example files hold the same scenes as COCO [x, y, w, h] and as VOC 1-based
    indices: both readers must give identical pixel-edge boxes, labels and ignore flags."""
    from detlab.data.datasets.coco_json import CocoDetection
    from detlab.data.example_files import write_examples

    folders = write_examples(tmp_path, ("coco", "voc"))
    for split in ("train", "val"):
        coco = CocoDetection(folders["coco"] / "annotations" / f"instances_{split}.json",
                             folders["coco"] / "images")
        voc = VocDetection(folders["voc"], split=split, classes=coco.class_names)
        assert len(coco) == len(voc) > 0
        for i in range(len(coco)):
            a, b = coco.annotations(i), voc.annotations(i)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            assert a.labels.tolist() == b.labels.tolist()
            assert a.ignore.tolist() == b.ignore.tolist() and a.size == b.size
    train = VocDetection(folders["voc"], "train")
    assert voc.data_report().objects == 7 and voc.data_report().samples == len(voc)
    assert sum(int(train.annotations(i).ignore.sum()) for i in range(len(train))) == 1
    assert train.data_report().counts == {} and voc.data_report().counts == {}


def test_filenames_and_split_ids_stay_inside_their_folders(voc, tmp_path):
    (tmp_path / "secret.png").write_bytes((voc / "JPEGImages" / "a.png").read_bytes())
    (voc / "Annotations" / "a.xml").write_text(voc_xml("../../secret.png", (100, 60), []))
    with pytest.raises(DataError, match=r"a\.xml: <filename>: file '\.\./\.\./secret\.png' "
                                        r"resolves to .*secret\.png, outside the data root"):
        VocDetection(voc, classes=["dog"])
    ds = VocDetection(voc, classes=["dog"], allow_outside_root=True)  # the recipe's opt-out
    assert ds.annotations(0).path.endswith("JPEGImages/../../secret.png")
    (tmp_path / "x.xml").write_text(voc_xml("b.png", (40, 80), []))
    (voc / "ImageSets" / "Main" / "evil.txt").write_text("../../x\n")
    with pytest.raises(DataError, match=r"VOC id '\.\./\.\./x': file '\.\./\.\./x\.xml' "
                                        r"resolves to .*outside the data root"):
        VocDetection(voc, split="evil", classes=["dog"])


@pytest.mark.parametrize("size, objects, message", [
    ((0, 20), [], r"<size>: width = 0: expected an int in \[1, 1048576\]"),
    (("1e308", 20), [], r"<size>: width = .*expected an int"),
    (("20.5", 20), [], r"<size> width=20.5, height=20: expected whole pixels"),
    (("nan", 20), [], r"<size> <width> = nan is not finite"),
    ((20, 20), [dict(name="a", box=(1, 1, "1e400", 5))],
     r"object\[0\] \('a'\) <xmax> = inf is not finite"),
    ((20, 20), [dict(name="a", box=(1, 1, "1_0", 5))],
     r"object\[0\] \('a'\) <xmax> = '1_0' is not a number"),
])
def test_sizes_and_numbers_are_checked(tmp_path, size, objects, message):
    path = tmp_path / "bad.xml"
    path.write_text(voc_xml("bad.png", size, objects))
    with pytest.raises(DataError, match=r"bad\.xml: " + message):
        parse_voc_xml(path)
    path.write_bytes(b"<annotation><filename>\xff\xfe.png</filename></annotation>")
    with pytest.raises(DataError, match=r"bad\.xml: not valid XML"):
        parse_voc_xml(path)
