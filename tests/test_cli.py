import os
import subprocess
import sys

import pytest

from gaussquant.cli import COMMANDS, main

WORKFLOW_ORDER = ["train", "convert", "encode", "decode", "eval", "demo", "bench"]


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "bench" in out


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "gaussquant", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "gaussquant" in r.stdout


def test_commands_are_listed_in_workflow_order():
    names = list(COMMANDS)
    assert [n for n in names if n in WORKFLOW_ORDER] == WORKFLOW_ORDER


def _imported_modules(args: list[str]) -> set[str]:
    """Top-level and sub-module names imported by ``python -X importtime -m gaussquant ARGS``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "gaussquant", *args],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    # lines: "import time: self | cumulative | <indent>module.name"
    return {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], *([name, "--help"] for name in COMMANDS)],
                         ids=lambda a: " ".join(a))
def test_help_does_not_import_torch(args):
    modules = _imported_modules(args)
    assert "gaussquant.cli" in modules  # the parse really ran
    assert "torch" not in modules and "numpy" not in modules, f"gaussquant {' '.join(args)} imported torch/numpy"
