"""The shell scripts users and CI run parse (bash -n), and the quickstart's asset check runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("workflows/*.sh"), REPO / ".ci" / "run"])


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(REPO)) for s in SCRIPTS])
def test_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_quickstart_asset_check_runs(tmp_path: Path) -> None:
    """The quickstart's own `if python -c ...` line: exit 1 (run the demo) with an empty cache, no error."""
    line = next(x for x in (REPO / "workflows" / "quickstart.sh").read_text().splitlines()
                if x.startswith("if python -c "))
    code = line.removeprefix("if python -c ").strip().strip('"')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"RANGE_DIST_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stderr
