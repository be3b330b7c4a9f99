"""The command-line entry point."""

import os
import subprocess
import sys
import time

import pytest

from convexnorm.cli import main


def test_layers_reports_agreement_with_torch(capsys) -> None:
    assert main(["layers", "--batch-size", "16", "--solver", "cvxpylayers"]) == 0
    out = capsys.readouterr().out
    assert "CNN (BatchNorm2d)" in out and "MLP (BatchNorm1d)" in out
    worst = float(out.strip().splitlines()[-1].split()[-1])
    assert worst < 1e-6


def test_demo_compares_convex_training_with_adam(capsys) -> None:
    args = ["demo", "--components", "3", "--patterns", "20", "--rounds", "1", "--steps", "100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for expected in ("convex, ", "convex + grow", "Adam, 100 full-batch steps", "recovered torch network", "certificate (", "lower-bound estimate"):
        assert expected in out


@pytest.mark.parametrize("args, message", [
    (["demo", "--rounds", "-1"], "--rounds: must be >= 0"),
    (["demo", "--patterns", "0"], "--patterns: must be >= 1"),
    (["demo", "--beta", "nan"], "--beta: must be a finite number > 0"),
    (["demo", "--pair", "8", "12"], "digits are 0-9"),
    (["layers", "--batch-size", "1"], "--batch-size: must be >= 2"),
    (["layers", "--solver", "gpu"], "invalid choice"),
    (["nonsense"], "invalid choice"),
])
def test_bad_arguments_print_one_line_and_exit_2(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_help_is_fast_and_lists_every_default() -> None:
    """--help answers without importing torch or cvxpy, and every flag shows its default."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "convexnorm", "demo", "--help"], capture_output=True, text=True,
                            check=True)
    assert time.perf_counter() - start < 3.0
    assert "`" not in result.stdout
    flags = [line for line in result.stdout.splitlines() if line.strip().startswith("--")]
    assert len(flags) == 7 and all("default" in line or "default" in following
                                   for line, following in zip(result.stdout.splitlines(),
                                                              result.stdout.splitlines()[1:]) if line in flags)
    probe = "import sys, convexnorm.cli; print(sorted(m for m in ('torch', 'cvxpy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_importing_the_library_leaves_matplotlib_alone() -> None:
    """Neither ``import convexnorm`` nor its diagnostics switch the user's matplotlib solver."""
    probe = ("import convexnorm, convexnorm.diagnostics, matplotlib; convexnorm.diagnostics.plot_relative_loss; "
             "print(matplotlib.get_backend())")
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "svg"
