"""The command-line entry point."""

from convexnorm.cli import main


def test_demo_reports_agreement_with_torch(capsys) -> None:
    assert main(["demo", "--batch-size", "16", "--backend", "cvxpylayers"]) == 0
    out = capsys.readouterr().out
    assert "CNN (BatchNorm2d)" in out and "MLP (BatchNorm1d)" in out
    worst = float(out.strip().splitlines()[-1].split()[-1])
    assert worst < 1e-6
