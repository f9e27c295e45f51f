"""The ``range-dist`` entry point: the parser of every command group, and error reporting.

Each group module (:mod:`~range_dist.cli.assets`, :mod:`~range_dist.cli.database`,
:mod:`~range_dist.cli.embed`, :mod:`~range_dist.cli.analysis`, :mod:`~range_dist.cli.demo`)
registers its subcommands with a ``handler``. Handlers parse, load, call the library and report;
every :class:`~range_dist.errors.RangeDistError` becomes a one-paragraph message on stderr and
exit code 2 (no traceback). Nothing heavy (torch, ray) is imported before a handler runs.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from range_dist.errors import ConfigError, Interrupted, RangeDistError, Terminated
from range_dist.util.memory import numpy_without_huge_pages
from range_dist.util.paths import local_path
from range_dist.util.stores import StoreLocation

Handler = Callable[[argparse.Namespace], int]

#: (command, argument) pairs that accept an object-store URL (``s3://``, ``gs://``, ``az://``) as well as a
#: local path: the store a command reads or writes in place. Every other ``type=Path`` argument is local only.
#: (``embed-grid --out`` and ``build-db --out`` are job settings: their configs parse them.)
STORE_ARGUMENTS = frozenset({
    ("map", "cube"), ("sample", "cube"), ("similar", "cube"), ("export-cog", "cube"), ("overviews", "cube"),
    ("stac", "cube"), ("probe", "cube"), ("verify", "db"), ("import-db", "out"),
})
#: (command, argument) pairs of input files that may also be URLs (downloaded once into the cache, SHA-256
#: checked; a Zarr database on object storage is read in place): :func:`range_dist.util.downloads.parse_input`.
INPUT_ARGUMENTS = frozenset({
    ("embed-points", "satclip"), ("embed-points", "db"), ("probe", "satclip"), ("probe", "db"),
    ("db-info", "db"), ("export-db", "db"), ("import-db", "npz"),
})


def _path_argument(value: str) -> Path:
    try:
        return local_path(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _input_argument(value: str) -> Path | str:
    """An input file argument: a local Path, or URL text (``Path()`` would drop its ``//``)."""
    from range_dist.util.downloads import parse_input

    try:
        return parse_input(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _store_argument(value: str) -> Path | str:
    """A store argument: a local Path, or object-store URL text (``Path()`` would drop its ``//``)."""
    try:
        return StoreLocation.parse(value).as_arg()
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose ``type=Path`` refuses URLs.

    ``Path("s3://bucket/x")`` is the local ``s3:/bucket/x``: every subcommand's ``type=Path`` argument
    goes through :func:`~range_dist.util.paths.local_path` instead (argparse looks a ``type`` up in
    the parser's registry first; subparsers are made with this class, so they share it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", Path, _path_argument)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from range_dist import __version__
    from range_dist.cli.analysis import add_parsers as add_analysis
    from range_dist.cli.assets import add_parsers as add_assets
    from range_dist.cli.database import add_parsers as add_database
    from range_dist.cli.demo import add_parsers as add_demo
    from range_dist.cli.embed import add_parsers as add_embed
    from range_dist.cli.product import add_parsers as add_product
    from range_dist.cli.verify import add_parsers as add_verify

    parser = _Parser(prog="range-dist", description="RANGE geo-embeddings at planet scale.")
    parser.add_argument("--version", action="version", version=f"range-dist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in (add_assets, add_database, add_embed, add_demo, add_analysis, add_product, add_verify):
        add_group(sub)
    for command, subparser in sub.choices.items():
        for action in subparser._actions:  # argparse keeps no public list of a parser's arguments
            if (command, action.dest) in STORE_ARGUMENTS:
                action.type = _store_argument
            elif (command, action.dest) in INPUT_ARGUMENTS:
                action.type = _input_argument
    return parser


def _quiet_abandoned_coroutines(unraisable: Any) -> None:
    """Drop the close-time errors of abandoned coroutines; report anything else as Python would."""
    if inspect.iscoroutine(unraisable.object):
        return
    sys.__unraisablehook__(unraisable)


def _quiet_teardown() -> None:
    """Keep the stop's message the last thing printed: silence the teardown of the run's abandoned requests.

    A run stopped by an error or a signal leaves its in-flight store requests (zarr sends them
    concurrently on its own event loop) abandoned. At exit Python closes each one and would print, after
    the message, "Exception ignored in <coroutine ...>" tracebacks (the unraisable hook) and asyncio's
    "Task was destroyed but it is pending!" (logged by the ``asyncio`` logger).
    """
    sys.unraisablehook = _quiet_abandoned_coroutines
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated("terminated (SIGTERM)")


def _dry_run(handler: Handler, args: argparse.Namespace) -> int:
    """A ``--dry-run``: inputs given as URLs and not in the cache are read from a temporary copy, not kept.

    The plan needs what is inside them (the checkpoint's degree, the database's rows); "a dry run touches
    nothing" includes the download cache.
    """
    from range_dist.util.downloads import transient_downloads

    with transient_downloads() as fetched:
        code = handler(args)
    if fetched:
        print(f"dry run: read {', '.join(fetched)} from a temporary download, removed again (not kept in the cache; "
              "the real run downloads it once)")
    return code


#: object-store client libraries that log each failed retry with its traceback; range-dist reports the
#: failure itself, once, as a message (:class:`~range_dist.util.stores.ObjectStoreError`)
_CLIENT_LOGGERS = ("gcsfs", "s3fs", "adlfs", "aiobotocore", "botocore", "azure")


class _NoTraceback(logging.Formatter):
    # the only handler of these loggers (they do not propagate), so no other handler cached a traceback
    # in record.exc_text before this one formats it
    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (``main`` may run many times in one process)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ assigns the stream it was given; the current one is read at each record


def _one_line_client_logs() -> None:
    """Print the object-store clients' warnings as one line each, without their retries' tracebacks."""
    for name in _CLIENT_LOGGERS:
        client_logger = logging.getLogger(name)
        if client_logger.handlers:  # ours from an earlier call, or an application's own: kept
            continue
        handler = _CurrentStderr()
        handler.setFormatter(_NoTraceback("%(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        client_logger.addHandler(handler)
        client_logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``range-dist`` console script.

    Returns:
        0 on success, 2 for a :class:`~range_dist.errors.RangeDistError`, 130 / 143 when stopped by
        SIGINT / SIGTERM (finished work is kept; the message says how to resume).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    numpy_without_huge_pages()  # before the run's large arrays (see range_dist.util.memory)
    _one_line_client_logs()
    handler: Handler = args.handler
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C: the jobs stop dispatching and report what is done
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if not getattr(args, "dry_run", False):
            return handler(args)
        return _dry_run(handler, args)
    except Interrupted as exc:
        print(f"range-dist {args.command}: {exc}", file=sys.stderr)
        _quiet_teardown()
        return exc.exit_code
    except Terminated:
        print(f"range-dist {args.command}: terminated (SIGTERM)", file=sys.stderr)
        _quiet_teardown()
        return Terminated.exit_code
    except KeyboardInterrupt:
        print(f"range-dist {args.command}: interrupted (SIGINT)", file=sys.stderr)
        _quiet_teardown()
        return 130
    except RangeDistError as exc:
        print(f"range-dist {args.command}: error: {exc}", file=sys.stderr)
        _quiet_teardown()
        return 2
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
