"""Bad input never gives a traceback: points files, YAML configs and flag values, fuzzed (hypothesis).

Every property calls the CLI in-process (``main(argv)``) and asserts that the command either
succeeds (and then only when the input was valid) or exits 2 with one ``range-dist CMD: error: ...``
line naming the input, no traceback, and nothing written: no output file, no existing store changed.
Runs are derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from range_dist.cli.main import main
from range_dist.jobs.grid.config import GridJobConfig
from range_dist.locations.points_io import LAT_NAMES, LON_NAMES


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class World:
    ckpt: Path
    db: Path
    cube: Path  # sampled by `range-dist sample`
    guarded: Path  # the existing store at --out of the YAML property: it must never change
    work: Path  # per-example folders go under it


@pytest.fixture(scope="module")
def world(sample_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> World:
    ckpt, db = sample_assets
    root = tmp_path_factory.mktemp("fuzz")
    cube, guarded = root / "cube.zarr", root / "guarded" / "cube.zarr"
    assert main(["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(cube), "--resolution", "30",
                 "--tile-size", "6", "--chunk-size", "6", "--executor", "local", "--betas", "0.5"]) == 0
    assert main(["embed-grid", "--satclip", str(ckpt), "--db", str(db), "--out", str(guarded), "--resolution",
                 "45", "--tile-size", "4", "--chunk-size", "2", "--executor", "local", "--betas", "0,1",
                 "--dtype", "float32"]) == 0
    (root / "work").mkdir()
    return World(ckpt, db, cube, guarded, root / "work")


@pytest.fixture
def fresh(world: World) -> Iterator[Any]:
    """A function giving a new empty folder per hypothesis example."""
    def make() -> Path:
        return Path(tempfile.mkdtemp(dir=world.work))
    yield make


def _error_line(err: str, command: str, *names: object) -> str:
    """The one error line of a failed command; it must name one of ``names``."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"range-dist {command}: error: "), err
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    line = lines[-1]
    assert any(str(n) in line for n in names), f"{line!r} names none of {names}"
    return line


# ------------------------------------------------------------------------------------- points files

COLUMNS = ("lon", "lat", "longitude", "latitude", "x", "y", "name", "other")
LIMIT = {"lon": 180.0, "lat": 90.0}

#: text that is not a number as either Python or pandas reads it (those are the numberish strings below)
WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Nd", "No", "Nl")), min_size=1, max_size=10)
NUMBERISH = st.sampled_from(["", " ", "nan", "NaN", "NA", "null", "None", "inf", "-inf", "Infinity", "1e999",
                             "True", "false", "0x10", "1_0", "1,5", "12", "-45.5", " 7 ", "+1", ".5", "5.",
                             "\u0663", "1e-320", "-0", "91", "-181", "180.0000001", "1" * 400, "-" + "9" * 330])
VALID = st.floats(-90, 90) | st.sampled_from([-90.0, 90.0, -0.0, 5e-324])
CELL = st.one_of(
    VALID,
    st.floats(-180, 180),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(min_value=180, exclude_min=True) | st.floats(max_value=-180, exclude_max=True),
    st.floats(90, 180, exclude_min=True) | st.floats(-180, -90, exclude_max=True),
    WORDS,
    NUMBERISH,
    st.none(),  # an empty cell (CSV) / a null (Parquet)
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    columns = draw(st.one_of(
        st.sampled_from([["lon", "lat"], ["lat", "lon"], ["longitude", "latitude"], ["x", "y"], ["y", "x"],
                         ["name", "lon", "lat"], ["lat", "other"], ["lon", "lon", "lat"]]),
        st.permutations(["lon", "lat", "name", "other"]),
        st.lists(st.sampled_from(COLUMNS), max_size=5),
    ))
    cells = VALID if draw(st.booleans()) else CELL
    rows = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), max_size=5))
    return list(columns), rows


def _cell_class(value: Any, axis: str) -> str:
    """``ok``, ``bad`` or ``unknown`` (a string whose reading differs between CSV, Parquet and pandas)."""
    if value is None:
        return "bad"
    if isinstance(value, float):
        return "ok" if math.isfinite(value) and abs(value) <= LIMIT[axis] else "bad"
    text = value.strip()
    if text.lower() in ("true", "false"):
        return "unknown"  # pandas reads a CSV column of them as booleans (1.0 / 0.0)
    try:
        number = float(text)
    except ValueError:
        return "bad"
    return "unknown" if math.isfinite(number) and abs(number) <= LIMIT[axis] else "bad"


def _expected(columns: list[str], rows: list[list[Any]], suffix: str) -> str:
    """``ok`` (the command must succeed), ``bad`` (it must fail) or ``unknown``."""
    picked = {}
    for axis, names in (("lon", LON_NAMES), ("lat", LAT_NAMES)):
        found = [n for n in names if n in columns]
        if not found:
            return "bad"
        picked[axis] = columns.index(found[0])  # a CSV's repeated name is read as NAME.1: the first counts
    if not rows:
        return "bad"
    classes = {_cell_class(row[picked[axis]], axis) for row in rows for axis in picked}
    if "bad" in classes:
        return "bad"
    if suffix != ".csv" and len(set(columns)) < len(columns):
        return "unknown"  # pyarrow refuses a Parquet file with a repeated column name (a clear message)
    return "unknown" if "unknown" in classes else "ok"


def _write_points(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in row]
                              for row in rows])
        return
    arrays = []
    for i in range(len(columns)):
        values = [row[i] for row in rows]
        if all(v is None or isinstance(v, float) for v in values):
            arrays.append(pa.array(values, type=pa.float64()))
        else:
            arrays.append(pa.array([repr(v) if isinstance(v, float) else v for v in values], type=pa.string()))
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), path)


def _points_commands(world: World, points: Path, out: Path) -> list[tuple[str, list[str]]]:
    return [
        ("embed-points", ["embed-points", "--satclip", str(world.ckpt), "--db", str(world.db), "--points",
                          str(points), "--out", str(out)]),
        ("sample", ["sample", str(world.cube), "--points", str(points), "--out", str(out)]),
    ]


def _check_points_run(world: World, folder: Path, points: Path, expected: str, n_rows: int | None,
                      out_suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command, argv in _points_commands(world, points, folder / f"out{out_suffix}"):
        out = Path(argv[-1])
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err
        if currently_in_test_context():  # hypothesis statistics (also used by test_unusual_points_files)
            event(f"{command}: expected {expected}, rc {rc}")
        assert "Traceback" not in err, err
        if rc == 0:
            assert expected != "bad", f"{command} accepted a bad points file: {points.read_bytes()[:300]!r}"
            if n_rows is None:
                pass  # junk that happens to be a valid points file
            elif out_suffix == ".npz":
                with np.load(out) as f:
                    assert f["lonlat"].shape == (n_rows, 2) and f["embedding"].shape[1] == n_rows
            else:
                assert pq.read_metadata(out).num_rows == n_rows  # one β level: one row per point
            out.unlink()
        else:
            assert rc == 2, err
            assert expected != "ok", f"{command} refused a valid points file: {err}"
            _error_line(err, command, points)
            assert sorted(p.name for p in folder.iterdir()) == [points.name], "a failed command wrote a file"


@_settings(40)
@given(table=tables(), suffix=st.sampled_from([".csv", ".parquet"]), out_suffix=st.sampled_from([".npz", ".parquet"]))
@example(table=(["lon", "lat"], [[8.5, 47.4], [-180.0, -90.0]]), suffix=".csv", out_suffix=".npz")
@example(table=(["lat", "lon"], [[150.0, 10.0]]), suffix=".parquet", out_suffix=".npz")  # swapped columns
@example(table=(["lon", "lat"], [[1.0, None]]), suffix=".parquet", out_suffix=".npz")
@example(table=(["lon", "lat", "lon"], [[1.0, 2.0, 3.0]]), suffix=".parquet", out_suffix=".npz")
@example(table=(["lon", "lat", "name", "name"], [[0.0, 0.0, 0.0, 0.0]]), suffix=".parquet", out_suffix=".npz")
@example(table=(["lon", "lat"], [[1.0, "abc"], [math.inf, 1.0]]), suffix=".csv", out_suffix=".parquet")
@example(table=(["x", "name"], []), suffix=".csv", out_suffix=".npz")
@example(table=(["lon", "lat"], [["1" * 400, 2.0]]), suffix=".csv", out_suffix=".npz")  # was an OverflowError
def test_points_files_are_embedded_or_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str],
                                              table: tuple[list[str], list[list[Any]]], suffix: str,
                                              out_suffix: str) -> None:
    columns, rows = table
    folder = fresh()
    points = folder / f"points{suffix}"
    _write_points(points, columns, rows)
    _check_points_run(world, folder, points, _expected(columns, rows, suffix), len(rows), out_suffix, capsys)


JUNK = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"\n\n", b"lon,lat\n", b"lon;lat\n1;2\n", b"lon,lat\n1,2,3\n4\n", b"lon,lat\n\"1,2\n",
                     b"\xff\xfe\x00l\x00o\x00n", b"PAR1garbagePAR1", b"lon\tlat\n1\t2\n", b"lat,lon\n1,2,3,4\n"]),
)


@_settings(30)
@given(data=JUNK, suffix=st.sampled_from([".csv", ".parquet", ".txt"]))
@example(data=b"", suffix=".csv")
@example(data=b"", suffix=".parquet")
@example(data=b"\x80\x81\x82", suffix=".csv")
def test_junk_points_files_are_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str],
                                       data: bytes, suffix: str) -> None:
    folder = fresh()
    points = folder / f"points{suffix}"
    points.write_bytes(data)
    expected = "bad" if suffix == ".txt" or not data.strip() else "unknown"
    _check_points_run(world, folder, points, expected, None, ".npz", capsys)


UNUSUAL_COLUMNS = {  # Parquet column types other than numbers and text, as the lon column
    "list": pa.array([[1.0, 2.0]], type=pa.list_(pa.float64())),
    "struct": pa.array([{"a": 1.0}]),
    "bool": pa.array([True]),
    "timestamp": pa.array([1_577_836_800_000_000], type=pa.timestamp("us")),
    "date": pa.array([18262], type=pa.date32()),
    "binary": pa.array([b"\x00\x01"]),
    "null": pa.array([None], type=pa.null()),
    "decimal": pa.array([1.5]).cast(pa.decimal128(5, 2)),
    "dictionary": pa.array(["5"]).dictionary_encode(),
    "uint64": pa.array([2**64 - 1], type=pa.uint64()),
    "duration": pa.array([86400], type=pa.duration("s")),
    "map": pa.array([[("a", 1.0)]], type=pa.map_(pa.string(), pa.float64())),
    "large_string": pa.array(["1" * 400], type=pa.large_string()),
}
UNUSUAL_CSV = {
    "bom": "\ufefflon,lat\n1,2\n".encode(),
    "utf16": "lon,lat\n1,2\n".encode("utf-16"),
    "latin1": "lon,lat,name\n1,2,Z\xfcrich\n".encode("latin-1"),
    "crlf": b"lon,lat\r\n1,2\r\n",
    "upper": b"LON,LAT\n1,2\n",
    "padded_header": b" lon , lat \n1,2\n",
    "index_column": b",lon,lat\n0,1,2\n",
    "no_newline": b"lon,lat",
    "huge_int": b"lon,lat\n" + b"1" * 400 + b",2\n" + b"-" + b"9" * 400 + b",3\n",
    "nul": b"lon,lat\n1\x00,2\n",
    "semicolons": b"lon;lat\n1;2\n",
    "ragged": b"lon,lat\n1,2,3\n4\n",
}


@pytest.mark.parametrize("case", [f"parquet:{k}" for k in UNUSUAL_COLUMNS] + [f"csv:{k}" for k in UNUSUAL_CSV])
def test_unusual_points_files(world: World, fresh: Any, capsys: pytest.CaptureFixture[str], case: str) -> None:
    kind, name = case.split(":")
    folder = fresh()
    points = folder / f"points.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"lon": UNUSUAL_COLUMNS[name], "lat": pa.array([1.0])}), points)
    else:
        points.write_bytes(UNUSUAL_CSV[name])
    _check_points_run(world, folder, points, "unknown", None, ".npz", capsys)


# ------------------------------------------------------------------------------------- YAML configs

FIELDS = [f.name for f in dataclasses.fields(GridJobConfig)]


def _misspell(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(name.upper()), st.just(name.replace("_", "-")), st.just(name[:-1]), st.just(name + "s"),
        st.just(" " + name),
    )


JUNK_KEYS = st.one_of(st.sampled_from(["dry_run", "config", "foo", "", "resolution_deg"]), st.integers(-3, 3),
                     st.booleans(), st.none())
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(), st.floats(),
                    st.text(max_size=12), st.sampled_from(["none", "null", "fast", "exact", "range", "bf16",
                                                           "float32", "local", "0,0.5", "1,2,3,4", "5,45,11,48"]))
RAW = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)
#: plausible values per key (valid or just outside), so that many configs get as far as the plan
PLAUSIBLE = {
    "resolution": st.sampled_from([1, 2.5, 10, 30, 45, 90, 0.7, -1, 0, 91, "30"]),
    "bbox": st.sampled_from([[5, 45, 11, 48], "5,45,11,48", [0, 0, 0, 0], [11, 45, 5, 48], [1, 2, 3], None,
                             [-180, -90, 180, 90], [170, 0, 190, 10]]),
    "betas": st.sampled_from([[0.5], [0, 1], "0,0.5,1", [], [2], [0.5, 0.5], ["a"], 0.5]),
    "tile_size": st.sampled_from([4, 6, 256, 0, -2, 2.5, 12.0]),
    "chunk_size": st.sampled_from([2, 3, 32, 0, 5]),
    "variant": st.sampled_from(["range", "range+", "RANGE", None]),
    "mode": st.sampled_from(["exact", "fast", "slow"]),
    "tolerance": st.sampled_from([None, 1e-3, 0, 1, 2, -0.5, "1e-3"]),
    "precision": st.sampled_from(["fp32", "tf32", "bf16", "fp64"]),
    "dtype": st.sampled_from(["float16", "float32", "float64"]),
    "harmonics": st.sampled_from(["published", "exact", "closed-form", None, "none", "fast"]),
    "memory_budget_mb": st.sampled_from([64, 0, -1, 1e9, "512"]),
    "num_actors": st.sampled_from([None, 1, 2, 0]),
    "cpus_per_actor": st.sampled_from([None, 1, 0]),
    "gpus_per_actor": st.sampled_from([None, 0, 0.5, -1]),
    "db_shards": st.sampled_from([1, 2, 0]),
    "max_in_flight": st.sampled_from([1, 2, 0]),
    "validation_points": st.sampled_from([16, 256, 15]),
    "executor": st.sampled_from(["local", "ray", "dask"]),
    "out": st.sampled_from(["elsewhere.zarr", "cube.nc", ""]),
}


@st.composite
def configs(draw: st.DrawFn) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 9))  # mostly real settings, so that configs get past the key check
        key = draw(st.sampled_from(FIELDS) if kind < 8 else
                   st.sampled_from(FIELDS).flatmap(_misspell) if kind == 8 else JUNK_KEYS)
        plausible = key in PLAUSIBLE and draw(st.integers(0, 3)) > 0
        out[key] = draw(PLAUSIBLE[key] if plausible else RAW)
    return out


def _number(raw: Any) -> float | None:
    try:
        return float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        return None


def _huge_grid(resolution: Any, tile_size: Any) -> bool:
    """Whether a run would plan more than ~1e5 tiles: planning is per tile (slow, not wrong), and a tiny
    resolution crashes GridSpec (see test_tiny_resolution_is_a_message)."""
    res, tile = _number(resolution), _number(tile_size)
    res = 1.0 if resolution is None else res
    tile = 256.0 if tile_size is None else tile
    if res is None or not math.isfinite(res) or res <= 0 or tile is None or not math.isfinite(tile) or tile < 1:
        return False  # refused by the config
    return (180 / res) * (360 / res) / min(tile, 1e6) ** 2 > 1e5


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _check_config_run(world: World, path: Path, names: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["embed-grid", "--config", str(path), "--satclip", str(world.ckpt), "--db", str(world.db), "--out",
            str(world.guarded), "--executor", "local"]
    before = _snapshot(world.guarded.parent)
    refused = []
    for extra in (["--dry-run"], ["--dry-run", "--overwrite"]):
        capsys.readouterr()
        rc = main(base + extra)
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        assert rc in (0, 2), err
        if rc == 2:
            _error_line(err, "embed-grid", path, world.guarded, *names)
        refused.append(rc == 2)
        why = err.split("error: ")[-1].replace(str(path), "CONFIG").replace(str(world.guarded), "OUT")[:45]
        event(f"{' '.join(extra)}: rc {rc}" + (f" ({why.split('=')[0]})" if rc == 2 else ""))
        assert _snapshot(world.guarded.parent) == before, "a dry run changed the existing store"
    if refused[1]:  # an invalid config: a real run with --overwrite must still leave the store alone
        capsys.readouterr()
        assert main([*base, "--overwrite"]) == 2
        _error_line(capsys.readouterr().err, "embed-grid", path, world.guarded, *names)
        assert _snapshot(world.guarded.parent) == before, "an invalid config changed the existing store"


@_settings(40)
@given(config=configs())
@example(config={"resolution": 0.7})
@example(config={"tile_size": "big", "betas": [0.5]})
@example(config={"memory_budget_mb": math.nan})  # refused now (it failed deep in a real run): --overwrite run
@example(config={"memory_budget_mb": math.inf})
@example(config={"resolution": 45, "tile_size": 4, "chunk_size": 2, "betas": [0, 1], "dtype": "float32"})
@example(config={"mode": "fast", "tolerance": 1e-3, "db_shards": 2})
@example(config={"reslution": 1, None: 2, 3: [1, {"a": None}]})
def test_yaml_configs_are_planned_or_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str],
                                             config: dict[Any, Any]) -> None:
    assume(not _huge_grid(config.get("resolution"), config.get("tile_size")))
    path = fresh() / "job.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    names = [k for k in config if isinstance(k, str) and k] + FIELDS
    _check_config_run(world, path, names, capsys)


NOT_CONFIGS = st.one_of(
    st.sampled_from(["key: [unclosed\n", "\tresolution: 1\n", "a: b: c\n", "{", "- a\nb: c\n", "resolution: 1\n  x\n",
                     "!!python/object:os.system {}\n", "resolution: &a [*a]\n", "? [1, 2]\n: 3\n",
                     "%YAML 9.9\n---\na: 1\n", "resolution: 1\nresolution: 2\n", "'unterminated\n"]),
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5).map(
        lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(max_size=80),
)


@_settings(30)
@given(text=NOT_CONFIGS, raw=st.none() | st.binary(max_size=40))
@example(text="key: [unclosed\n", raw=None)  # PyYAML's message spans lines: it is one line now
@example(text="", raw=b"\xff\xfe\x80")
@example(text="[1, 2]\n", raw=None)
def test_invalid_yaml_is_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str], text: str,
                                 raw: bytes | None) -> None:
    path = fresh() / "job.yaml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(text, encoding="utf-8")
    _check_config_run(world, path, FIELDS, capsys)


# ------------------------------------------------------------------------------------- flag values

FLAGS = ["--resolution", "--bbox", "--betas", "--tile-size", "--chunk-size", "--variant", "--mode", "--tolerance",
         "--precision", "--dtype", "--num-actors", "--memory-budget-mb"]
FLAG_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "1", "6", "30", "45", "0.5", "1e308", "-1e308", "nan", "inf", "-inf", "1_0",
                     "0x10", " 1 ", "1,2", "5,45,11,48", "11,45,5,48", "-10,-10,10,10", "0,0.5,1", "none",
                     "null", "", ",", "fast", "exact", "range", "range+", "fp32", "bf16", "float16", "float64",
                     "1e-300", "5e-324", "\u0663\u0660", "True"]),
    st.integers(-10**6, 10**6).map(str),
    st.floats().map(repr),
)


@_settings(40)
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_TEXT, st.booleans()), min_size=1, max_size=2))
@example(flags=[("--memory-budget-mb", "nan", True)])
@example(flags=[("--tolerance", "inf", False), ("--mode", "fast", False)])
@example(flags=[("--bbox", "-10,-10,10,10", False)])  # argparse takes "-10,..." for an option
@example(flags=[("--dtype", "float64", True)])
@example(flags=[("--tile-size", "6", True), ("--chunk-size", "6", True)])
def test_flag_values_are_planned_or_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str],
                                            flags: list[tuple[str, str, bool]]) -> None:
    given_values = {flag: value for flag, value, _ in flags}
    assume(not _huge_grid(given_values.get("--resolution"), given_values.get("--tile-size")))
    out = fresh() / "new.zarr"
    argv = ["embed-grid", "--satclip", str(world.ckpt), "--db", str(world.db), "--out", str(out), "--executor",
            "local", "--dry-run"]
    for flag, value, joined in flags:
        argv += [f"{flag}={value}"] if joined else [flag, value]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage error (a choices violation, a value taken for an option)
        event("argparse usage error")
        assert exc.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error:" in err, err
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert rc in (0, 2), err
    event(f"rc {rc}")
    if rc == 2:
        names = [f for f, _, _ in flags] + [f[2:].replace("-", "_") for f, _, _ in flags]
        _error_line(err, "embed-grid", *names)
    assert not out.exists(), "a dry run created the store"


POINTS_TEXT = FLAG_TEXT | st.sampled_from(["cpu", "auto", " cpu ", "cuda", "cuda:0", "cuda:1", "cuda:\u0663",
                                           "cuda:99999999999999999999", "CPU", "cuda:-1", "cpu\n", "0.5,1"])
POINTS_CHOICES = {"--mode": ["exact", "fast", "slow"], "--variant": ["range", "range+", "RANGE"],
                  "--precision": ["fp32", "bf16", "fp64"], "--harmonics": ["published", "exact", "closed-form", "x"]}
POINTS_FLAG = st.one_of(
    st.tuples(st.sampled_from(["--betas", "--device", "--device", "--tolerance"]), POINTS_TEXT, st.booleans()),
    st.sampled_from(sorted(POINTS_CHOICES)).flatmap(
        lambda f: st.tuples(st.just(f), st.sampled_from(POINTS_CHOICES[f]), st.booleans())),
)


@_settings(30)
@given(flags=st.lists(POINTS_FLAG, min_size=1, max_size=3))
@example(flags=[("--device", "cuda:\u0663", False)])  # was a RuntimeError from torch.device
@example(flags=[("--device", "cuda:99999999999999999999", False)])  # was a RuntimeError from torch.device
@example(flags=[("--betas", "0,0.5,1", True)])
def test_embed_points_flag_values_are_run_or_refused(world: World, fresh: Any, capsys: pytest.CaptureFixture[str],
                                                     flags: list[tuple[str, str, bool]]) -> None:
    folder = fresh()
    points, out = folder / "points.csv", folder / "out.npz"
    points.write_text("lon,lat\n8.5,47.4\n-120,-30\n")
    argv = ["embed-points", "--satclip", str(world.ckpt), "--db", str(world.db), "--points", str(points), "--out",
            str(out)]
    for flag, value, joined in flags:
        argv += [f"{flag}={value}"] if joined else [flag, value]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: a choices violation, a --tolerance that is not a number
        event("argparse usage error")
        assert exc.code == 2
        return
    err = capsys.readouterr().err
    event(f"rc {rc}")
    assert "Traceback" not in err, err
    assert rc in (0, 2), err
    if rc == 0:
        with np.load(out) as f:
            assert f["embedding"].shape[1:] == (2, 1280)
    else:
        names = [f for f, _, _ in flags] + [f[2:] for f, _, _ in flags]
        _error_line(err, "embed-points", *names)
        assert not out.exists()


# ------------------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_before_a_real_run(world: World, fresh: Any, value: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--memory-budget-mb nan was accepted and failed in the run with a ValueError (inf: OverflowError)."""
    out = fresh() / "cube.zarr"
    rc = main(["embed-grid", "--satclip", str(world.ckpt), "--db", str(world.db), "--out", str(out), "--executor",
               "local", "--resolution", "30", "--tile-size", "6", "--chunk-size", "6", "--betas", "0.5",
               f"--memory-budget-mb={value}"])
    assert rc == 2
    _error_line(capsys.readouterr().err, "embed-grid", "--memory-budget-mb", "memory_budget_mb")
    assert not out.exists()


def test_tiny_resolution_is_a_message(world: World, fresh: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh() / "new.zarr"
    rc = main(["embed-grid", "--satclip", str(world.ckpt), "--db", str(world.db), "--out", str(out), "--executor",
               "local", "--dry-run", "--resolution", "1e-300"])
    assert rc == 2
    _error_line(capsys.readouterr().err, "embed-grid", "resolution")

