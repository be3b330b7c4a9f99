"""Every Python block of the README runs as written; where the README shows its output
(a ```text block right after it), the printed lines match."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```(?:\s*```text\n(.*?)```)?", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code, expected", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_blocks_run_and_print_what_the_readme_shows(code, expected) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    if expected:
        assert out.getvalue().strip().splitlines() == expected.strip().splitlines()


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3
