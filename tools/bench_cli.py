"""Time ``detlab --help`` start-up (not a test), each case in a fresh interpreter.

Cases: a bare interpreter; ``import torch`` (the floor the parser paid before it was lazy);
the full parser (``build_parser(full=True)`` imports every command module, torch and
Lightning with them: what every ``detlab`` call built before); and what a user now runs:
``detlab --help``, ``detlab train --help``, ``detlab predict --help``,
``detlab check-data --help``, ``detlab sweep --help``.

Prints the median and min wall seconds and the median CPU seconds (user + sys of the child)
over ``--repeats`` runs. Usage: ``python tools/bench_cli.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

CASES: list[tuple[str, list[str]]] = [
    ("python -c pass", ["-c", "pass"]),
    ("import torch", ["-c", "import torch"]),
    ("full parser (before)", ["-c", "from detlab.cli import build_parser; "
                                    "build_parser(full=True)"]),
    ("detlab --help", ["-m", "detlab", "--help"]),
    ("detlab train --help", ["-m", "detlab", "train", "--help"]),
    ("detlab predict --help", ["-m", "detlab", "predict", "--help"]),
    ("detlab check-data --help", ["-m", "detlab", "check-data", "--help"]),
    ("detlab sweep --help", ["-m", "detlab", "sweep", "--help"]),
]


def run(args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of ``python ARGS`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "0"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    """Run every case ``--repeats`` times (after one warm-up) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'case':<28} {'median wall s':>14} {'min wall s':>11} {'median CPU s':>13}")
    for name, argv in CASES:
        run(argv)  # warm-up: file system cache, .pyc files
        samples = [run(argv) for _ in range(args.repeats)]
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        print(f"{name:<28} {statistics.median(walls):>14.3f} {min(walls):>11.3f} "
              f"{statistics.median(cpus):>13.3f}")


if __name__ == "__main__":
    main()
