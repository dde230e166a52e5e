"""Fuzz detlab's annotation readers with seeded mutations of small valid datasets.

For each format (COCO JSON, YOLO txt, Pascal VOC XML, ICDAR txt, receipt JSON, NIfTI, DICOM)
a tiny valid dataset is written to a temporary folder, one mutation is applied (numbers made
huge, NaN, negative or strings; keys removed or added; types swapped; ids duplicated; bytes
flipped; files truncated; non-UTF-8 bytes; paths leading out of the data root; broken headers
and tags; XML tags removed, DOCTYPE/ENTITY declarations, odd encodings), then the dataset is
built and every sample read. Each try ends as one of:

* ``error``     a :class:`~detlab.errors.DetlabError` (the message names file and place);
* ``repaired``  built and read, with clipped/dropped/skipped/ignored counts in ``data_report()``;
* ``accepted``  built and read, nothing counted (the mutation was harmless, e.g. an extra key);
* ``uncaught``  any other exception (a bug: the first types and examples are printed);
* ``escaped``   a sample was read from a file outside the data root (a bug);
* ``modified``  a file of the dataset changed while reading it (a bug);
* ``hung``      the try ran past ``--time-limit`` seconds (a bug).

Run: ``python tools/fuzz_data.py --count 500 --seed 0`` (``--formats coco yolo``).
``tests/data/test_fuzz_formats.py`` runs a smaller count and asserts the last four are 0.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detlab.errors import DetlabError

OUTCOMES = ("error", "repaired", "accepted", "uncaught", "escaped", "modified", "hung")
WEIRD_VALUES: list[Any] = [
    1e308, -1e308, 10**400, -1, 0, -0.0, 1e6, -1e6, 3e38, math.nan, math.inf, -math.inf,
    "x", "", "12", None, True, False, [], {}, [1, 2], {"a": 1}, 0.5, 2**63, 1e-300,
]
WEIRD_TOKENS = ["1e308", "-1e308", "nan", "inf", "-1", "0", "1e6", "-1e6", "abc", "", "0x10",
                "1_0", "\uff11", "9" * 400, "0.5", "1", "2", "3e38", "-0", "1e-300"]


class Hang(Exception):
    """Raised by the alarm when one try runs too long."""


@dataclass
class Case:
    """A written dataset: how to build it, its files and its root."""

    build: Callable[[], Any]
    root: Path  # every sample must be read from below here
    files: list[Path]  # annotation files a mutation may edit
    text_kind: str = "json"  # json | lines | nifti | dicom
    outside: Path = Path("/nonexistent/outside.png")  # an image outside the data root


@dataclass
class Tally:
    """Outcome counts of one format, with the first examples of the bad ones."""

    fmt: str
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    uncaught_types: Counter = field(default_factory=Counter)

    def add(self, outcome: str, detail: str = "") -> None:
        """Count ``outcome`` and keep its first 30 examples."""
        self.counts[outcome] += 1
        if detail and len(self.examples.setdefault(outcome, [])) < 30:
            self.examples[outcome].append(detail)

    def bugs(self) -> int:
        """Tries that ended in a bug (uncaught, escaped, modified, hung)."""
        return sum(self.counts[o] for o in ("uncaught", "escaped", "modified", "hung"))


# -- writing the valid datasets ------------------------------------------------------------------
def _png(path: Path, h: int = 24, w: int = 32) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), 90, np.uint8)
    img[4:12, 6:20] = (255, 0, 0)
    Image.fromarray(img).save(path)
    return path


def make_coco(d: Path) -> Case:
    from detlab.data.datasets.coco_json import CocoDetection

    _png(d / "img" / "a.png"), _png(d / "img" / "b.png", 20, 20)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                   {"id": 2, "file_name": "b.png", "width": 20, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [6, 4, 14, 8], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 4, 5]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [2, 2, 10, 10], "iscrowd": 1}],
        "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
    }
    ann = d / "ann.json"
    ann.write_text(json.dumps(data))
    return Case(lambda: CocoDetection(ann, d / "img", img_size=32), d / "img", [ann])


def make_yolo(d: Path) -> Case:
    from detlab.data.datasets.yolo_txt import YoloDetection

    root = d / "ds"
    _png(root / "images" / "a.png"), _png(root / "images" / "b.png", 20, 20)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.4 0.35 0.4 0.3\n1 0.1 0.1 0.1 0.1\n")
    (root / "labels" / "b.txt").write_text("1 0.25 0.25 0.75 0.5 0.5 0.75\n")
    lst = root / "train.txt"
    lst.write_text("images/a.png\nimages/b.png\n")
    return Case(lambda: YoloDetection(root, list_file="train.txt", class_names=["a", "b"],
                                      img_size=32), root,
                [lst, root / "labels" / "a.txt", root / "labels" / "b.txt"], "lines")


def make_voc(d: Path) -> Case:
    from detlab.data.datasets.voc import VocDetection

    root = d / "VOC"
    _png(root / "JPEGImages" / "a.png"), _png(root / "JPEGImages" / "b.png", 20, 20)
    (root / "Annotations").mkdir(parents=True)
    objects = {"a": [("a", (7, 5, 20, 12), 0), ("b", (2, 2, 5, 6), 1)],
               "b": [("a", (3, 3, 12, 12), 0)]}
    sizes = {"a": (32, 24), "b": (20, 20)}
    for stem, objs in objects.items():
        w, h = sizes[stem]
        body = "".join(
            f"<object><name>{n}</name><difficult>{hard}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, (x1, y1, x2, y2), hard in objs)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC</folder><filename>{stem}.png</filename><size><width>{w}"
            f"</width><height>{h}</height><depth>3</depth></size>{body}</annotation>\n")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    lst = root / "ImageSets" / "Main" / "train.txt"
    lst.write_text("a\nb\n")
    return Case(lambda: VocDetection(root, split="train", classes=["a", "b"], img_size=32),
                root / "JPEGImages",
                [root / "Annotations" / "a.xml", root / "Annotations" / "b.xml", lst], "xml")


def make_icdar(d: Path) -> Case:
    from detlab.data.datasets.icdar import IcdarTxt

    _png(d / "img" / "img_1.png")
    (d / "gt").mkdir()
    gt = d / "gt" / "gt_img_1.txt"
    gt.write_text("6,4,20,4,20,12,6,12,TOTAL\n2,14,12,14,12,20,2,20,###\n1,1,5,1,5,3,1,3,a,b\n")
    return Case(lambda: IcdarTxt(img_dir=str(d / "img"), ann_dir=str(d / "gt")), d,
                [gt], "lines")


def make_receipt(d: Path) -> Case:
    from detlab.data.datasets.icdar import ReceiptJson

    _png(d / "r" / "r1.png"), _png(d / "r" / "r2.png", 20, 20)
    data = {"images": {
        "r1.png": {"words": {"1": {"points": [[6, 4], [20, 4], [20, 12], [6, 12]],
                                   "transcription": "TOTAL"},
                             "2": {"points": [[2, 14], [12, 14], [12, 20], [7, 21], [2, 20]],
                                   "illegible": True}}},
        "r2.png": {"words": {"1": {"points": [[1, 1], [9, 1], [9, 6], [1, 6]],
                                   "transcription": "###"}}}}}
    ann = d / "r" / "ann.json"
    ann.write_text(json.dumps(data))
    return Case(lambda: ReceiptJson(ann_file=str(ann)), d / "r", [ann])


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    aff = np.diag([0.8, 0.7, 2.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, aff), str(path))
    return path


def make_nifti(d: Path) -> Case:
    from detlab.data.datasets.ct_volumes import CTVolumeSlices

    root = d / "Task"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for n in range(2):
        hu = rng.integers(-1000, 1000, (8, 8, 3)).astype(np.int16)
        mask = np.zeros((8, 8, 3), np.uint8)
        mask[2:4, 3:5, 1] = 1
        files.append(_nifti(root / "imagesTr" / f"case_{n}.nii", hu))
        files.append(_nifti(root / "labelsTr" / f"case_{n}.nii", mask))
    meta = root / "dataset.json"
    meta.write_text(json.dumps({"labels": {"0": "bg", "1": "lesion"}, "training": [
        {"image": f"./imagesTr/case_{n}.nii", "label": f"./labelsTr/case_{n}.nii"}
        for n in range(2)]}))
    return Case(lambda: CTVolumeSlices(root=str(root), split="all", cache_size=0), root,
                [meta, *files], "nifti")


def make_dicom(d: Path) -> Case:
    from detlab.data.datasets.ct_volumes import CTVolumeSlices
    from detlab.data.dicom_write import write_dicom_series

    folder = d / "p1"
    folder.mkdir(parents=True)
    # raw 1000 + 10 k stored with intercept -1024
    hu = np.stack([np.full((8, 8), 1000 + 10 * k - 1024.0) for k in range(3)], axis=2)
    files = write_dicom_series(folder, hu, origin=(-10.0, -20.0, 30.0), intercept=-1024.0,
                               names=[f"IM{k:04d}.dcm" for k in range(3)])
    aff = np.diag([-0.7, -0.8, 2.5, 1.0])
    aff[:3, 3] = [10.0, 20.0, 30.0]
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[2:4, 3:5, 1] = 1
    _nifti(d / "p1_mask.nii", mask, aff)
    lst = d / "cases.csv"
    lst.write_text("case_id,image,mask\np1,p1,p1_mask.nii\n")
    return Case(lambda: CTVolumeSlices(root=str(lst), split="all", cache_size=0), d,
                [lst, *files], "dicom")


FORMATS: dict[str, Callable[[Path], Case]] = {
    "coco": make_coco, "yolo": make_yolo, "voc": make_voc, "icdar": make_icdar,
    "receipt": make_receipt,
    "nifti": make_nifti, "dicom": make_dicom,
}


# -- mutations ----------------------------------------------------------------------------------
def _nodes(obj: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    out = [(path, obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _nodes(v, path + (i,))
    return out


def _parent(obj: Any, path: tuple) -> Any:
    for key in path[:-1]:
        obj = obj[key]
    return obj


def _traversal(case: Case, rng: np.random.Generator) -> str:
    outside = case.outside
    return str(rng.choice(["../outside.png", "../../../outside.png", str(outside), "/etc/passwd",
                           "a/../../../outside.png", "link.png", "./a.png/..", "\x00.png"]))


def _symlink(case: Case) -> None:
    """A symlink inside the root pointing at an image outside it (for the 'link.png' name)."""
    outside = case.outside
    for folder in {p.parent for p in case.root.rglob("*.png")} | {case.root}:
        link = folder / "link.png"
        if not link.exists():
            link.symlink_to(outside)


def mutate_json(path: Path, case: Case, rng: np.random.Generator) -> str:
    """Apply one random structural or byte-level mutation to a JSON file."""
    data = json.loads(path.read_text())
    kind = str(rng.choice(["value", "value", "value", "delete", "extra", "dup", "swap",
                           "traverse", "traverse", "bytes", "truncate", "nonutf8", "nudge",
                           "nudge"]))
    nodes = _nodes(data)[1:]
    p, node = nodes[int(rng.integers(len(nodes)))]
    numbers = [(q, n) for q, n in nodes if isinstance(n, (int, float)) and not isinstance(n, bool)]
    if kind == "nudge" and numbers:  # a plausible annotation mistake: a value a bit off
        p, node = numbers[int(rng.integers(len(numbers)))]
        _parent(data, p)[p[-1]] = node + float(np.round(rng.normal(0, 15), 1))
        desc = f"nudge {list(p)}"
    elif kind == "value":
        value = copy.deepcopy(WEIRD_VALUES[int(rng.integers(len(WEIRD_VALUES)))])
        _parent(data, p)[p[-1]] = value
        desc = f"{list(p)} = {value!r:.40}"
    elif kind == "delete":
        del _parent(data, p)[p[-1]]
        desc = f"delete {list(p)}"
    elif kind == "extra":
        dicts = [(q, n) for q, n in nodes if isinstance(n, dict)] or [((), data)]
        q, target = dicts[int(rng.integers(len(dicts)))]
        target["extra_field"] = copy.deepcopy(WEIRD_VALUES[int(rng.integers(len(WEIRD_VALUES)))])
        desc = f"extra key in {list(q)}"
    elif kind == "dup":
        lists = [(q, n) for q, n in nodes if isinstance(n, list) and n]
        if not lists:
            return "dup: nothing"
        q, target = lists[int(rng.integers(len(lists)))]
        target.append(copy.deepcopy(target[int(rng.integers(len(target)))]))
        desc = f"duplicate an entry of {list(q)}"
    elif kind == "swap":
        q, other = nodes[int(rng.integers(len(nodes)))]
        if q[: len(p)] == p or p[: len(q)] == q:
            return "swap: nested"
        _parent(data, p)[p[-1]], _parent(data, q)[q[-1]] = copy.deepcopy(other), copy.deepcopy(node)
        desc = f"swap {list(p)} <-> {list(q)}"
    elif kind == "traverse":
        name = _traversal(case, rng)
        _symlink(case)
        strings = [(q, n) for q, n in nodes if isinstance(n, str) and
                   (n.endswith((".png", ".nii")) or "/" in n)]
        keys = [(q, q[-1]) for q, n in nodes if q and isinstance(q[-1], str) and
                q[-1].endswith(".png")]
        if keys and (not strings or rng.random() < 0.5):  # receipt: image names are keys
            q, key = keys[int(rng.integers(len(keys)))]
            parent = _parent(data, q)
            parent[name] = parent.pop(key)
        elif strings:
            q, _ = strings[int(rng.integers(len(strings)))]
            _parent(data, q)[q[-1]] = name
        else:
            return "traverse: nothing"
        desc = f"path -> {name!r}"
    else:
        return mutate_bytes(path, rng, kind)
    path.write_text(json.dumps(data))
    return desc


def mutate_lines(path: Path, case: Case, rng: np.random.Generator) -> str:
    """Apply one random token, line or byte mutation to a text file of lines."""
    if path.suffix == ".txt" and path.name == "train.txt" and rng.random() < 0.6:
        name = _traversal(case, rng)
        _symlink(case)
        lines = path.read_text().splitlines()
        lines[int(rng.integers(len(lines)))] = name.replace("link.png", "images/link.png")
        path.write_text("\n".join(lines) + "\n")
        return f"list entry -> {name!r}"
    kind = str(rng.choice(["token", "token", "token", "token", "drop", "insert", "dupline",
                           "delline", "empty", "bytes", "truncate", "nonutf8", "crlf", "nudge",
                           "nudge"]))
    if kind in ("bytes", "truncate", "nonutf8"):
        return mutate_bytes(path, rng, kind)
    text = path.read_text()
    sep = "," if "," in text else " "
    lines = text.splitlines() or [""]
    i = int(rng.integers(len(lines)))
    tokens = lines[i].split(sep)
    j = int(rng.integers(len(tokens)))
    token = WEIRD_TOKENS[int(rng.integers(len(WEIRD_TOKENS)))]
    if kind == "nudge":  # a plausible mistake: one number a bit off (YOLO: in [0, 1] units)
        try:
            value = float(tokens[j])
        except ValueError:
            return "nudge: not a number"
        step = 0.1 if sep == " " else 15.0
        token = f"{value + float(np.round(rng.normal(0, step), 3)):g}"
        tokens[j] = token
    elif kind == "token":
        tokens[j] = token
    elif kind == "drop":
        tokens.pop(j)
    elif kind == "insert":
        tokens.insert(j, token)
    elif kind == "dupline":
        lines.insert(i, lines[i])
    elif kind == "delline":
        lines.pop(i)
    elif kind == "empty":
        lines = []
    if kind in ("token", "drop", "insert", "nudge"):
        lines[i] = sep.join(tokens)
    end = "\r\n" if kind == "crlf" else "\n"
    path.write_text(end.join(lines) + (end if lines else ""))
    return f"{kind} line {i + 1} token {j}: {token!r:.20}"


def mutate_xml(path: Path, case: Case, rng: np.random.Generator) -> str:
    """Apply one random element, text, declaration or byte mutation to a VOC XML file."""
    import xml.etree.ElementTree as ET

    kind = str(rng.choice(["number", "number", "number", "nudge", "delete", "delete", "text",
                           "dupobj", "traverse", "traverse", "doctype", "encoding", "bytes",
                           "truncate", "nonutf8", "rename"]))
    if kind in ("bytes", "truncate", "nonutf8"):
        return mutate_bytes(path, rng, kind)
    if kind == "doctype":
        decl = str(rng.choice([
            '<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
            '<!DOCTYPE annotation SYSTEM "file:///etc/passwd">',
            '<!DOCTYPE annotation [<!ENTITY x SYSTEM "../outside.png">]>',
            '<! doctype annotation>']))
        text = path.read_text()
        path.write_text(decl + "\n" + text.replace("<filename>", "<filename>&b;", 1)
                        if "ENTITY a" in decl else decl + "\n" + text)
        return f"declaration {decl[:30]!r}"
    if kind == "encoding":
        enc = str(rng.choice(["latin-1", "utf-16", "x-no-such", "ascii"]))
        body = path.read_bytes().replace(b"VOC", b"V\xe9C")
        path.write_bytes(f'<?xml version="1.0" encoding="{enc}"?>\n'.encode() + body)
        return f"encoding={enc}"
    tree = ET.parse(path)
    elements = list(tree.getroot().iter())
    leaves = [e for e in elements if len(e) == 0]
    numeric = [e for e in leaves if e.tag in ("xmin", "ymin", "xmax", "ymax", "width", "height",
                                              "depth", "difficult")]
    if kind == "number" and numeric:
        node = numeric[int(rng.integers(len(numeric)))]
        node.text = WEIRD_TOKENS[int(rng.integers(len(WEIRD_TOKENS)))]
        desc = f"<{node.tag}> = {node.text!r:.20}"
    elif kind == "nudge" and numeric:
        node = numeric[int(rng.integers(len(numeric)))]
        node.text = f"{float(node.text) + float(np.round(rng.normal(0, 15), 1)):g}"
        desc = f"nudge <{node.tag}> -> {node.text}"
    elif kind == "delete":
        parents = [(p, c) for p in elements for c in p]
        parent, child = parents[int(rng.integers(len(parents)))]
        parent.remove(child)
        desc = f"delete <{child.tag}>"
    elif kind == "text":
        node = leaves[int(rng.integers(len(leaves)))]
        node.text = str(rng.choice(["", " ", "\t", "a" * 5000, "1 2", "<", "\u00e9"]))
        desc = f"<{node.tag}> text {node.text[:10]!r}"
    elif kind == "dupobj":
        objs = tree.getroot().findall("object")
        if not objs:
            return "dupobj: nothing"
        for _ in range(int(rng.integers(1, 200))):
            tree.getroot().append(copy.deepcopy(objs[int(rng.integers(len(objs)))]))
        desc = "objects duplicated"
    elif kind == "rename":
        node = elements[int(rng.integers(len(elements)))]
        node.tag = str(rng.choice(["annotations", "objekt", "bbox", "Name", "size"]))
        desc = f"tag renamed to <{node.tag}>"
    else:  # traverse: <filename> out of JPEGImages/
        name = _traversal(case, rng)
        _symlink(case)
        node = tree.getroot().find("filename")
        if node is None:
            node = ET.SubElement(tree.getroot(), "filename")
        node.text = name.replace("\x00", "")  # XML cannot hold NUL
        desc = f"<filename> -> {node.text!r}"
    tree.write(path, encoding="utf-8")
    return desc


def mutate_bytes(path: Path, rng: np.random.Generator, kind: str) -> str:
    """Flip bytes, truncate, or insert invalid UTF-8 into ``path``."""
    data = bytearray(path.read_bytes())
    if not data:
        return f"{kind}: empty file"
    if kind == "truncate":
        cut = int(rng.integers(len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"truncate at {cut}/{len(data)}"
    if kind == "nonutf8":
        at = int(rng.integers(len(data)))
        path.write_bytes(bytes(data[:at]) + b"\xff\xfe\xc3" + bytes(data[at:]))
        return f"non-UTF-8 bytes at {at}"
    header = min(len(data), 400)  # binary headers live at the start: flip there more often
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(header if rng.random() < 0.7 else len(data)))
        data[at] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
    return "bytes flipped"


def mutate_nifti(path: Path, case: Case, rng: np.random.Generator) -> str:
    """Rewrite a NIfTI file with a corrupt header/values, or mutate its bytes."""
    import nibabel as nib

    kind = str(rng.choice(["pixdim", "affine", "values", "slope", "shape", "labels", "dtype",
                           "bytes", "bytes", "truncate"]))
    if kind in ("bytes", "truncate"):
        return mutate_bytes(path, rng, kind)
    img = nib.load(str(path))
    data, aff = np.asarray(img.dataobj).copy(), img.affine.copy()
    bad = float(rng.choice([0.0, -1.0, 1e30, math.nan, math.inf, 1e-9]))
    if kind == "pixdim":
        img.header["pixdim"][int(rng.integers(1, 4))] = bad
        img.header.set_sform(None, code=0)
        img.header.set_qform(None, code=int(rng.integers(0, 2)))
        nib.save(nib.Nifti1Image(data, None, img.header), str(path))
        return f"pixdim = {bad}"
    if kind == "affine":
        if rng.random() < 0.5:
            aff[:3, int(rng.integers(3))] = 0.0
        else:
            aff[int(rng.integers(3)), int(rng.integers(4))] = bad
        _nifti(path, data, aff)
        return "affine corrupted"
    if kind == "values":
        data = data.astype(np.float32)
        data.flat[int(rng.integers(data.size))] = float(rng.choice([3e38, -3e38, math.nan,
                                                                  math.inf, 1e6]))
    elif kind == "slope":
        out = nib.Nifti1Image(data, aff)
        out.header.set_slope_inter(float(rng.choice([1e38, 0.0, math.nan, -1e30])), 0.0)
        nib.save(out, str(path))
        return "scl_slope corrupted"
    elif kind == "shape":
        data = data[..., :2] if rng.random() < 0.5 else data[..., None].repeat(2, -1)
    elif kind == "labels":
        data = data.astype(np.float32)
        data.flat[int(rng.integers(data.size))] = float(rng.choice([2, 0.5, -1, 255]))
    elif kind == "dtype":
        data = data.astype(rng.choice([np.float64, np.uint8, np.complex64]))
    _nifti(path, data, aff)
    return kind


def mutate_dicom(path: Path, case: Case, rng: np.random.Generator) -> str:
    """Set a geometry/pixel tag of one (or every) slice to a bad value, or mutate bytes."""
    import pydicom

    kind = str(rng.choice(["tag", "tag", "tag", "tag", "delete", "bytes", "truncate"]))
    if kind in ("bytes", "truncate"):
        return mutate_bytes(path, rng, kind)
    files = [path] if rng.random() < 0.5 else sorted(path.parent.glob("*.dcm"))
    tags = {
        "PixelSpacing": [[0, 0], [0, 0.7], [-1, 1], [1e30, 1], [1e-9, 1e-9]],
        "ImageOrientationPatient": [[0] * 6, [1, 0, 0, 1, 0, 0], [1e30, 0, 0, 0, 1, 0],
                                    [2, 0, 0, 0, 2, 0]],
        "ImagePositionPatient": [[0, 0, 0], [1e30, 0, 0], [-10.0, -20.0, 30.0]],
        "InstanceNumber": [1, 0, -5, 10**6],
        "RescaleSlope": [0, 1e34, -1e30, 1e-30],
        "RescaleIntercept": [3e38, -3e38, 1e30],
        "Rows": [0, 4, 9, 65535], "Columns": [0, 4, 9],
        "BitsAllocated": [8, 32, 1], "PixelRepresentation": [0, 2],
        "SeriesInstanceUID": ["1.2.3"], "SliceThickness": [0, -2.5],
    }
    name = str(rng.choice(list(tags)))
    value = tags[name][int(rng.integers(len(tags[name])))]
    for f in files:
        ds = pydicom.dcmread(f)
        if kind == "delete":
            if name in ds:
                delattr(ds, name)
        else:
            setattr(ds, name, value)
        if name == "PixelData" or (name in ("Rows", "Columns") and rng.random() < 0.3):
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(f)
    return f"{kind} {name} = {value!r:.30} in {len(files)} file(s)"


MUTATORS = {"json": mutate_json, "lines": mutate_lines, "xml": mutate_xml,
            "nifti": mutate_nifti, "dicom": mutate_dicom}


# -- running ------------------------------------------------------------------------------------
def _fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def _paths(sample: dict[str, Any]) -> list[str]:
    path = sample.get("meta", {}).get("path")
    return [path] if isinstance(path, str) else []


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


def try_one(fmt: str, seed: int, workdir: Path, time_limit: float = 20.0) -> tuple[str, str]:
    """Write format ``fmt``'s dataset under ``workdir``, apply mutation ``seed``, build and
    read it; returns ``(outcome, detail)``."""
    rng = np.random.default_rng(seed)
    d = workdir / "data" / "set"
    d.mkdir(parents=True)
    case = FORMATS[fmt](d)
    case.outside = _png(workdir / "outside.png")
    target = case.files[int(rng.integers(len(case.files)))]
    if target.suffix == ".json":
        mutator = mutate_json
    elif target.suffix in (".csv", ".txt"):
        mutator = mutate_lines
    else:
        mutator = MUTATORS[case.text_kind]
    try:
        desc = f"{target.name}: " + mutator(target, case, rng)
    except Exception as err:  # the mutation itself could not be written: not a try
        return "skip", f"mutation failed: {type(err).__name__}: {err}"
    before = _fingerprint(workdir / "data")
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        ds = case.build()
        read = [ds[i] for i in range(len(ds))]
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Hang:
        return "hung", desc
    except DetlabError as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        outcome, detail = "error", f"{desc} -> {err}"
    except Exception as err:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return "uncaught", f"{type(err).__name__}: {str(err)[:160]} [{desc}]"
    else:
        root = case.root.resolve()
        escaped = [p for s in read for p in _paths(s) if not Path(p).resolve().is_relative_to(root)]
        if escaped:
            outcome, detail = "escaped", f"read {escaped[0]} [{desc}]"
        else:
            report = ds.data_report() if hasattr(ds, "data_report") else None
            repaired = bool(report and report.counts)
            outcome, detail = ("repaired" if repaired else "accepted"), desc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if _fingerprint(workdir / "data") != before:
        return "modified", desc
    return outcome, detail


def run(fmt: str, count: int, seed: int = 0, time_limit: float = 20.0) -> Tally:
    """``count`` seeded tries of format ``fmt``."""
    tally = Tally(fmt)
    for i in range(count):
        work = Path(tempfile.mkdtemp(prefix=f"fuzz_{fmt}_"))
        try:
            outcome, detail = try_one(fmt, seed * 100_003 + i, work, time_limit)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if outcome == "skip":
            continue
        if outcome == "uncaught":
            tally.uncaught_types[detail.split(":", 1)[0]] += 1
        tally.add(outcome, detail)
    return tally


def _quiet_logs() -> None:
    import logging
    import warnings

    for name in ("detlab.data", "nibabel", "monai", "pydicom"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    """Print the figures per format; exit status 1 when any try ended in a bug."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="tries per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per try")
    parser.add_argument("--show", nargs="*", default=[], choices=OUTCOMES,
                        help="also list up to 30 examples of these outcomes")
    args = parser.parse_args(argv)
    _quiet_logs()
    header = f"{'format':8} {'tried':>6} " + " ".join(f"{o:>9}" for o in OUTCOMES) + "   seconds"
    print(header)
    tallies, total = [], Counter()
    for fmt in args.formats:
        start = time.perf_counter()
        tally = run(fmt, args.count, args.seed, args.time_limit)
        tried = sum(tally.counts.values())
        total.update(tally.counts)
        print(f"{fmt:8} {tried:6d} " + " ".join(f"{tally.counts[o]:9d}" for o in OUTCOMES)
              + f"   {time.perf_counter() - start:7.1f}", flush=True)
        tallies.append(tally)
    print(f"{'all':8} {sum(total.values()):6d} " + " ".join(f"{total[o]:9d}" for o in OUTCOMES))
    for tally in tallies:
        if tally.uncaught_types:
            print(f"\n{tally.fmt}: uncaught types {dict(tally.uncaught_types.most_common(5))}")
        for outcome, examples in tally.examples.items():
            shown = 30 if outcome in args.show else 3 if outcome in OUTCOMES[3:] else 0
            for ex in examples[:shown]:
                print(f"  {tally.fmt} {outcome}: {ex[:300]}")
    return 1 if any(t.bugs() for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
