"""One exception type for every user-facing failure, carrying its exit code (the CLI group reports it), and the
one way a foreign exception becomes a line of text (``first_line``, ``one_line``, ``failure_of``)."""

import re

# Exit codes, distinct per kind of failure so scripts can tell them apart.
EXIT_GATE_FAILED = 1  # a quality gate (parity, accuracy drop) failed
EXIT_BAD_INPUT = 2  # bad usage, missing or corrupt input, unwritable output
EXIT_DIVERGED = 3  # training produced a non-finite loss
EXIT_UNVERIFIED = 4  # evaluate: a number that cannot be stood behind (better preprocessing found; degenerate outputs)
EXIT_BUG = 70  # an unexpected exception: a bug in convkit (sysexits' EX_SOFTWARE), traceback in a log file
EXIT_INTERRUPTED = 130  # Ctrl-C


class ConvkitError(Exception):
    """A failure the user can fix; the CLI prints ``message`` on one line and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class DataError(ConvkitError):
    """Dataset missing, truncated or corrupt."""


class TrainingDiverged(ConvkitError):
    """Loss became non-finite; the last good checkpoint is kept."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_DIVERGED)


# "decode_jpeg, /__w/vision/.../decode_jpeg.cpp:171, " — where in a library's C++ the error was raised.
_SOURCE_LOCATION = re.compile(r"(?:\b\w+,\s*)?\S+\.(?:c|cc|cpp|cxx|cu|h|hpp):\d+\b,?\s*")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """Return the first non-empty line of ``exc``'s message without C++ source locations, at most ``limit``
    characters; its type name when the message is empty."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = _SOURCE_LOCATION.sub("", lines[0]).strip(" ,") if lines else ""
    return text[:limit] or type(exc).__name__


def one_line(exc: BaseException, limit: int = 300) -> str:
    """Return ``exc`` as "Type: first line" (see ``first_line``)."""
    text = first_line(exc, limit)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


def failure_of(exc: BaseException) -> ConvkitError:
    """Return ``exc`` when it is a ConvkitError, else a ConvkitError (exit 1) saying `Type: first line`.

    For loops over several items (experiments, exports, evaluations): an unexpected failure of one, such as
    an out-of-memory or a runtime error on a GPU, is recorded and the others go on.
    """
    if isinstance(exc, ConvkitError):
        return exc
    return ConvkitError(one_line(exc), EXIT_GATE_FAILED)
