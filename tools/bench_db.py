"""Benchmark DB post-processing and DB target generation on synthetic 1024 x 1024 data.

Usage::

    python tools/bench_db.py [--size 1024] [--words 100] [--runs 15]

Prints the median (and min) milliseconds over ``--runs`` runs, single-threaded (OpenCV is
pinned to one thread so the number is per core):

* post-processing: :class:`~detlab.postprocess.db_polygons.DBPostProcessor` on a probability
  map with ``--words`` rotated text kernels (prob 0.9 on a weak noisy background), in polygon
  and in box mode;
* targets: :func:`~detlab.data.db_targets.make_db_targets` for ``--words`` rotated word quads.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import cv2
import numpy as np

from detlab.data.db_targets import make_db_targets
from detlab.postprocess.db_polygons import DBPostProcessor


def synthetic_words(num_words: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """About ``num_words`` rotated quads (40-90 x 12-40 px, up to +-17 deg) on a grid."""
    rng = np.random.default_rng(seed)
    side = max(int(math.ceil(math.sqrt(num_words))), 1)
    step = size / side
    words = []
    for k in range(num_words):
        cx, cy = step * (k % side + 0.5), step * (k // side + 0.5)
        w, h = rng.uniform(40, 90), rng.uniform(12, 40)
        a = rng.uniform(-0.3, 0.3)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        words.append(corners @ rot + [cx, cy])
    return words


def synthetic_prob_map(words: list[np.ndarray], size: int, seed: int = 0) -> np.ndarray:
    """Probability map: 0.9 inside each (shrunk) word, uniform noise in [0, 0.2) elsewhere."""
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0.0, 0.2, size=(size, size)).astype(np.float32)
    for w in words:
        center = w.mean(axis=0)
        kernel = center + (w - center) * 0.6
        cv2.fillPoly(prob, [np.round(kernel).astype(np.int32)], 0.9)
    return prob


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up (imports, allocator)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    words = synthetic_words(args.words, args.size)
    prob = synthetic_prob_map(words, args.size)
    for output in ("polygon", "box"):
        post = DBPostProcessor(output=output)
        found = len(post(prob)[0])
        med, best = median_ms(lambda: post(prob), args.runs)
        print(
            f"postprocess ({output:7s}) {args.size}x{args.size}, {found} regions: "
            f"median {med:.2f} ms (min {best:.2f})"
        )
    med, best = median_ms(lambda: make_db_targets(words, None, args.size, args.size), args.runs)
    print(
        f"targets {args.size}x{args.size}, {len(words)} words: "
        f"median {med:.2f} ms (min {best:.2f})"
    )


if __name__ == "__main__":
    main()
