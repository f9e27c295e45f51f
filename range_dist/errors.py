"""The exception hierarchy of range_dist.

Every error a user can cause names the input, what was expected and how to fix it. The CLI turns
any :class:`RangeDistError` into a one-paragraph message and exit code 2, never a traceback.
"""

from __future__ import annotations


class RangeDistError(Exception):
    """Base class of every error range_dist raises on purpose."""


class ConfigError(RangeDistError, ValueError):
    """A configuration value or command-line argument is invalid."""


class ToleranceError(ConfigError):
    """The fast retrieval mode cannot meet the requested tolerance on the run's points."""


class CoordinateError(RangeDistError, ValueError):
    """A location is NaN, infinite or outside lon [-180, 180] / lat [-90, 90]."""


class CheckpointError(RangeDistError, ValueError):
    """A model checkpoint is missing keys, has mis-shaped tensors or inconsistent settings."""


class DatabaseError(RangeDistError, ValueError):
    """A retrieval database is malformed (shapes, non-finite rows, zero-norm keys, dimensions)."""


class StoreMismatchError(RangeDistError):
    """An existing output store was made with different settings than the current run."""


class AssetError(RangeDistError):
    """A published asset could not be fetched (offline, unknown repository, ...)."""


class StacError(RangeDistError):
    """A STAC API could not be searched (unreachable, bad response, unknown collection)."""


class ChipReadError(RangeDistError):
    """A chip could not be read from a scene's COGs (HTTP error after retries, corrupt file).

    Attributes:
        reason: a short failure class recorded in the failure table (``http_error``, ``corrupt_file``).
    """

    def __init__(self, message: str, reason: str = "read_error") -> None:
        super().__init__(message)
        self.reason = reason


class StoreWriteError(RangeDistError):
    """Writing to an output store failed (disk full, I/O error); the unit being written is not marked done."""

    @classmethod
    def of(cls, exc: OSError, what: str, kept: str) -> StoreWriteError:
        """``what`` failed with ``exc``: the error's reason and errno, what is kept, and how to resume."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(f"{what} failed: {reason} (errno {exc.errno}). {kept}; free space (or fix the store's "
                   "location) and rerun the same command to resume.")


class Terminated(BaseException):
    """SIGTERM as the CLI raises it (exit 143): a BaseException, as KeyboardInterrupt is for SIGINT.

    A signal handler raises in whatever code runs at that moment. An ``Exception`` raised inside Ray's
    deserialisation of a tile's result was caught there (``except Exception``), logged with its
    traceback and turned into a ``RaySystemError``: the tile was retried and the run went on to the
    end, exit 0, instead of stopping.
    """

    exit_code = 143


#: What a stop request raises: Ctrl-C (SIGINT) and SIGTERM.
STOP_SIGNALS: tuple[type[BaseException], ...] = (KeyboardInterrupt, Terminated)


class Interrupted(RangeDistError):
    """A run stopped by SIGINT (exit 130) or SIGTERM (exit 143); what was finished is kept.

    Attributes:
        exit_code: 130 for SIGINT, 143 for SIGTERM (128 + the signal number).
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def after(cls, cause: BaseException, done: str, store: object) -> Interrupted:
        """The message of a run stopped by ``cause`` (KeyboardInterrupt or Terminated) after ``done``."""
        code = cause.exit_code if isinstance(cause, Terminated) else 130
        name = "SIGTERM" if code == 143 else "SIGINT"
        return cls(f"stopped by {name} after {done}. Rerun the same command to resume: {store}", exit_code=code)
