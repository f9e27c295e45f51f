"""One typed, frozen dataclass per job, declared once; its argparse flags and YAML loader come from it.

Each field is declared with :func:`option` (type, default, help, optional parser); then
:func:`add_arguments` makes the flags, :func:`from_sources` merges a YAML file and the flags into the
dataclass, and :func:`to_mapping` / :func:`to_argv` write a config back out. Adding a setting is one
line in the dataclass. Fields declared without :func:`option` are internal: no flag, no YAML key.

Conversion rules (by annotation, unless the option has its own ``parse``): ``int``, ``float``,
``bool`` (YAML true/false), ``str``, ``Path``, ``X | None`` (null/``none``/``null`` → None),
``Literal[...]``, ``tuple[X, ...]`` and fixed ``tuple[X, Y]`` (a YAML list or comma-separated text),
and ``tuple[tuple[str, str], ...]`` (NAME=VALUE settings: a mapping, ``NAME=VALUE`` strings or pairs;
kept sorted by name, the last of a repeated name wins, so equal settings compare equal).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from range_dist.errors import ConfigError
from range_dist.util.paths import local_path

T = TypeVar("T")
_KEY = "range_dist.option"  # the key of our metadata in dataclasses.Field.metadata


@dataclasses.dataclass(frozen=True)
class _Meta:
    help: str
    parse: Callable[[Any], Any] | None
    flag: str | None
    metavar: str | None
    yaml: bool
    cli: bool


def option(default: Any = dataclasses.MISSING, *, help: str, parse: Callable[[Any], Any] | None = None,
           flag: str | None = None, metavar: str | None = None, yaml: bool = True, cli: bool = True,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a setting: a YAML key and/or a command-line flag.

    Args:
        default: the value when neither the YAML nor a flag gives one; omit for a required setting.
        help: one line for ``--help`` and the docs.
        parse: converts a raw value (a flag's text, or any YAML value) to the canonical value, raising
            ConfigError or ValueError; replaces the conversion by annotation. For ``X | None`` fields,
            None / ``none`` / ``null`` never reach it. It must accept what :func:`to_argv` and
            :func:`to_mapping` write (the canonical value as text, or as a YAML list).
        flag: the flag (default ``--`` + the name with ``_`` → ``-``).
        metavar: the flag's placeholder in ``--help``.
        yaml: whether the setting is a YAML key.
        cli: whether the setting is a flag.
        default_factory: as for :func:`dataclasses.field`.
    """
    metadata = {_KEY: _Meta(help, parse, flag, metavar, yaml, cli)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------------- the schema


@dataclasses.dataclass(frozen=True)
class _Setting:
    name: str
    type: Any
    meta: _Meta
    default: Any  # dataclasses.MISSING when required

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.name.replace("_", "-")

    @property
    def base(self) -> Any:
        """The annotation without ``| None``."""
        inner = _optional_of(self.type)
        return self.type if inner is None else inner


def _settings(config_cls: type) -> list[_Setting]:
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    hints = get_type_hints(config_cls)  # resolves string annotations (`from __future__ import annotations`)
    out = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata.get(_KEY)
        if meta is None or not f.init:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        setting = _Setting(f.name, hints[f.name], meta, default)
        if meta.parse is None and _describe(setting.type) is None:
            raise TypeError(f"{config_cls.__name__}.{f.name}: no conversion for {_type_text(setting.type)}; "
                            "give the option a parse=")
        out.append(setting)
    return out


def _optional_of(tp: Any) -> Any:
    """X for ``X | None``, else None."""
    args = get_args(tp)
    if get_origin(tp) in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return args[0] if args[1] is type(None) else args[1]
    return None


def _is_pairs(tp: Any) -> bool:
    args = get_args(tp)
    return (get_origin(tp) is tuple and args[1:] == (Ellipsis,) and get_origin(args[0]) is tuple
            and get_args(args[0]) == (str, str))


# ----------------------------------------------------------------------------------- conversion


def _to_int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) or not isinstance(v, int | float | str):
        raise ValueError(v)
    return int(v)


def _to_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(v)
    number = float(v)
    if not math.isfinite(number):  # nan / inf pass every `x > 0` style check, then fail deep inside a run
        raise ValueError(v)
    return number


def _exact(kind: type) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if not isinstance(v, kind):
            raise ValueError(v)
        return v
    return convert


def _to_path(v: Any) -> Path:
    if isinstance(v, Path) or (isinstance(v, str) and v):
        return local_path(v)  # a URL is refused, never turned into a local folder
    raise ValueError(v)


#: type → (convert, expected, plural, example)
_SCALARS: dict[Any, tuple[Callable[[Any], Any], str, str, str]] = {
    int: (_to_int, "an integer", "integers", "12"),
    float: (_to_float, "a number", "numbers", "0.5"),
    bool: (_exact(bool), "true or false", "booleans", "true"),
    str: (_exact(str), "a string", "strings", "text"),
    Path: (_to_path, "a path", "paths", "path/to/file"),
}


def _items(v: Any) -> list[Any]:
    if isinstance(v, str):
        return [p.strip() for p in v.split(",")] if v.strip() else []
    if isinstance(v, list | tuple):
        return list(v)
    raise ValueError(v)


def _text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError(v)
    return str(v)


def _to_pairs(v: Any) -> tuple[tuple[str, str], ...]:
    items = list(v.items()) if isinstance(v, Mapping) else [v] if isinstance(v, str) else _items(v)
    pairs: dict[str, str] = {}
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue  # '' is no setting: `--gdal ''` overrides the YAML's settings with none
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(item)
        elif isinstance(item, list | tuple) and len(item) == 2:
            name, value = item
        else:
            raise ValueError(item)
        name = _text(name).strip()
        if not name:
            raise ValueError(item)
        pairs[name] = _text(value)
    return tuple(sorted(pairs.items()))


def _convert(v: Any, tp: Any) -> Any:
    """``v`` as a value of ``tp``; ValueError when it is not one."""
    inner = _optional_of(tp)
    if inner is not None:
        return None if _is_none(v) else _convert(v, inner)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        for choice in args:
            if (type(v) is type(choice) and v == choice) or (isinstance(v, str) and v == str(choice)):
                return choice
        raise ValueError(v)
    if _is_pairs(tp):
        return _to_pairs(v)
    if origin is tuple:
        items = _items(v)
        if args[1:] == (Ellipsis,):
            return tuple(_convert(x, args[0]) for x in items)
        if len(items) != len(args):
            raise ValueError(v)
        return tuple(_convert(x, a) for x, a in zip(items, args))
    return _SCALARS[tp][0](v)


def _is_none(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null"))


def _describe(tp: Any) -> tuple[str, str, str] | None:
    """(expected, flag example, YAML example) for ``tp``; None when there is no conversion for it."""
    inner = _optional_of(tp)
    origin, args = get_origin(tp), get_args(tp)
    if inner is not None:
        found = _describe(inner)
        return None if found is None else (f"{found[0]} or null", found[1], found[2])
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args)), str(args[0]), str(args[0])
    if _is_pairs(tp):
        return "NAME=VALUE settings", "NAME=VALUE", "{NAME: VALUE}"
    if origin is tuple and args and all(a in _SCALARS for a in args if a is not Ellipsis):
        if args[1:] == (Ellipsis,):
            _, _, plural, example = _SCALARS[args[0]]
            return f"a list of {plural} (or comma-separated text)", f"{example},{example}", f"[{example}, {example}]"
        examples = [_SCALARS[a][3] for a in args]
        plural = _SCALARS[args[0]][2] if len(set(args)) == 1 else "values"
        return f"{len(args)} {plural} (a list or comma-separated)", ",".join(examples), f"[{', '.join(examples)}]"
    if tp in _SCALARS:
        _, expected, _, example = _SCALARS[tp]
        return expected, example, example
    return None


def _value(setting: _Setting, raw: Any, source: str, from_flag: bool) -> Any:
    """The field's value from ``raw``, or a ConfigError naming the key, the source and the expected type."""
    expected, cli_example, yaml_example = _describe(setting.type) or (_type_text(setting.type), "", "")
    if from_flag:
        expected = expected.replace(" or null", " or none")
    try:
        if setting.meta.parse is None:
            return _convert(raw, setting.type)
        if _optional_of(setting.type) is not None and _is_none(raw):
            return None
        return setting.meta.parse(raw)
    except ConfigError as exc:  # a parser's own message already names the key and the fix
        raise ConfigError(f"{source}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        detail = f" ({exc})" if setting.meta.parse is not None and str(exc) else ""
        example = f"{setting.flag} {cli_example}" if from_flag else f"`{setting.name}: {yaml_example}`"
        hint = f" (e.g. {example})" if cli_example else ""
        raise ConfigError(f"{source}: {setting.name}={raw!r} must be {expected}{detail}{hint}") from exc


# ----------------------------------------------------------------------------------- the public API


def add_arguments(parser: argparse.ArgumentParser, config_cls: type, *, exclude: Collection[str] = ()) -> None:
    """Add one flag per ``cli`` setting of ``config_cls`` (dest = the field name), except ``exclude``.

    Every flag's default is None, meaning "not given", so that :func:`from_sources` lets the YAML and
    then the dataclass default apply; the real default is shown in the help text instead. Values stay
    text here (no ``type=``): :func:`from_sources` converts them, so a bad value fails with a
    ConfigError of the same form as a bad YAML value rather than argparse's own message.
    """
    for s in _settings(config_cls):
        if not s.meta.cli or s.name in exclude:
            continue
        help_text = s.meta.help.replace("%", "%%")  # argparse %-formats help strings
        if s.default is not None and s.default is not dataclasses.MISSING:
            help_text += f" (default: {_show(s.default) or 'empty'})"
        kwargs: dict[str, Any] = {"dest": s.name, "default": None, "help": help_text}
        if s.base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(s.base) is Literal:
            kwargs["choices"] = [str(c) for c in get_args(s.base)] + (["none"] if s.base is not s.type else [])
        elif _is_pairs(s.base):
            kwargs["action"] = "append"
            kwargs["metavar"] = "NAME=VALUE"
        if s.meta.metavar:
            kwargs["metavar"] = s.meta.metavar
        parser.add_argument(s.flag, **kwargs)


def from_sources(config_cls: type[T], *, yaml_path: str | Path | None = None,
                 flags: Mapping[str, Any] | argparse.Namespace | None = None) -> T:
    """The config from a YAML file (optional), overridden by the flags that were given.

    Args:
        config_cls: a dataclass declared with :func:`option`.
        yaml_path: a YAML file holding a mapping of setting names to values (an empty file is no settings).
        flags: parsed flags (an argparse Namespace or a mapping); None values were not given. Only the
            names of ``cli`` settings are read: other attributes (``command``, ``config``...) are ignored.

    Raises:
        ConfigError: an unreadable or invalid YAML file, an unknown YAML key, a value of the wrong type,
            a missing required setting, or whatever the dataclass's own validation rejects.
    """
    settings = _settings(config_cls)
    values: dict[str, Any] = {}
    if yaml_path is not None:
        by_name = {s.name: s for s in settings if s.meta.yaml}
        for key, raw in _read_yaml(Path(yaml_path), sorted(by_name)).items():
            values[key] = _value(by_name[key], raw, str(yaml_path), from_flag=False)
    given = vars(flags) if isinstance(flags, argparse.Namespace) else dict(flags or {})
    for s in settings:
        if s.meta.cli and given.get(s.name) is not None:
            values[s.name] = _value(s, given[s.name], f"flag {s.flag}", from_flag=True)
    missing = [s for s in settings if s.default is dataclasses.MISSING and s.name not in values]
    if missing:
        raise ConfigError("; ".join(f"missing required setting {s.name}: " + " or ".join(
            ([f"pass {s.flag}"] if s.meta.cli else []) + ([f"set `{s.name}:` in the YAML"] if s.meta.yaml else []))
            for s in missing))
    try:
        return config_cls(**values)  # __post_init__ checks the rules across fields
    except ConfigError as exc:
        # name where the offending values came from: the YAML file, the flags, or both
        sources = [str(yaml_path)] if yaml_path is not None else []
        sources += ["flags"] if any(given.get(s.name) is not None for s in settings if s.meta.cli) else []
        if not sources:
            raise
        raise ConfigError(f"{' + '.join(sources)}: {exc}") from exc


def _read_yaml(path: Path, known: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}; check the path") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (`name: value` lines), got a "
                          f"{type(data).__name__}")
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{path}: unknown setting {', '.join(hints)}; fix or remove it. "
                          f"The known settings are: {', '.join(known)}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: what is wrong and where (its own text quotes the lines with a caret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(str(p) for p in (exc.context, exc.problem) if p) or "not YAML"
        return what + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    return " ".join(str(exc).split())


def to_mapping(config: Any) -> dict[str, Any]:
    """The ``yaml`` settings of ``config`` as plain YAML-ready values (``yaml.safe_dump`` writes them).

    Paths become text, tuples lists, and NAME=VALUE settings a mapping; :func:`from_sources` on a
    YAML dump of the result gives an equal config.
    """
    return {s.name: _plain(getattr(config, s.name), pairs=_is_pairs(s.base))
            for s in _settings(type(config)) if s.meta.yaml}


def _plain(v: Any, pairs: bool = False) -> Any:
    if pairs and v is not None:
        return dict(v)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def to_argv(config: Any) -> list[str]:
    """Flags that reproduce every ``cli`` setting of ``config`` (parsed by :func:`add_arguments`' flags).

    Every setting is written, not only those that differ from the default, so that the round trip is
    exact whatever a YAML would have said. Values are written as ``--flag=VALUE``: a separate argument
    that starts with ``-`` (``-1.5,2``) would be taken by argparse for an option.
    """
    argv = []
    for s in _settings(type(config)):
        if not s.meta.cli:
            continue
        value = getattr(config, s.name)
        if value is None:
            if s.default is not None:  # "not given" would bring the default back
                argv.append(f"{s.flag}=none")
        elif s.base is bool:
            argv.append(s.flag if value else "--no-" + s.flag.removeprefix("--"))
        elif _is_pairs(s.base):
            argv.extend([f"{s.flag}={name}={v}" for name, v in value] or [f"{s.flag}="])
        else:
            argv.append(f"{s.flag}={_show(value)}")
    return argv


def _show(v: Any) -> str:
    """``v`` as flag text: floats exact (repr), tuples comma-joined, pairs as NAME=VALUE."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return ",".join(f"{x[0]}={x[1]}" if isinstance(x, tuple) else _show(x) for x in v)
    return "none" if v is None else str(v)


def fields_table(config_cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each setting of ``config_cls``, as text for the docs."""
    return [(s.name, _type_text(s.type), "required" if s.default is dataclasses.MISSING else _show(s.default),
             s.meta.help) for s in _settings(config_cls)]


def _type_text(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return " | ".join(map(_type_text, args))
    if origin is tuple:
        return "tuple[" + ", ".join("..." if a is Ellipsis else _type_text(a) for a in args) + "]"
    return getattr(tp, "__name__", str(tp))
