"""Write small data sets with real image statistics, in the formats users bring, for trying
detlab the way a new user would (not used by the tests).

Backgrounds are real photographs from a folder you give (e.g. scikit-image's ``skimage/data``
folder, installed in a separate environment); objects, words and lesions are placed on them so
their sizes match the users' problems:

* ``voc_faces/``   Pascal VOC XML + ``coco/instances_{train,val}.json`` of the same boxes: real
  face crops (``lfw_subset.npy`` from the same folder when present, else photo patches) of
  12-60 px pasted on 640x480 photo crops, 1-4 per image, some marked ``difficult``.
* ``cctv_frames/`` 1920x1080 frames with 19x35 px-like objects (COCO JSON), for ``check-data``.
* ``icdar_words/`` ICDAR-2015 layout (``ch4_training_images`` + ``gt_img_N.txt`` with a BOM):
  1280x720 photos with words 13-16 px tall in DejaVu Sans, some ``###`` don't-care words.
* ``mri_task/``    a Decathlon folder (``imagesTr``/``labelsTr``) from nibabel's ``example4d``
  test volumes (two 128x96x24 MRI volumes) with small lesions (~0.5 % of the pixels of 10-20 %
  of the slices), plus ``dicom_series/`` made from pydicom's ``CT_small.dcm``.

    python tools/make_real_like_data.py --backgrounds /path/to/skimage/data --out /tmp/real
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "immunohistochemistry.png", "ihc.png",
          "coins.png", "camera.png", "page.png", "brick.png", "grass.png", "gravel.png",
          "color.png", "horse.png", "moon.png", "text.png", "cell.png")
WORDS = ("TOTAL", "CASH", "Exit", "OPEN", "Coffee", "7-11", "SALE", "Parking", "BUS", "Hotel",
         "No.12", "Station", "PUSH", "PULL", "Welcome", "Tel:", "2026", "Street", "MENU", "EXIT")


def _photos(folder: Path) -> list[np.ndarray]:
    out = []
    for name in PHOTOS:
        p = folder / name
        if p.is_file():
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None and min(img.shape[:2]) >= 200:
                out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not out:
        raise SystemExit(f"no background photos found in {folder}")
    return out


def _background(photos: list[np.ndarray], rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = photos[rng.integers(len(photos))]
    ih, iw = img.shape[:2]
    s = rng.uniform(0.5, 1.0)
    ch, cw = max(32, int(ih * s)), max(32, int(iw * s))
    y, x = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
    crop = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR))


def _objects(folder: Path, photos: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    lfw = folder / "lfw_subset.npy"
    if lfw.is_file():
        faces = np.load(lfw)[:100]  # the first 100 are faces (25x25 gray, float in [0, 1])
        return [np.repeat((f * 255).astype(np.uint8)[..., None], 3, axis=2) for f in faces]
    patches = []
    for _ in range(100):
        img = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, img.shape[0] - 40), rng.integers(0, img.shape[1] - 40)
        patches.append(img[y:y + 40, x:x + 30].copy())
    return patches


def _paste(frame: np.ndarray, obj: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    patch = cv2.resize(obj, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(1.6 - 1.6 * np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)), 0, 1)
    region = frame[y:y + h, x:x + w].astype(np.float32)
    frame[y:y + h, x:x + w] = (alpha[..., None] * patch + (1 - alpha[..., None]) * region
                               ).astype(np.uint8)


def _voc_xml(name: str, w: int, h: int, objs: list[tuple[str, list[int], int]]) -> str:
    rows = [f"<annotation><folder>JPEGImages</folder><filename>{name}</filename>",
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for cls, (x1, y1, x2, y2), difficult in objs:
        rows.append(f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>"
                    f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                    f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    rows.append("</annotation>")
    return "\n".join(rows)


def detection_sets(out: Path, photos: list[np.ndarray], objects: list[np.ndarray],
                   n_train: int, n_val: int, seed: int) -> None:
    """``voc_faces`` (VOC + COCO) and ``cctv_frames`` (COCO)."""
    rng = np.random.default_rng(seed)
    root = out / "voc_faces"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main", "coco"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    coco: dict[str, dict] = {s: {"images": [], "annotations": [],
                                 "categories": [{"id": 3, "name": "face"}]}
                             for s in ("train", "val")}
    ids: dict[str, list[str]] = {"train": [], "val": []}
    ann_id = 1
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        h, w = 480, 640
        frame = _background(photos, rng, h, w)
        objs = []
        for _ in range(rng.integers(1, 5)):
            side = int(rng.uniform(12, 60))
            ow, oh = side, int(side * rng.uniform(1.0, 1.3))
            x, y = int(rng.integers(0, w - ow)), int(rng.integers(0, h - oh))
            _paste(frame, objects[rng.integers(len(objects))], x, y, ow, oh)
            difficult = int(side < 16 and rng.random() < 0.5)
            # VOC pixel indices are 1-based and inclusive.
            objs.append(("face", [x + 1, y + 1, x + ow, y + oh], difficult))
        stem = f"{i:06d}"
        Image.fromarray(frame).save(root / "JPEGImages" / f"{stem}.jpg", quality=92)
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", w, h, objs))
        ids[split].append(stem)
        image_id = 1000 + i
        coco[split]["images"].append({"id": image_id, "file_name": f"{stem}.jpg",
                                      "width": w, "height": h})
        for _, (x1, y1, x2, y2), difficult in objs:
            coco[split]["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": 3, "iscrowd": difficult,
                "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                "area": (x2 - x1 + 1) * (y2 - y1 + 1)})
            ann_id += 1
    for split in ("train", "val"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids[split]) + "\n")
        (root / "coco" / f"instances_{split}.json").write_text(json.dumps(coco[split]))

    cctv = out / "cctv_frames"
    (cctv / "images").mkdir(parents=True, exist_ok=True)
    for split, count, size_range in (("train", 12, (28, 70)), ("val", 6, (14, 40))):
        data = {"images": [], "annotations": [],
                "categories": [{"id": 0, "name": "helmet_on"}, {"id": 1, "name": "helmet_off"}]}
        for j in range(count):
            frame = _background(photos, rng, 1080, 1920)
            image_id = len(data["images"]) + (0 if split == "train" else 500)
            name = f"{split}_{j:03d}.jpg"
            for _ in range(rng.integers(3, 12)):
                bw = int(rng.uniform(*size_range) * 0.55)
                bh = int(bw / 0.55)
                x, y = int(rng.integers(0, 1920 - bw)), int(rng.integers(0, 1080 - bh))
                _paste(frame, objects[rng.integers(len(objects))], x, y, bw, bh)
                data["annotations"].append({
                    "id": len(data["annotations"]) + 1, "image_id": image_id,
                    "category_id": int(rng.integers(2)), "bbox": [x, y, bw, bh],
                    "area": bw * bh, "iscrowd": 0})
            Image.fromarray(frame).save(cctv / "images" / name, quality=90)
            data["images"].append({"id": image_id, "file_name": name, "width": 1920,
                                   "height": 1080})
        (cctv / f"instances_{split}.json").write_text(json.dumps(data))


def text_set(out: Path, photos: list[np.ndarray], n_train: int, n_val: int, seed: int) -> None:
    """ICDAR-2015 layout with 13-16 px words on 1280x720 photos."""
    rng = np.random.default_rng(seed + 1)
    font_path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    root = out / "icdar_words"
    for split, count in (("train", n_train), ("test", n_val)):
        img_dir, gt_dir = root / f"ch4_{split}_images", root / f"ch4_{split}_gt"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            frame = Image.fromarray(_background(photos, rng, 720, 1280))
            draw = ImageDraw.Draw(frame)
            lines, boxes = [], []
            for _ in range(rng.integers(6, 14)):
                px = int(rng.integers(13, 17))
                font = ImageFont.truetype(font_path, size=int(px * 1.35))
                word = WORDS[rng.integers(len(WORDS))]
                x0, y0, x1, y1 = draw.textbbox((0, 0), word, font=font)
                tw, th = x1 - x0, y1 - y0
                x, y = int(rng.integers(5, 1280 - tw - 5)), int(rng.integers(5, 720 - th - 5))
                box = (x - 2, y - 2, x + tw + 2, y + th + 2)
                if any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3])
                       for b in boxes):
                    continue
                boxes.append(box)
                mean = np.asarray(frame.crop(box)).mean()
                ink = (20, 20, 20) if mean > 110 else (245, 245, 235)
                draw.text((x - x0, y - y0), word, font=font, fill=ink)
                text = "###" if rng.random() < 0.1 else word
                bx1, by1, bx2, by2 = box
                lines.append(f"{bx1},{by1},{bx2},{by1},{bx2},{by2},{bx1},{by2},{text}")
            frame.save(img_dir / f"img_{i}.jpg", quality=92)
            (gt_dir / f"gt_img_{i}.txt").write_text("\ufeff" + "\n".join(lines) + "\n",
                                                    encoding="utf-8")


def medical_set(out: Path, seed: int) -> None:
    """Decathlon folder from nibabel's example4d volumes + a DICOM series from CT_small."""
    import nibabel as nib

    rng = np.random.default_rng(seed + 2)
    data_dir = Path(nib.__file__).parent / "tests" / "data"
    src = nib.load(str(data_dir / "example4d.nii.gz"))
    vol4 = np.asarray(src.dataobj)
    root = out / "mri_task"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    affine = src.affine
    fractions = []
    for t in range(vol4.shape[3]):
        vol = vol4[..., t].astype(np.int16)
        mask = np.zeros(vol.shape, np.uint8)
        slices = rng.choice(vol.shape[2], size=max(2, vol.shape[2] // 6), replace=False)
        inside = vol > np.percentile(vol, 60)
        for z in slices:
            ys, xs = np.nonzero(inside[:, :, z])
            if len(ys) == 0:
                continue
            k = rng.integers(len(ys))
            cy, cx = ys[k], xs[k]
            yy, xx = np.mgrid[0:vol.shape[0], 0:vol.shape[1]]
            # ~0.5 % of a 128x96 slice: an ellipse of ~60 px.
            blob = ((yy - cy) / 5.0) ** 2 + ((xx - cx) / 3.5) ** 2 <= 1
            mask[:, :, z] |= blob.astype(np.uint8)
            vol[:, :, z][blob] = (vol[:, :, z][blob] * 1.4).astype(np.int16)
        fractions.append(mask[:, :, slices].mean())
        nib.save(nib.Nifti1Image(vol, affine), str(root / "imagesTr" / f"case_{t:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(root / "labelsTr" / f"case_{t:03d}.nii.gz"))
    print(f"mri_task: lesion fraction of lesion slices {[round(float(f), 4) for f in fractions]}")

    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        return
    ct = get_testdata_file("CT_small.dcm")
    series = out / "dicom_series" / "case_ct"
    if series.exists():
        shutil.rmtree(series)
    series.mkdir(parents=True)
    base = pydicom.dcmread(ct)
    z0 = float(base.ImagePositionPatient[2])
    uid = pydicom.uid.generate_uid()
    for k in range(16):
        ds = pydicom.dcmread(ct)
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1],
                                   z0 + 2.5 * k]
        ds.InstanceNumber = k + 1
        ds.SliceThickness = 2.5
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(series / f"slice_{k:03d}.dcm")


def main() -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backgrounds", required=True, help="folder of photographs (skimage/data)")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=160)
    p.add_argument("--val", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photos = _photos(Path(args.backgrounds))
    rng = np.random.default_rng(args.seed)
    detection_sets(out, photos, _objects(Path(args.backgrounds), photos, rng),
                   args.train, args.val, args.seed)
    text_set(out, photos, max(8, args.train // 5), max(4, args.val // 4), args.seed)
    medical_set(out, args.seed)
    print(f"wrote {sorted(os.listdir(out))} under {out}")


if __name__ == "__main__":
    main()
