"""Seeded fuzzing of every annotation reader (``tools/fuzz_data.py``): hundreds of mutated files
per format (numbers made huge/NaN/negative/strings, keys removed or added, types swapped, ids
duplicated, bytes flipped, truncation, non-UTF-8, paths out of the data root, VOC XML tags
removed and DOCTYPE/ENTITY declarations, broken NIfTI headers and DICOM tags). Building the
dataset and reading every sample may only raise a DetlabError; no sample may come from outside
the data root, no file of the dataset may change, and no try may hang."""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz_data.py"

# tries per format: the light text/JSON formats get hundreds, the volume formats (each try
# reads volumes through MONAI, ~0.1 s) fewer, to keep the file at a few seconds per format.
COUNTS = {"coco": 200, "yolo": 200, "voc": 150, "icdar": 200, "receipt": 200, "nifti": 40,
          "dicom": 80}


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_data"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fmt", list(COUNTS))
def test_only_detlab_errors_escape(fuzz, fmt, caplog):
    if fmt in ("nifti", "dicom"):
        pytest.importorskip("nibabel")
        pytest.importorskip("pydicom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caplog.set_level(logging.ERROR)
        tally = fuzz.run(fmt, COUNTS[fmt], seed=11, time_limit=20.0)
    tried = sum(tally.counts.values())
    bad = {o: tally.examples.get(o, [])[:3] for o in ("uncaught", "escaped", "modified", "hung")
           if tally.counts[o]}
    assert not bad, f"{fmt}: {dict(tally.counts)} {bad}"
    assert tried >= 0.9 * COUNTS[fmt]  # nearly every mutation could be written
    # the mutations reach the checks: most tries end in a clear error, some in counted repairs
    assert tally.counts["error"] >= 0.4 * tried
    assert tally.counts["error"] + tally.counts["repaired"] + tally.counts["accepted"] == tried


@pytest.mark.parametrize("fmt", list(COUNTS))
def test_unmutated_datasets_load_with_nothing_repaired(fuzz, fmt, tmp_path):
    """The harness itself: before mutation every format's dataset is clean."""
    if fmt in ("nifti", "dicom"):
        pytest.importorskip("nibabel")
        pytest.importorskip("pydicom")
    ds = fuzz.FORMATS[fmt](tmp_path).build()
    assert len([ds[i] for i in range(len(ds))]) == len(ds) > 0
    assert ds.data_report().counts == {}


def test_the_fuzzer_finds_an_uncaught_error(fuzz, tmp_path, monkeypatch):
    """The harness itself: a reader raising a raw exception is reported as uncaught."""
    from detlab.data.datasets import yolo_txt

    def broken(*args, **kwargs):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(yolo_txt, "read_text", broken)
    outcome, detail = fuzz.try_one("yolo", 0, tmp_path)
    assert outcome == "uncaught" and detail.startswith("UnicodeDecodeError")


def test_the_fuzzer_finds_an_escape(fuzz, tmp_path, monkeypatch):
    """The harness itself: a sample read from outside the data root is reported as escaped."""
    from detlab.data.datasets import coco_json

    monkeypatch.setattr(coco_json, "resolve_inside", lambda root, name, where, allow=False:
                        Path(root) / name)
    outcomes = [fuzz.try_one("coco", seed, tmp_path / str(seed))[0] for seed in range(80)]
    assert "escaped" in outcomes


def test_the_fuzzer_finds_a_voc_filename_escape(fuzz, tmp_path, monkeypatch):
    """The harness itself: VOC's <filename> mutations reach the root check."""
    from detlab.data.datasets import voc

    monkeypatch.setattr(voc, "resolve_inside", lambda root, name, where, allow=False:
                        Path(root) / name)
    outcomes = [fuzz.try_one("voc", seed, tmp_path / str(seed))[0] for seed in range(120)]
    assert "escaped" in outcomes
