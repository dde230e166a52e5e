"""Sliced inference: detlab against SAHI's ``get_sliced_prediction`` loop (not a test).

Same tiny YOLOHead model (``recipes/helmet_yolo.py``, ``pretrained=False``, random weights
with a 1 % class prior so every tile has boxes), same 1920x1080 frame, 640 px tiles, overlap
0.2, whole-frame pass on, greedy NMM / IoS 0.5 per class (SAHI's defaults). Each tile gets the
same preprocessing (the val letterbox to 640 + ImageNet normalization) and the same head
post-processing in both paths; SAHI runs one forward per tile (its default loop), detlab
batches the tiles.

1. Merge check: detlab's per-tile predictions of the frame, shifted to the frame, are fed to
   SAHI's postprocess classes and to :func:`detlab.postprocess.slicing.merge_detections`, for
   NMS / NMM / greedy NMM x IoU / IoS; prints the box counts and the max abs box difference.
2. End to end on CPU: image file → merged boxes, median of ``--repeats`` runs each, and the
   ratio detlab / SAHI.

SAHI is NOT a detlab dependency: install it elsewhere and put it on ``PYTHONPATH``::

    pip install --target /work/benchenv/sahi --no-deps sahi pybboxes terminaltables fire
    PYTHONPATH=$PWD:/work/benchenv/sahi python tools/bench_slicing.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from detlab.data.datasets.detection_base import IMAGENET_MEAN, IMAGENET_STD, read_rgb
from detlab.data.datasets.image_files import ImageFiles, preprocess_pixels
from detlab.data.geometry import InputGeometry
from detlab.engine.inference_model import inference_task
from detlab.engine.sliced import (SlicedCollate, SlicedDataset, run_tiles,
                                  sliced_predictions, tile_predictions)
from detlab.ops.slicing import shift_boxes
from detlab.postprocess.slicing import SlicedInference, merge_detections
from detlab.recipe import load
from detlab.registry import MODELS
from detlab.structures import Batch

ROOT = Path(__file__).resolve().parents[1]
GEOMETRY = InputGeometry(img_size=640, resize="long_side", pad="stride", stride=32,
                         pad_value=114.0, center=True)


def build_model(score_threshold: float) -> Any:
    """The tiny helmet YOLO (random weights, 1 % class prior) in eval mode."""
    recipe = load(ROOT / "recipes" / "helmet_yolo.py", [
        "model.head.prior_prob=0.01",
        f"model.head.postprocessor.score_threshold={score_threshold}"])
    torch.manual_seed(0)
    return MODELS.build(recipe["model"], key="model").eval()


def write_frame(folder: Path) -> Path:
    """A 1920x1080 PNG: gray noise with 200 small bright boxes (helmet-sized)."""
    import cv2

    rng = np.random.default_rng(0)
    img = (rng.random((1080, 1920, 3)) * 80 + 60).astype(np.uint8)
    for _ in range(200):
        x, y = int(rng.integers(0, 1900)), int(rng.integers(0, 1045))
        img[y:y + 35, x:x + 19] = rng.integers(150, 255, 3)
    path = folder / "frame.png"
    cv2.imwrite(str(path), img[..., ::-1])
    return path


def detlab_run(model: Any, path: Path, settings: SlicedInference, fold: bool = True,
               precision: str = "32") -> Any:
    """detlab end to end: ImageFiles (val preprocessing) → sliced predictions of the frame, on
    the inference copy ``detlab eval``/``predict`` run (BatchNorm folded, channels-last;
    :mod:`detlab.engine.inference_model`; made once per model and cached, as in a predict run
    over many frames) or, ``fold=False``, on ``model`` as it is; ``precision="bf16"``: the
    recipe's ``inference.precision`` (backbone and neck under bf16 autocast)."""
    dataset = ImageFiles([path], channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         geometry=GEOMETRY.to_config(), pixels="uint8")
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=0)
    task = _TASKS.setdefault((id(model), precision), SimpleNamespace(
        model=model, recipe={"inference": {"precision": precision}}))
    task = inference_task(task) if fold else task
    data = SimpleNamespace(size_divisor=model.size_divisor)
    with torch.inference_mode():
        preds, _ = next(sliced_predictions(task, data, loader, settings, "cpu"))
    return preds[0]


_TASKS: dict[Any, Any] = {}  # one task per model: its inference copy is cached on it


def tile_parts(model: Any, path: Path, settings: SlicedInference) -> tuple[Any, Any]:
    """detlab's per-tile predictions (tile px, with windows) and whole-frame predictions."""
    dataset = ImageFiles([path], channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         geometry=GEOMETRY.to_config(), pixels="uint8")
    sliced = SlicedCollate(model.size_divisor)([SlicedDataset(dataset, settings)[0]])
    with torch.inference_mode():
        parts, full = tile_predictions(model.head, run_tiles(model, sliced, settings, "cpu"))
    return parts[0], full[0], sliced


def sahi_model_class() -> Any:
    """A SAHI ``DetectionModel`` running the detlab model on one tile per call."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction

    class DetlabSahiModel(DetectionModel):
        def load_model(self) -> None:
            self.set_model(self._detlab)

        def set_model(self, model: Any, **kwargs: Any) -> None:
            self.model = model
            self.category_mapping = {"0": "helmet_on", "1": "helmet_off"}

        def perform_inference(self, image: np.ndarray) -> None:
            tile, meta = preprocess_pixels(np.ascontiguousarray(image), GEOMETRY, "uint8",
                                           np.array(IMAGENET_MEAN, np.float32),
                                           np.array(IMAGENET_STD, np.float32))
            with torch.inference_mode():
                outputs = self.model(tile[None])
                self._original_predictions = self.model.head.postprocess(
                    outputs, Batch(tile[None], [{}], [meta]), stage="test")

        def _create_object_prediction_list_from_original_predictions(
                self, shift_amount_list: Any = [[0, 0]], full_shape_list: Any = None) -> None:
            pred = self._original_predictions[0]
            shift = shift_amount_list[0] if shift_amount_list else [0, 0]
            shift = shift if not isinstance(shift, int) else shift_amount_list
            full = full_shape_list[0] if full_shape_list else None
            full = full if full is None or not isinstance(full, int) else full_shape_list
            out = []
            for box, score, label in zip(pred.boxes.tolist(), pred.scores.tolist(),
                                         pred.labels.tolist()):
                out.append(ObjectPrediction(
                    bbox=box, category_id=int(label),
                    category_name=self.category_mapping[str(int(label))],
                    shift_amount=list(shift), score=score, full_shape=full))
            self._object_prediction_list_per_image = [out]

    return DetlabSahiModel


def sahi_run(sahi_model: Any, path: Path, settings: SlicedInference) -> list[Any]:
    """SAHI end to end: ``get_sliced_prediction`` with the same settings."""
    from sahi.predict import get_sliced_prediction

    th, tw = settings.tile_size
    result = get_sliced_prediction(
        str(path), sahi_model, slice_height=th, slice_width=tw,
        overlap_height_ratio=settings.overlap, overlap_width_ratio=settings.overlap,
        perform_standard_pred=settings.full_image,
        postprocess_type=settings.merge.upper().replace("_", ""),
        postprocess_match_metric=settings.match_metric.upper(),
        postprocess_match_threshold=settings.match_threshold,
        postprocess_class_agnostic=settings.class_agnostic, verbose=0,
        force_postprocess_type=True)
    return result.object_prediction_list


def _sorted(rows: np.ndarray) -> np.ndarray:
    """Rows (x1, y1, x2, y2, score, label) in a canonical order (score, then coordinates)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    return rows[np.lexsort((rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0], -rows[:, 4]))]


def _rows(pred: Any) -> np.ndarray:
    return _sorted(torch.cat([pred.boxes.double(), pred.scores[:, None].double(),
                              pred.labels[:, None].double()], 1).numpy())


def _max_diff(a: np.ndarray, b: np.ndarray) -> str:
    """How far two row sets are apart: each row of ``a`` to its nearest same-label row of
    ``b`` (box px, then that row's score), the largest over rows, and how many rows of ``a``
    have a same-label row of ``b`` within 1 px; not row by row, since scores equal to ~1e-8
    may sort in either order."""
    if not len(a) or not len(b):
        return f"n/a ({len(a)} vs {len(b)} rows)"
    d = np.abs(a[:, None, :4] - b[None, :, :4]).max(-1)
    d[a[:, None, 5] != b[None, :, 5]] = np.inf
    nearest = d.argmin(1)
    return (f"{float(d.min(1).max()):.2e} px, scores "
            f"{float(np.abs(a[:, 4] - b[nearest, 4]).max()):.2e}; "
            f"{int((d.min(1) <= 1.0).sum())}/{len(a)} within 1 px")


def _sahi_rows(preds: list[Any]) -> np.ndarray:
    return _sorted([[*p.bbox.to_xyxy(), p.score.value, p.category.id] for p in preds])


def merge_check(parts: Any, full: Any, frame: tuple[int, int]) -> None:
    """Feed identical frame-pixel detections to SAHI's merges and detlab's; compare."""
    from sahi.postprocess.combine import (GreedyNMMPostprocess, NMMPostprocess,
                                          NMSPostprocess)
    from sahi.prediction import ObjectPrediction

    boxes = torch.cat([shift_boxes(p.boxes, w) for p, w in parts] + [full.boxes]).double()
    scores = torch.cat([p.scores for p, _ in parts] + [full.scores]).double()
    labels = torch.cat([p.labels for p, _ in parts] + [full.labels])
    print(f"merge check on {len(boxes)} detections of {len(parts)} tiles + the frame "
          "(per class, threshold 0.5):")
    classes = {"nms": NMSPostprocess, "nmm": NMMPostprocess, "greedy_nmm": GreedyNMMPostprocess}
    for method, cls in classes.items():
        for metric in ("iou", "ios"):
            ours = merge_detections(boxes, scores, labels, method, metric, 0.5)
            mine = _sorted(torch.cat([ours[0], ours[1][:, None], ours[2][:, None].double()],
                                     1).numpy())
            sahi_in = [ObjectPrediction(bbox=b, category_id=int(c), category_name=str(int(c)),
                                        score=s, full_shape=list(frame))
                       for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist())]
            theirs = _sahi_rows(cls(0.5, metric.upper(), False)(sahi_in))
            same = mine.shape == theirs.shape
            diff = float(np.abs(mine[:, :4] - theirs[:, :4]).max()) if same and len(mine) else (
                0.0 if same else float("nan"))
            print(f"  {method:>10} {metric}: detlab {len(mine):4d} boxes, SAHI {len(theirs):4d}"
                  f", max |box diff| {diff:.2e} px, labels equal "
                  f"{same and bool((mine[:, 5] == theirs[:, 5]).all())}")


def merge_timing(parts: Any, full: Any, frame: tuple[int, int], repeats: int) -> None:
    """Median time of the merge alone (greedy NMM, IoS 0.5, per class) on the same detections:
    detlab's tensors vs SAHI's ``GreedyNMMPostprocess`` on its ObjectPrediction list."""
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from sahi.prediction import ObjectPrediction

    boxes = torch.cat([shift_boxes(p.boxes, w) for p, w in parts] + [full.boxes])
    scores = torch.cat([p.scores for p, _ in parts] + [full.scores])
    labels = torch.cat([p.labels for p, _ in parts] + [full.labels])
    sahi_in = [ObjectPrediction(bbox=b, category_id=int(c), category_name=str(int(c)), score=v,
                                full_shape=list(frame))
               for b, v, c in zip(boxes.tolist(), scores.tolist(), labels.tolist())]
    post = GreedyNMMPostprocess(0.5, "IOS", False)
    ours = statistics.median(timed(lambda: merge_detections(boxes, scores, labels), repeats))
    theirs = statistics.median(timed(lambda: post(list(sahi_in)), repeats))
    print(f"merge alone ({len(boxes)} detections): detlab {ours * 1000:.1f} ms, SAHI "
          f"{theirs * 1000:.1f} ms (SAHI / detlab = {theirs / ours:.1f}x)")


def timed(fn: Any, repeats: int) -> list[float]:
    """Seconds per call, ``repeats`` calls after one warm-up."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Run the merge check and the end-to-end timing (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score-threshold", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="detlab tiles per forward (default: SlicedInference's, 2 on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import sahi  # noqa: F401
    except ImportError:
        print("SAHI is not installed (it is not a detlab dependency). Install it elsewhere and "
              "put it on PYTHONPATH:\n  pip install --target /work/benchenv/sahi --no-deps "
              "sahi pybboxes terminaltables fire\n  PYTHONPATH=$PWD:/work/benchenv/sahi "
              "python tools/bench_slicing.py")
        return
    settings = SlicedInference(slice_height=640, overlap=0.2, full_image=True,
                               batch_size=args.batch_size, merge="greedy_nmm",
                               match_metric="ios", match_threshold=0.5)
    model = build_model(args.score_threshold)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_frame(Path(tmp))
        frame = read_rgb(path).shape[:2]
        parts, full, _ = tile_parts(model, path, settings)
        merge_check(parts, full, frame)
        sahi_model = sahi_model_class()(model=model, confidence_threshold=0.0,
                                        load_at_init=True)
        theirs = _sahi_rows(sahi_run(sahi_model, path, settings))
        folded = inference_task(_TASKS.setdefault((id(model), "32"), SimpleNamespace(
            model=model, recipe={"inference": {"precision": "32"}}))).model
        sahi_folded = sahi_model_class()(model=folded, confidence_threshold=0.0,
                                         load_at_init=True)
        fold_rows = _sahi_rows(sahi_run(sahi_folded, path, settings))
        for label, mine, ref in (
                ("model as given", _rows(detlab_run(model, path, settings, fold=False)), theirs),
                ("folded copy", _rows(detlab_run(model, path, settings)), fold_rows)):
            print(f"end to end, {label}: detlab {len(mine)} boxes, SAHI {len(ref)} boxes, "
                  f"max |difference| {_max_diff(mine, ref)}")
        bf16 = _rows(detlab_run(model, path, settings, precision="bf16"))
        print(f"detlab with inference.precision=bf16: {len(bf16)} boxes vs SAHI's {len(theirs)}, "
              f"max |difference| {_max_diff(bf16, theirs)}")
        print(f"SAHI, folded copy vs model as given: {len(fold_rows)} vs {len(theirs)} boxes "
              f"max |difference| "
              f"{_max_diff(fold_rows, theirs)}")
        merge_timing(parts, full, frame, args.repeats)
        # Interleaved, so load from other processes hits both alike.
        runs: dict[str, list[float]] = {k: [] for k in ("detlab", "detlab unfolded",
                                                       "detlab bf16", "SAHI", "SAHI folded")}
        for _ in range(args.repeats):
            runs["detlab"] += timed(lambda: detlab_run(model, path, settings), 1)
            runs["detlab unfolded"] += timed(
                lambda: detlab_run(model, path, settings, fold=False), 1)
            runs["detlab bf16"] += timed(
                lambda: detlab_run(model, path, settings, precision="bf16"), 1)
            runs["SAHI"] += timed(lambda: sahi_run(sahi_model, path, settings), 1)
            runs["SAHI folded"] += timed(lambda: sahi_run(sahi_folded, path, settings), 1)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"1920x1080, 640 px tiles, overlap 0.2, {len(parts)} tiles + full frame, "
          f"{args.threads} thread(s), median of {args.repeats}:")
    per = settings.tiles_per_forward("cpu")
    labels = {"detlab": f"detlab ({per} tiles/forward, folded)",
              "detlab unfolded": "detlab, model as given",
              "detlab bf16": "detlab, folded, inference.precision=bf16",
              "SAHI": "SAHI get_sliced_prediction", "SAHI folded": "SAHI on the folded copy"}
    for key, label in labels.items():
        print(f"  {label:<36} {med[key] * 1000:8.1f} ms   runs "
              f"{[round(t * 1000) for t in runs[key]]}")
    print(f"  SAHI / detlab (same model handed to both)      = {med['SAHI'] / med['detlab']:.2f}x")
    print(f"  SAHI / detlab, both on the model as given      = "
          f"{med['SAHI'] / med['detlab unfolded']:.2f}x")
    print(f"  SAHI folded / detlab, both on the folded copy  = "
          f"{med['SAHI folded'] / med['detlab']:.2f}x")
    print(f"  SAHI / detlab bf16 (other numbers, see above)  = "
          f"{med['SAHI'] / med['detlab bf16']:.2f}x")


if __name__ == "__main__":
    main()
