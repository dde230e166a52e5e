"""``detlab --help`` and each subcommand's ``--help`` build the parser without importing torch,
Lightning or the registered components (before: every command module, and torch with them,
was imported to build the parser: 5.5 CPU-s). The timing itself is a benchmark
(tools/bench_cli.py), not a test; here: what gets imported, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detlab.cli import COMMAND_MODULES, build_parser, command_names, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "timm", "monai", "cv2", "detlab.models", "detlab.data.datamodule")
RUNNER = """
import json, sys
from detlab.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _help(*argv: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


COMMANDS = command_names(build_parser(full=True))
SLOW_IMPORT: set[str] = set()  # commands whose --help may import torch: none


def test_top_level_help_lists_every_command_without_importing_torch():
    result, out = _help("--help")
    assert result == {"code": 0, "heavy": []}
    for name in COMMANDS:
        assert f"    {name}" in out, name


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="imports torch at module "
                                            "level")) if c in SLOW_IMPORT else c
    for c in COMMANDS])
def test_subcommand_help_imports_no_torch(command):
    result, out = _help(command, "--help")
    assert result["code"] == 0 and out.startswith(f"usage: detlab {command}")
    assert result["heavy"] == []


def test_listed_help_lines_are_the_commands_own():
    """The lines ``detlab --help`` reads from the command modules' source (without importing
    them) are the ones their ``add_command`` registers."""
    def helps(parser):
        sub = next(a for a in parser._subparsers._group_actions)
        return {a.dest: a.help for a in sub._choices_actions}

    assert helps(build_parser(full=False)) == helps(build_parser(full=True))
    assert len(COMMANDS) == 5 + len(COMMAND_MODULES)


def test_version_and_did_you_mean(capsys):
    from detlab import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"detlab {__version__}\n"
    for wrong, right in (("trian", "train"), ("predcit", "predict"), ("show_data", "show-data"),
                         ("lr_find", "lr-find")):
        with pytest.raises(SystemExit) as info:
            main([wrong, "x"])
        err = capsys.readouterr().err
        assert info.value.code == 2
        assert f"unknown command {wrong!r}; did you mean {right!r}?" in err, err
    with pytest.raises(SystemExit):
        main(["--debug", "zzzz"])
    assert "did you mean" not in capsys.readouterr().err


def test_requested_command_gets_its_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--debug", "show-data", "--help"])
    assert "--max-images" in capsys.readouterr().out
