"""Tiny example data sets in every file format detlab reads, for trying a recipe or
``detlab check-data`` before pointing it at your own files (docs: "Bring your own data").

:func:`write_examples` writes, under one folder (deterministic: same bytes every time)::

    coco/      images/*.png, annotations/instances_{train,val}.json   (CocoDetection)
    yolo/      images/{train,val}/*.png, labels/{train,val}/*.txt, data.yaml  (YoloDetection)
    voc/       JPEGImages/*.png, Annotations/*.xml, ImageSets/Main/{train,val}.txt (VocDetection)
    icdar/     {train,val}/images/*.png, {train,val}/gts/gt_*.txt     (IcdarTxt)
    receipts/  images/*.png, {train,val}.json                          (ReceiptJson)
    ct_nifti/  imagesTr/*.nii.gz, labelsTr/*.nii.gz (Decathlon layout)  (CTVolumeSlices)
    ct_dicom/  case_*/image/*.dcm, case_*/mask/*.dcm, cases.csv         (CTVolumeSlices)

The box sets are the same scenes in three formats: 320x240 frames with two classes
(``helmet_on``, ``helmet_off``) of 8-40 px boxes; one crowd/difficult object in train. The CT
studies need the ``medical`` extra (nibabel, pydicom).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError

__all__ = ["write_examples", "FORMATS", "CLASS_NAMES"]

FORMATS = ("coco", "yolo", "voc", "icdar", "receipts", "ct_nifti", "ct_dicom")
CLASS_NAMES = ("helmet_on", "helmet_off")
_SPLITS = {"train": 6, "val": 2}
_W, _H = 320, 240


def _scene(seed: int) -> tuple[np.ndarray, list[tuple[int, int, int, int, int, bool]]]:
    """A gray frame and its objects ``(label, x, y, w, h, hard)`` (integer pixel edges)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 12, (_H, _W, 3))
    objects = []
    for k in range(int(rng.integers(0, 5))):
        w = int(rng.integers(8, 41))
        h = int(w * rng.uniform(1.0, 1.6))
        x, y = int(rng.integers(0, _W - w)), int(rng.integers(0, _H - h))
        label = int(rng.integers(0, 2))
        image[y:y + h, x:x + w] = (230, 200, 40) if label == 0 else (60, 60, 70)
        objects.append((label, x, y, w, h, seed == 0 and k == 0))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _scenes() -> dict[str, list[tuple[str, np.ndarray, list]]]:
    out, seed = {}, 0
    for split, n in _SPLITS.items():
        out[split] = []
        for _ in range(n):
            image, objects = _scene(seed)
            out[split].append((f"{split}_{seed:03d}", image, objects))
            seed += 1
    return out


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _coco(root: Path, scenes: dict) -> None:
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)]
    for split, items in scenes.items():
        images, anns = [], []
        for image_id, (name, image, objects) in enumerate(items, start=1):
            _png(root / "images" / f"{name}.png", image)
            images.append({"id": image_id, "file_name": f"{name}.png", "width": _W,
                           "height": _H})
            for label, x, y, w, h, hard in objects:
                anns.append({"id": len(anns) + 1, "image_id": image_id,
                             "category_id": label + 1, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": int(hard)})
        path = root / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": cats}, indent=1))


def _yolo(root: Path, scenes: dict) -> None:
    for split, items in scenes.items():
        for name, image, objects in items:
            _png(root / "images" / split / f"{name}.png", image)
            lines = [f"{label} {(x + w / 2) / _W:.6f} {(y + h / 2) / _H:.6f} {w / _W:.6f} "
                     f"{h / _H:.6f}" for label, x, y, w, h, _ in objects]
            label_file = root / "labels" / split / f"{name}.txt"
            label_file.parent.mkdir(parents=True, exist_ok=True)
            label_file.write_text("".join(line + "\n" for line in lines))
    (root / "data.yaml").write_text("names: [" + ", ".join(CLASS_NAMES) + "]\n")


def _voc(root: Path, scenes: dict) -> None:
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for split, items in scenes.items():
        for name, image, objects in items:
            _png(root / "JPEGImages" / f"{name}.png", image)
            parts = [f"<annotation>\n  <filename>{name}.png</filename>\n  <size><width>{_W}"
                     f"</width><height>{_H}</height><depth>3</depth></size>"]
            for label, x, y, w, h, hard in objects:  # VOC: 1-based, inclusive pixel indices
                parts.append(f"  <object><name>{CLASS_NAMES[label]}</name><difficult>"
                             f"{int(hard)}</difficult><bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}"
                             f"</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>")
            (root / "Annotations" / f"{name}.xml").write_text("\n".join(parts)
                                                               + "\n</annotation>\n")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{name}\n" for name, _, _ in items))


def _words(seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """A light page with dark word boxes; words ``(points (4, 2), transcription)``."""
    rng = np.random.default_rng(1000 + seed)
    image = rng.normal(225, 8, (_H, _W, 3))
    words = []
    y = 12
    while y < _H - 30:
        x, h = 10, int(rng.integers(10, 19))
        while x < _W - 60:
            w = int(rng.integers(20, 70))
            image[y:y + h, x:x + w] = 40
            quad = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
            words.append((quad, "###" if rng.random() < 0.1 else f"w{len(words)}"))
            x += w + int(rng.integers(8, 20))
        y += h + int(rng.integers(12, 30))
    return np.clip(image, 0, 255).astype(np.uint8), words


def _icdar(root: Path) -> None:
    seed = 0
    for split, n in _SPLITS.items():
        for _ in range(n):
            image, words = _words(seed)
            _png(root / split / "images" / f"img_{seed}.png", image)
            gt = root / split / "gts" / f"gt_img_{seed}.txt"
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_text("".join(",".join(str(int(v)) for v in q.reshape(-1)) + f",{t}\n"
                                  for q, t in words))
            seed += 1


def _receipts(root: Path) -> None:
    seed = 0
    for split, n in _SPLITS.items():
        entries = {}
        for _ in range(n):
            image, words = _words(100 + seed)
            name = f"receipt_{seed}.png"
            _png(root / "images" / name, image)
            entries[name] = {"words": {str(i): {"points": q.astype(int).tolist(),
                                                "transcription": t}
                                       for i, (q, t) in enumerate(words)}}
            seed += 1
        (root / f"{split}.json").write_text(json.dumps({"images": entries}))


def _study(seed: int, shape: tuple[int, int, int] = (48, 48, 12)
           ) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (body disc, bone block) and a 0/1 lesion mask on 2 slices, ``(I, J, K)``."""
    rng = np.random.default_rng(2000 + seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(i - shape[0] / 2) ** 2 + (j - shape[1] / 2) ** 2 < (0.45 * shape[0]) ** 2] = 40.0
    hu[16:32, 18:30, :] = 700.0
    hu += rng.normal(0, 10, shape)
    mask = np.zeros(shape, np.uint8)
    k = int(rng.integers(2, shape[2] - 3))
    mask[20:25, 20:24, k:k + 2] = 1
    hu[mask > 0] = 300.0
    return hu.astype(np.int16), mask


def _ct_nifti(root: Path, cases: int = 5) -> None:
    import nibabel as nib

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for n in range(cases):
        hu, mask = _study(n)
        for sub, arr in (("imagesTr", hu), ("labelsTr", mask)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, affine), str(root / sub / f"case_{n}.nii.gz"))


def _dicom_series(folder: Path, volume: np.ndarray, series_seed: int) -> None:
    from .dicom_write import write_dicom_series

    prefix = "1.2.826.0.1.3680043.10.1234"  # fixed UIDs: the files are the same every time
    write_dicom_series(folder, volume, spacing=(0.8, 0.8), series_uid=f"{prefix}.{series_seed}",
                       study_uid=f"{prefix}.{series_seed // 2}")


def _ct_dicom(root: Path, cases: int = 5) -> None:
    rows = []
    for n in range(cases):
        hu, mask = _study(10 + n)
        _dicom_series(root / f"case_{n}" / "image", hu, 2 * n)
        _dicom_series(root / f"case_{n}" / "mask", mask.astype(np.int16), 2 * n + 1)
        rows.append({"case_id": f"case_{n}", "image": f"case_{n}/image",
                     "mask": f"case_{n}/mask"})
    with (root / "cases.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case_id", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)


def write_examples(root: str | Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write the example data sets (module docstring) of ``formats`` under ``root``; returns
    ``{format: folder}``."""
    root = Path(root)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"unknown example formats {sorted(unknown)}; known: {FORMATS}")
    scenes = _scenes()
    writers = {"coco": lambda p: _coco(p, scenes), "yolo": lambda p: _yolo(p, scenes),
               "voc": lambda p: _voc(p, scenes), "icdar": _icdar, "receipts": _receipts,
               "ct_nifti": _ct_nifti, "ct_dicom": _ct_dicom}
    written = {}
    for name in formats:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        writers[name](folder)
        written[name] = folder
    return written
