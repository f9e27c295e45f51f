"""numpy's huge-page hint is off in range_dist's commands (and the processes they start), unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Runs a command through ``main`` (a database that is not there: a message, exit 2), then reports
#: numpy's hint in this process and in a child process it starts.
_SCRIPT = """
import subprocess, sys
from range_dist.cli.main import main
from range_dist.util.memory import numpy_huge_pages_enabled
before = numpy_huge_pages_enabled()
code = main(["db-info", sys.argv[1]])
child = subprocess.run([sys.executable, "-c", "from range_dist.util.memory import numpy_huge_pages_enabled as e; "
                        "print(e())"], capture_output=True, text=True, check=True).stdout.strip()
print(before, code, numpy_huge_pages_enabled(), child)
"""


def _run(tmp_path: Path, variable: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if variable is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = variable
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "missing.zarr")], capture_output=True,
                         text=True, env=env, check=True)
    return res.stdout.split()


def test_a_command_turns_numpy_huge_pages_off_for_itself_and_its_children(tmp_path: Path) -> None:
    before, code, after, child = _run(tmp_path, None)
    if sys.platform.startswith("linux"):
        assert before == "True", "numpy asks for huge pages by default on Linux"
    assert (code, after, child) == ("2", "False", "False")


@pytest.mark.parametrize(("variable", "expected"), [("1", "True"), ("0", "False")])
def test_the_users_numpy_madvise_hugepage_is_kept(tmp_path: Path, variable: str, expected: str) -> None:
    before, code, after, child = _run(tmp_path, variable)
    assert (before, code, after, child) == (expected, "2", expected, expected)
