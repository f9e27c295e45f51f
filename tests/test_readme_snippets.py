"""Every ```python block of README.md runs as written, on small files the project makes itself.

The snippets name the published assets (``satclip-vit16-l40.ckpt``, ``range_db_med.npz``) and the
cubes of the grid jobs (``runs/global_1deg.zarr``, ``runs/global_0p25deg.zarr``). Here they are
sample assets (``range_dist.assets.write_sample_assets``) and one 30° cube made by ``range-dist
embed-grid`` with the local executor, under those names in a temporary working directory. Each
snippet runs there in its own interpreter (this venv's python), so an import the snippet forgets
(e.g. ``rioxarray`` for the ``.rio`` accessor) is not hidden by what this process already imported;
a non-zero exit fails its test.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

#: name in the snippets -> what stands in for it
CHECKPOINT_NAME = "satclip-vit16-l40.ckpt"
DATABASE_NAME = "range_db_med.npz"
CUBE_NAMES = ("runs/global_1deg.zarr", "runs/global_0p25deg.zarr")


def python_snippets() -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block of README.md."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


SNIPPETS = python_snippets()


def cli_main() -> Callable[[list[str]], int]:
    """The range-dist entry point (``range_dist.cli.main:main``; older layout: ``range_dist.cli``)."""
    for module in ("range_dist.cli.main", "range_dist.cli"):
        try:
            main = getattr(importlib.import_module(module), "main", None)
        except ModuleNotFoundError:
            continue
        if callable(main):
            return main
    raise ImportError("no range-dist CLI entry point found in range_dist.cli.main or range_dist.cli")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding every file the README snippets read, made small."""
    from range_dist.assets import write_sample_assets

    root = tmp_path_factory.mktemp("readme")
    assets = write_sample_assets(root / "assets", rows=300, seed=0)
    shutil.copyfile(assets.checkpoint, root / CHECKPOINT_NAME)
    shutil.copyfile(assets.database, root / DATABASE_NAME)
    cube = root / CUBE_NAMES[0]
    rc = cli_main()([
        "embed-grid", "--satclip", str(assets.checkpoint), "--db", str(assets.database), "--out", str(cube),
        "--resolution", "30", "--executor", "local", "--betas", "0,0.5,1",
    ])
    assert rc in (0, None), f"embed-grid exited with {rc}"
    for name in CUBE_NAMES[1:]:
        shutil.copytree(cube, root / name)
    return root


@pytest.fixture(scope="module")
def s3_env(workdir: Path) -> Iterator[dict[str, str]]:
    """For the snippets that read ``s3://cubes/runs/cube.zarr``: a real S3 server (SeaweedFS) holding the
    README's cube there, and the ``AWS_*`` variables a user would have exported."""
    from range_dist.testing.s3 import SeaweedS3

    with SeaweedS3(workdir / "s3server") as server:
        server.create_bucket("cubes")
        server.filesystem().put(str(workdir / CUBE_NAMES[0]), "cubes/runs/cube.zarr", recursive=True)
        yield server.env()


def test_readme_has_python_snippets() -> None:
    assert SNIPPETS, f"no ```python block found in {README}"


@pytest.mark.parametrize(("line", "code"), SNIPPETS, ids=[f"README.md:{line}" for line, _ in SNIPPETS])
def test_readme_snippet_runs(line: int, code: str, workdir: Path, request: pytest.FixtureRequest) -> None:
    # padded with blank lines so that a traceback's line numbers are the README's own
    script = workdir / f"README_line{line}.py"
    script.write_text("\n" * (line - 1) + code, encoding="utf-8")
    env = dict(os.environ)
    if "s3://" in code:  # the object-storage snippets: a real server, credentials from the environment
        env.update(request.getfixturevalue("s3_env"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, script.name], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"README.md line {line}: the snippet failed\n{proc.stderr[-4000:]}"
