"""The config schema: one dataclass gives the flags and the YAML loader, with errors that say how to fix them."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from range_dist.config.schema import add_arguments, fields_table, from_sources, option, to_argv, to_mapping
from range_dist.errors import ConfigError


def parse_levels(value: Any) -> tuple[float, ...]:
    """Levels in [0, 1] from "0,0.5" or a list (a custom parser, like range_dist.config.values')."""
    parts = value.split(",") if isinstance(value, str) else value
    levels = tuple(float(p) for p in parts)
    if not levels or any(not 0.0 <= x <= 1.0 for x in levels):
        raise ConfigError(f"levels={value!r}: give one or more levels in [0, 1], e.g. 0,0.5,1")
    return levels


@dataclass(frozen=True)
class JobConfig:
    out: Path = option(help="output store")
    tile_size: int = option(256, help="cells per tile side")
    chunk: int = option(32, help="cells per chunk side (divides tile_size)")
    scale: float = option(1.5, help="scale factor, 100% = 1")
    land_only: bool = option(False, help="land cells only")
    name: str = option("job", help="run name")
    tolerance: float | None = option(None, help="fast-mode tolerance")
    kind: Literal["a", "b"] = option("a", help="which kind")
    levels: tuple[float, ...] = option((0.0, 1.0), parse=parse_levels, metavar="L1,L2", help="levels in [0, 1]")
    gdal: tuple[tuple[str, str], ...] = option((), metavar="NAME=VALUE", help="GDAL setting (repeatable)")
    knob: int = option(0, help="testing knob", yaml=False, cli=False)

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.tile_size % self.chunk:
            raise ConfigError(f"tile_size={self.tile_size}, chunk={self.chunk}: chunk must divide tile_size")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job")
    parser.add_argument("--config")
    parser.add_argument("--dry-run", action="store_true")
    add_arguments(parser, JobConfig)
    return parser


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_only() -> None:
    args = make_parser().parse_args(["--out", "x.zarr", "--tile-size", "64", "--scale", "2", "--land-only",
                                     "--tolerance", "1e-3", "--kind", "b", "--levels", "0, 0.5",
                                     "--gdal", "B=2", "--gdal", "A=x=y", "--config", "ignored.yaml", "--dry-run"])
    args.command = "job"  # unrelated attributes of the Namespace are ignored
    config = from_sources(JobConfig, flags=args)
    assert config == JobConfig(out=Path("x.zarr"), tile_size=64, scale=2.0, land_only=True, tolerance=1e-3,
                               kind="b", levels=(0.0, 0.5), gdal=(("A", "x=y"), ("B", "2")))
    assert isinstance(config.scale, float) and isinstance(config.out, Path)


def test_yaml_only(tmp_path: Path) -> None:
    path = write(tmp_path, "out: y.zarr\ntile_size: 128.0\nscale: 3\nland_only: true\ntolerance: null\n"
                           "levels: [0, 1]\ngdal: {GDAL_CACHEMAX: 512, VSI_CACHE: 'TRUE'}\n")
    config = from_sources(JobConfig, yaml_path=path)
    assert config == JobConfig(out=Path("y.zarr"), tile_size=128, scale=3.0, land_only=True, levels=(0.0, 1.0),
                               gdal=(("GDAL_CACHEMAX", "512"), ("VSI_CACHE", "TRUE")))
    assert from_sources(JobConfig, yaml_path=write(tmp_path, "", "empty.yaml"), flags={"out": "z"}).out == Path("z")


def test_flags_override_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "out: y.zarr\ntile_size: 128\nland_only: true\ntolerance: 0.5\ngdal: [A=1, [B, '2']]\n")
    args = make_parser().parse_args(["--tile-size", "64", "--no-land-only", "--tolerance", "none", "--gdal", ""])
    config = from_sources(JobConfig, yaml_path=path, flags=args)
    assert config == JobConfig(out=Path("y.zarr"), tile_size=64, land_only=False, tolerance=None, gdal=())
    assert from_sources(JobConfig, yaml_path=path).gdal == (("A", "1"), ("B", "2"))


def test_unknown_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "out: y.zarr\ntile_sise: 64\nknob: 3\n")
    with pytest.raises(ConfigError) as info:
        from_sources(JobConfig, yaml_path=path)
    message = str(info.value)
    assert str(path) in message and "'tile_sise'" in message and "did you mean 'tile_size'?" in message
    assert "'knob'" in message  # yaml=False: not a YAML key
    assert "known settings are: chunk, gdal, kind, land_only, levels, name, out, scale, tile_size" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("tile_size: big", "tile_size='big' must be an integer (e.g. `tile_size: 12`)"),
    ("tile_size: 2.5", "tile_size=2.5 must be an integer"),
    ("tile_size: true", "tile_size=True must be an integer"),
    ("scale: [1]", "scale=[1] must be a number"),
    ("land_only: 'true'", "land_only='true' must be true or false"),
    ("name: 12", "name=12 must be a string"),
    ("tolerance: x", "tolerance='x' must be a number or null"),
    ("kind: c", "kind='c' must be one of 'a', 'b'"),
    ("gdal: [NOEQUALS]", "gdal=['NOEQUALS'] must be NAME=VALUE settings (e.g. `gdal: {NAME: VALUE}`)"),
    ("out: ''", "out='' must be a path"),
])
def test_wrong_type_from_yaml(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "out: y.zarr\n" + text + "\n" if not text.startswith("out") else text + "\n")
    with pytest.raises(ConfigError) as info:
        from_sources(JobConfig, yaml_path=path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_wrong_type_from_flag() -> None:
    args = make_parser().parse_args(["--out", "x", "--tile-size", "big"])
    with pytest.raises(ConfigError, match=r"^flag --tile-size: tile_size='big' must be an integer "
                                          r"\(e\.g\. --tile-size 12\)$"):
        from_sources(JobConfig, flags=args)
    with pytest.raises(ConfigError, match=r"^flag --tolerance: tolerance='x' must be a number or none"):
        from_sources(JobConfig, flags={"out": "x", "tolerance": "x"})


def test_custom_parse_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^flag --levels: levels='2': give one or more levels in \[0, 1\]"):
        from_sources(JobConfig, flags={"out": "x", "levels": "2"})
    path = write(tmp_path, "out: x\nlevels: [a]\n")
    with pytest.raises(ConfigError, match=r"levels=\['a'\] must be a list of numbers .*could not convert"):
        from_sources(JobConfig, yaml_path=path)


def test_missing_required(tmp_path: Path) -> None:
    message = "missing required setting out: pass --out or set `out:` in the YAML"
    with pytest.raises(ConfigError, match=f"^{message}$"):
        from_sources(JobConfig, flags=make_parser().parse_args([]))
    with pytest.raises(ConfigError, match=message):
        from_sources(JobConfig, yaml_path=write(tmp_path, "tile_size: 64\n"))


def test_bad_yaml_files(tmp_path: Path) -> None:
    invalid = write(tmp_path, "out: [x\n", "invalid.yaml")
    with pytest.raises(ConfigError, match=r"invalid\.yaml: invalid YAML"):
        from_sources(JobConfig, yaml_path=invalid)
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of settings .*got a list"):
        from_sources(JobConfig, yaml_path=write(tmp_path, "- out\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"cannot read the config file .*missing\.yaml"):
        from_sources(JobConfig, yaml_path=tmp_path / "missing.yaml")


def test_post_init_error_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^flags: tile_size=100, chunk=32: chunk must divide tile_size$"):
        from_sources(JobConfig, flags={"out": "x", "tile_size": "100"})
    path = tmp_path / "job.yaml"
    path.write_text("tile_size: 100\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} \+ flags: tile_size=100, chunk=32"):
        from_sources(JobConfig, yaml_path=path, flags={"out": "x"})


def test_boolean_optional_action() -> None:
    parser = make_parser()
    assert parser.parse_args(["--land-only"]).land_only is True
    assert parser.parse_args(["--no-land-only"]).land_only is False
    assert parser.parse_args([]).land_only is None  # not given: the YAML or the default applies
    assert from_sources(JobConfig, flags={"out": "x", "land_only": None}).land_only is False


def test_parser_flags_and_help() -> None:
    parser = make_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])  # Literal → argparse choices
    assert not hasattr(parser.parse_args([]), "knob")  # cli=False: no flag
    text = " ".join(parser.format_help().split())
    for default in ("cells per tile side (default: 256)", "scale factor, 100% = 1 (default: 1.5)",
                    "land cells only (default: false)", "levels in [0, 1] (default: 0.0,1.0)",
                    "GDAL setting (repeatable) (default: empty)", "--levels L1,L2", "--gdal NAME=VALUE"):
        assert default in text
    assert "output store (default" not in text and "fast-mode tolerance (default" not in text


def test_fields_table() -> None:
    table = {row[0]: row[1:] for row in fields_table(JobConfig)}
    assert table["out"] == ("Path", "required", "output store")
    assert table["tolerance"] == ("float | None", "none", "fast-mode tolerance")
    assert table["kind"] == ("'a' | 'b'", "a", "which kind")
    assert table["gdal"][0] == "tuple[tuple[str, str], ...]"
    assert table["levels"][:2] == ("tuple[float, ...]", "0.0,1.0")


def test_unsupported_annotation_needs_a_parser() -> None:
    @dataclass(frozen=True)
    class Bad:
        mapping: dict = option(default_factory=dict, help="no conversion for dict")  # type: ignore[type-arg]

    with pytest.raises(TypeError, match=r"Bad\.mapping: no conversion for dict; give the option a parse=$"):
        add_arguments(argparse.ArgumentParser(), Bad)


def test_to_argv_and_to_mapping() -> None:
    config = JobConfig(out=Path("o.zarr"), scale=0.1, tolerance=None, levels=(0.25,), gdal=(("A", "1"),), knob=7)
    assert to_argv(config) == ["--out=o.zarr", "--tile-size=256", "--chunk=32", "--scale=0.1", "--no-land-only",
                               "--name=job", "--kind=a", "--levels=0.25", "--gdal=A=1"]
    assert to_mapping(config) == {"out": "o.zarr", "tile_size": 256, "chunk": 32, "scale": 0.1, "land_only": False,
                                  "name": "job", "tolerance": None, "kind": "a", "levels": [0.25],
                                  "gdal": {"A": "1"}}


# ----------------------------------------------------------------------------------- round trips

_texts = st.text(st.characters(codec="utf-8"), max_size=8)  # any text a YAML file or a flag can hold
_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,5}", fullmatch=True)


@st.composite
def configs(draw: st.DrawFn) -> JobConfig:
    chunk = draw(st.integers(1, 64))
    return JobConfig(
        out=Path(draw(_texts)),
        tile_size=chunk * draw(st.integers(-4, 8)),
        chunk=chunk,
        scale=draw(st.floats(allow_nan=False, allow_infinity=False)),  # non-finite numbers are refused
        land_only=draw(st.booleans()),
        name=draw(_texts),
        tolerance=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        kind=draw(st.sampled_from(["a", "b"])),
        levels=tuple(draw(st.lists(st.floats(0, 1), min_size=1, max_size=4))),
        gdal=tuple(sorted(draw(st.dictionaries(_names, _texts, max_size=3)).items())),
    )


@settings(max_examples=100, deadline=None)
@given(configs())
def test_round_trip_through_flags(config: JobConfig) -> None:
    args = make_parser().parse_args(to_argv(config))
    assert from_sources(JobConfig, flags=args) == config


@settings(max_examples=100, deadline=None)
@given(configs())
def test_round_trip_through_yaml(tmp_path_factory: pytest.TempPathFactory, config: JobConfig) -> None:
    path = tmp_path_factory.mktemp("rt") / "config.yaml"
    path.write_text(yaml.safe_dump(to_mapping(config)), encoding="utf-8")
    assert from_sources(JobConfig, yaml_path=path) == config


def test_non_default_none_round_trips(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Interval:
        datetime: str | None = option("2021-01-01/2023-05-17", help="START/END")

    config = Interval(datetime=None)
    parser = argparse.ArgumentParser()
    add_arguments(parser, Interval)
    assert to_argv(config) == ["--datetime=none"]
    assert from_sources(Interval, flags=parser.parse_args(to_argv(config))) == config
    path = write(tmp_path, yaml.safe_dump(to_mapping(config)))
    assert from_sources(Interval, yaml_path=path) == config
