"""Text datasets: ICDAR-2015 txt and receipt JSON parsing (ignore flags, BOM, errors), the shared
pipeline (resize bookkeeping, polygon-aware augmentation checked against the moved pixels,
clipping), and the synthetic receipts (determinism, word quads covering the ink)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import Polygon

from detlab.errors import ConfigError, DataError
from detlab.data.datasets.icdar import IcdarTxt, ReceiptJson, parse_icdar_txt
from detlab.data.datasets.synthetic_receipts import SyntheticReceipts
from detlab.data.datasets.text_base import IMAGENET_MEAN, IMAGENET_STD, clip_polygons

QUADS = [np.array([[10, 8], [50, 8], [50, 20], [10, 20]], np.float32),
         np.array([[60, 30], [90, 26], [92, 40], [62, 44]], np.float32),
         np.array([[15, 40], [40, 40], [40, 52], [15, 52]], np.float32)]


def _write_image(path, size=(60, 100), quads=QUADS) -> None:
    """White quads on black: the 'text' whose pixels augmentation must keep under the quads."""
    img = np.zeros((*size, 3), np.uint8)
    for q in quads:
        cv2.fillPoly(img, [np.round(q).astype(np.int32)], (255, 255, 255))
    Image.fromarray(img).save(path)


def _icdar(tmp_path, lines: list[str], bom: bool = True, **kwargs) -> IcdarTxt:
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "gt").mkdir(exist_ok=True)
    _write_image(tmp_path / "img" / "img_1.png")
    text = "\n".join(lines) + "\n"
    (tmp_path / "gt" / "gt_img_1.txt").write_bytes((b"\xef\xbb\xbf" if bom else b"") +
                                                   text.encode())
    return IcdarTxt(img_dir=str(tmp_path / "img"), ann_dir=str(tmp_path / "gt"), **kwargs)


def _line(q: np.ndarray, text: str) -> str:
    return ",".join(str(int(v)) for v in q.reshape(-1)) + "," + text


def test_icdar_txt_bom_ignore_and_commas(tmp_path) -> None:
    ds = _icdar(tmp_path, [_line(QUADS[0], "Genaxis"), _line(QUADS[1], "###"), "",
                           _line(QUADS[2], "a,b,c")])
    polygons, ignore = parse_icdar_txt(tmp_path / "gt" / "gt_img_1.txt")
    assert ignore.tolist() == [False, True, False]
    np.testing.assert_array_equal(polygons[0], QUADS[0])
    sample = ds[0]
    assert sample["target"]["ignore"].tolist() == [False, True, False]
    assert sample["meta"]["image_id"] == "img_1" and sample["meta"]["orig_size"] == (60, 100)
    assert sample["image"].shape == (3, 60, 100)


def test_icdar_txt_resize_records_scale_and_keeps_original_polygons(tmp_path) -> None:
    ds = _icdar(tmp_path, [_line(q, "w") for q in QUADS], img_size=50)
    sample = ds[0]
    t, meta = sample["target"], sample["meta"]
    assert meta["input_size"] == (30, 50) and meta["scale"] == (0.5, 0.5)
    assert sample["image"].shape == (3, 30, 50) and t["prob_map"].shape == (30, 50)
    for q, p, o in zip(QUADS, t["polygons"], t["orig_polygons"]):
        np.testing.assert_allclose(p, q * 0.5)
        np.testing.assert_allclose(o, q)
    assert t["prob_map"].max() == 1 and set(t) >= {"prob_mask", "thresh_map", "thresh_mask"}


@pytest.mark.parametrize(
    "bad_line, match",
    [("1,2,3,4,5,6,7", "gt_img_1.txt:2: expected 'x1,y1"),
     ("1,2,3,x,5,6,7,8,word", "gt_img_1.txt:2: coordinates must be numbers"),
     ("1,2,3,4,5,6,nan,8,word", "gt_img_1.txt:2: non-finite")],
)
def test_icdar_txt_malformed_line_names_file_and_line(tmp_path, bad_line, match) -> None:
    with pytest.raises(DataError, match=match):
        _icdar(tmp_path, [_line(QUADS[0], "ok"), bad_line])


def test_icdar_txt_missing_annotation(tmp_path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    _write_image(tmp_path / "img" / "a.png")
    with pytest.raises(DataError, match="a.png -> gt_a.txt"):
        IcdarTxt(img_dir=str(tmp_path / "img"), ann_dir=str(tmp_path / "gt"))


def _receipts(tmp_path, words: dict) -> ReceiptJson:
    _write_image(tmp_path / "r1.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": {"r1.png": {"words": words}}}))
    return ReceiptJson(ann_file=str(ann))


def test_receipt_json_ignore_fields(tmp_path) -> None:
    words = {
        "1": {"points": QUADS[0].tolist(), "transcription": "TOTAL"},
        "2": {"points": QUADS[1].tolist(), "illegible": True},
        "3": {"points": QUADS[2].tolist(), "transcription": "###"},
        "4": {"points": [[70, 50], [95, 50], [95, 58], [82, 59], [70, 58]]},  # 5 points
    }
    sample = _receipts(tmp_path, words)[0]
    assert sample["target"]["ignore"].tolist() == [False, True, True, False]
    assert [len(p) for p in sample["target"]["polygons"]] == [4, 4, 4, 5]
    assert sample["meta"]["image_id"] == "r1.png"


@pytest.mark.parametrize(
    "words, match",
    [({"7": {"points": [[1, 2], [3, 4]]}}, r"words\['7'\]: a word needs >= 3"),
     ({"7": {"text": "x"}}, r"words\['7'\]: must be an object with 'points'")],
)
def test_receipt_json_bad_words(tmp_path, words, match) -> None:
    with pytest.raises(DataError, match=match):
        _receipts(tmp_path, words)


def test_receipt_json_missing_file_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="annotation file not found.*data.<split>.ann_file"):
        ReceiptJson(ann_file=str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    "transform",
    [dict(type="HorizontalFlip", p=1.0), dict(type="VerticalFlip", p=1.0),
     dict(type="Affine", rotate=(25, 25), p=1.0), dict(type="Rotate", limit=(90, 90), p=1.0),
     dict(type="Perspective", scale=(0.05, 0.05), p=1.0)],
)
def test_augmentation_moves_polygons_with_the_text(tmp_path, transform) -> None:
    ds = _icdar(tmp_path, [_line(q, "w") for q in QUADS], transforms=[transform])
    sample = ds[0]
    rgb = sample["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    text = rgb.mean(axis=2) > 0.5
    drawn = np.zeros(text.shape, np.uint8)
    for p in sample["target"]["polygons"]:
        cv2.fillPoly(drawn, [np.round(p).astype(np.int32)], 1)
    iou = (text & (drawn > 0)).sum() / (text | (drawn > 0)).sum()
    assert len(sample["target"]["polygons"]) == 3 and iou > 0.9, iou


@pytest.mark.parametrize(
    "polygon, kept_area",
    [
        ([[10, 10], [30, 10], [30, 20], [10, 20]], 200.0),  # inside: unchanged
        ([[-10, 10], [30, 10], [30, 20], [-10, 20]], 300.0),  # half outside: clipped at x=0
        ([[90, 40], [120, 40], [120, 60], [90, 60]], 9 * 19.0),  # corner: clipped to 99 x 59
        ([[-30, 10], [-5, 10], [-5, 20], [-30, 20]], None),  # entirely outside: dropped
        ([[-10, 10], [0.05, 10], [0.05, 20], [-10, 20]], None),  # sliver of 0.5 px²: dropped
    ],
)
def test_clip_polygons(polygon, kept_area) -> None:
    other = np.array([[50, 5], [60, 5], [60, 15], [50, 15]], np.float32)
    polys, ignore = clip_polygons([np.array(polygon, np.float32), other],
                                  np.array([True, False]), 60, 100, min_word_area=1.0)
    if kept_area is None:
        assert len(polys) == 1 and ignore.tolist() == [False]
        return
    assert ignore.tolist() == [True, False]
    assert Polygon(polys[0]).area == pytest.approx(kept_area)
    assert polys[0][:, 0].min() >= 0 and polys[0][:, 0].max() <= 99
    assert polys[0][:, 1].min() >= 0 and polys[0][:, 1].max() <= 59


def test_synthetic_is_deterministic_per_seed_split_index() -> None:
    a, b = SyntheticReceipts("train", 4, 128), SyntheticReceipts("train", 4, 128)
    ra, rb = a.render(2), b.render(2)
    np.testing.assert_array_equal(ra[0], rb[0])
    assert all(np.array_equal(p, q) for p, q in zip(ra[1], rb[1]))
    assert not np.array_equal(ra[0], a.render(1)[0])
    assert not np.array_equal(ra[0], SyntheticReceipts("val", 4, 128).render(2)[0])
    assert not np.array_equal(ra[0], SyntheticReceipts("train", 4, 128, seed=1).render(2)[0])
    sa, sb = a[2], b[2]
    assert (sa["image"] == sb["image"]).all() and sa["meta"]["image_id"] == "train-2"


@pytest.mark.parametrize("index", range(4))
def test_synthetic_word_quads_cover_the_ink_tightly(index: int) -> None:
    ds = SyntheticReceipts("val", 4, 256, max_angle=8.0, ignore_fraction=0.2)
    image, polygons, ignore, ink = ds.render(index)
    assert image.shape == (256, 256, 3) and image.dtype == np.float32
    assert len(polygons) >= 8 and len(ignore) == len(polygons)
    quads = [Polygon(p) for p in polygons]
    union = shapely.union_all(quads)
    ys, xs = np.nonzero(ink > 0.1)
    assert shapely.contains_xy(union, xs.astype(float), ys.astype(float)).all()
    assert sum(q.area for q in quads) == pytest.approx(union.area, rel=1e-6)  # no overlaps
    shares = []  # share of each quad's pixels with ink: tight boxes, not huge ones
    for p in polygons:
        inside = np.zeros(ink.shape, np.uint8)
        cv2.fillPoly(inside, [np.round(p).astype(np.int32)], 1)
        shares.append((ink[inside > 0] > 0.1).mean())
    # over 1047 words of 50 images: min 0.08 (thin "1"s), 1st percentile 0.19, median 0.44
    assert min(shares) > 0.05 and np.mean(shares) > 0.3, shares


def test_synthetic_ignore_fraction_marks_words() -> None:
    assert SyntheticReceipts("train", 2, 128, ignore_fraction=1.0).render(0)[2].all()
    assert not SyntheticReceipts("train", 2, 128, ignore_fraction=0.0).render(0)[2].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(split="dev"), "split"), (dict(image_size=32), "image_size"),
     (dict(text_height=(0.1, 0.05)), "text_height"), (dict(max_angle=45), "max_angle"),
     (dict(resize="crop"), "resize"), (dict(img_size=8), "img_size"),
     (dict(target_generator=dict(shrink_ratio=2.0)), "shrink_ratio"),
     (dict(mean=(0.5,)), "mean and std")],
)
def test_synthetic_config_errors(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SyntheticReceipts(**kwargs)
