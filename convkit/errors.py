"""One exception type for every user-facing failure, carrying its exit code, and the CLI decorator that reports it."""

import functools
import sys

# Exit codes, distinct per kind of failure so scripts can tell them apart.
EXIT_GATE_FAILED = 1  # a quality gate (parity, accuracy drop) failed
EXIT_BAD_INPUT = 2  # bad usage, missing or corrupt input, unwritable output
EXIT_DIVERGED = 3  # training produced a non-finite loss
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


def friendly_errors(fn=None, *, interrupted: str = "interrupted"):
    """Decorator for CLI commands: ConvkitError → `error: message` on stderr + its exit code; Ctrl-C → exit 130.

    Usable bare (``@friendly_errors``) or with the message printed on Ctrl-C (``@friendly_errors(interrupted=...)``).
    """

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            import click

            try:
                return command(*args, **kwargs)
            except ConvkitError as exc:
                click.echo(f"error: {exc.message}", err=True)
                sys.exit(exc.exit_code)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(EXIT_INTERRUPTED)

        return wrapper

    return decorate(fn) if fn is not None else decorate
