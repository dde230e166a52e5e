"""The README's quick start installs only the base dependencies: the CLI must start without
the optional extras (text: shapely/pyclipper, medical: nibabel/pydicom, tune: optuna)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"shapely", "pyclipper", "nibabel", "pydicom", "optuna"}:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    from detlab.cli import main
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          timeout=120)


def test_cli_help_and_commands_parse_without_optional_extras():
    out = _run("sys.exit(main(['--help']))")
    assert out.returncode == 0, out.stderr
    for command in ("train", "eval", "predict", "check-data", "analyze", "tune", "sweep"):
        assert command in out.stdout


def test_list_and_show_of_the_flagship_recipe_without_optional_extras():
    out = _run("sys.exit(main(['show', 'recipes/fracture_unet.py', 'data.batch_size=2']))")
    assert out.returncode == 0, out.stderr
    assert '"batch_size": 2' in out.stdout
