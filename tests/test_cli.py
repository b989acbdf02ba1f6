import subprocess
import sys

from gaussquant.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "bench" in out


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "gaussquant", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "gaussquant" in r.stdout
