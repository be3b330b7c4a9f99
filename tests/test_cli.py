"""The command-line entry point."""

from convexnorm.cli import main


def test_layers_reports_agreement_with_torch(capsys) -> None:
    assert main(["layers", "--batch-size", "16", "--backend", "cvxpylayers"]) == 0
    out = capsys.readouterr().out
    assert "CNN (BatchNorm2d)" in out and "MLP (BatchNorm1d)" in out
    worst = float(out.strip().splitlines()[-1].split()[-1])
    assert worst < 1e-6


def test_demo_compares_convex_training_with_adam(capsys) -> None:
    args = ["demo", "--components", "3", "--patterns", "20", "--rounds", "1", "--steps", "100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for expected in ("convex, ", "convex + grow", "Adam, 100 full-batch steps", "recovered torch network", "certificate:"):
        assert expected in out
