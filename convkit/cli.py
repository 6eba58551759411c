"""The ``convkit`` command line: one click group whose commands live with the code they drive, loaded lazily.

Each command is a thin shell around a library function. Errors are handled once, here: a ConvkitError (a
failure the user can fix) becomes one line on stderr and its exit code; Ctrl-C exits 130; anything else is
a bug: one line naming it and the log file that holds its traceback, exit 70. Commands are imported only
when they run or when --help lists them, and their modules import click alone, so `convkit --help` never
imports torch.
"""

from __future__ import annotations

import datetime
import importlib
import io
import os
import signal
import sys
import tempfile
import traceback

import click

from convkit import __version__
from convkit.errors import EXIT_BUG, EXIT_INTERRUPTED, ConvkitError, failure_of
from convkit.text import term

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a Unix tool killed by a closed pipe exits with
MAX_MESSAGE = 4000  # characters of one error line (foreign parts are capped on their own)
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

# command name → "module:attribute" of its click command, in the order --help lists them.
COMMANDS = {
    "list": "convkit.commands:list_cmd",
    "train": "convkit.train.cli:train_cmd",
    "export": "convkit.export.cli:export_cmd",
    "evaluate": "convkit.evaluate.cli:evaluate_cmd",
    "diagnose": "convkit.export.diagnose_cli:diagnose_cmd",
    "train-all": "convkit.commands:train_all_cmd",
    "summarize": "convkit.commands:summarize_cmd",
    "report": "convkit.report.cli:report_cmd",
    "compare": "convkit.compare.cli:compare_cmd",
}

# What Ctrl-C leaves behind, per command: the user's next step.
INTERRUPTED = {
    "train": "interrupted; checkpoint.pt holds the last epoch saved (saved after the first epoch, then at most every "
             "5 min): rerun with --resume to continue from it",
    "train-all": "interrupted; each run's checkpoint.pt holds its last epoch saved (after its first epoch, then at "
                 "most every 5 min): rerun with --resume to continue",
    "export": "interrupted; files already exported are complete, the current one was not written",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is listed or run (click's pattern)."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return list(self.lazy_commands) + [c for c in super().list_commands(ctx) if c not in self.lazy_commands]

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            module, attr = self.lazy_commands[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def main(self, *args, **kwargs):
        """Run the CLI; usage errors (a bad option value, a missing argument) are one line too, exit 2."""
        kwargs.pop("standalone_mode", None)
        if not args and kwargs.get("args") is None:  # the real entry point (a test's runner passes its args)
            return self._main_then_exit(*args, **kwargs)
        return self._main(*args, **kwargs)

    def _main_then_exit(self, *args, **kwargs):
        """Run ``_main``; once it has ended, Ctrl-C (during the interpreter's shutdown: worker pools, threads) says
        that the command had finished and exits with the command's own status."""
        status = 0
        try:
            self._main(*args, **kwargs)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise
        finally:
            _after_finish(status)

    def _main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `convkit`: the help, as click shows it
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = f"`{exc.ctx.command_path} --help`" if exc.ctx else "`convkit --help`"
            click.echo(f"error: {exc.format_message()} (see {where})", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo(INTERRUPTED.get(None, "interrupted"), err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConvkitError as exc:
            click.echo(f"error: {term(exc.message, MAX_MESSAGE)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # training's says exactly which epoch its checkpoint holds
            click.echo(getattr(exc, "message", None) or INTERRUPTED.get(ctx.invoked_subcommand, "interrupted"),
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # `convkit list | head`: the reader left; nothing to say, as Unix tools do
            _quiet_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: one line for the user, the traceback in a log file
            log = write_bug_log(exc)
            click.echo(f"error: {failure_of(exc).message} — this is a bug in convkit: please report it with "
                       f"the log at {log}", err=True)
            sys.exit(EXIT_BUG)


def _after_finish(status: int) -> None:
    """Make a later Ctrl-C print that the command had finished (its output is complete) and exit ``status``."""
    def interrupted_after(signum, frame):
        try:
            sys.stdout.flush()
            sys.stderr.write(f"interrupted after the command had finished (exit {status}): what it printed and "
                             f"wrote is complete\n")
            sys.stderr.flush()
        finally:
            os._exit(status)

    try:
        signal.signal(signal.SIGINT, interrupted_after)
    except ValueError:  # not the main thread: nothing to install
        pass


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into a closed pipe raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # not a real file (a test's runner)
        pass


def write_bug_log(exc: BaseException) -> str:
    """Write the traceback of ``exc`` to a log file (under $CONVKIT_CACHE/logs, else the temp dir); returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"convkit {__version__}\nargv: {sys.argv}\n\n" + "".join(traceback.format_exception(exc))
    for folder in (os.path.join(os.environ.get("CONVKIT_CACHE") or os.path.expanduser("~/.cache/convkit"), "logs"),
                   tempfile.gettempdir()):
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"convkit-bug-{stamp}-{os.getpid()}.log")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return "(no writable folder for the log)"


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="convkit")
def main():
    """convkit: train CNNs fast, export them to ONNX, and re-measure them under ONNX Runtime on GPU and CPU."""


if __name__ == "__main__":
    main()
