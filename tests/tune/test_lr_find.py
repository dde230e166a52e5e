"""detlab lr-find: Lightning's range test on a tiny recipe, its CSV, plot and override."""

import csv

from detlab.cli import main
from detlab.recipe import parse_override

from tune_utils import RECIPE, TINY


def test_lr_find_writes_curve_and_suggests_override(tmp_path, capsys):
    out = tmp_path / "lr"
    tiny = [o for o in TINY if not o.startswith("data.batch_size")] + [
        "data.train.num_samples=24", "data.batch_size=2"]
    assert main(["lr-find", str(RECIPE), "--steps", "20", "--min-lr", "1e-5", "--max-lr", "0.1",
                 "--out", str(out), *tiny]) == 0
    with open(out / "lr_find.csv") as f:
        rows = [(float(r["lr"]), float(r["loss"])) for r in csv.DictReader(f)]
    lrs = [lr for lr, _ in rows]
    assert len(rows) == 20 and lrs[0] == 1e-5 and lrs[-1] <= 0.1 * (1 + 1e-9)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))  # exponential sweep upwards
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("suggested: "))
    key, value, _ = parse_override(line.split(": ", 1)[1])
    assert key == "train.optimizer.lr" and 1e-5 <= value <= 0.1
    assert min(abs(value - lr) / lr for lr in lrs) < 0.01  # one of the swept rates
