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
import os
import sys
import tempfile
import traceback

import click

from convkit import __version__
from convkit.errors import EXIT_BUG, EXIT_INTERRUPTED, ConvkitError, failure_of

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
}

# What Ctrl-C leaves behind, per command: the user's next step.
INTERRUPTED = {
    "train": "interrupted; the last completed epoch is saved: rerun with --resume to continue",
    "train-all": "interrupted; the last completed epoch is saved: rerun with --resume to continue",
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
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED.get(ctx.invoked_subcommand, "interrupted"), err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: one line for the user, the traceback in a log file
            log = write_bug_log(exc)
            click.echo(f"error: {failure_of(exc).message} — this is a bug in convkit: please report it with "
                       f"the log at {log}", err=True)
            sys.exit(EXIT_BUG)


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
