"""Command-line interface: ``coarse2fine COMMAND ...`` (``python -m coarse2fine.cli`` under torchrun).

The commands live by what they do: :mod:`.training` (demo, experiment, train, pretrain,
pretrain-experiment, crossval), :mod:`.data` (pack), :mod:`.check` (check), :mod:`.models` (predict,
export-hf, export-onnx) and :mod:`.reports` (compare, stats, flops, bench, plan, presets). Errors a user
can fix end the command with one line on stderr and exit code 2; a non-finite loss, with exit code 3.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
from typing import Sequence

from coarse2fine import __version__
from coarse2fine.cli import check, data, models, reports, training
from coarse2fine.cli.options import Parser
from coarse2fine.extras import MissingExtraError
from coarse2fine.training.distributed import leave
from coarse2fine.training.interrupt import RunInterrupted, restore_handlers
from coarse2fine.training.loop import NonFiniteLossError

log = logging.getLogger("coarse2fine")

COMMANDS = {**training.COMMANDS, **data.COMMANDS, **models.COMMANDS, **reports.COMMANDS, **check.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """The ``coarse2fine`` parser with every subcommand's (each option's help shows its default)."""
    parser = Parser(prog="coarse2fine", description="Coarse-to-fine training of audio spectrogram transformers.")
    parser.add_argument("--version", action="version", version=f"coarse2fine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    training.add_parsers(sub)
    data.add_parsers(sub)
    models.add_parsers(sub)
    check.add_parsers(sub)
    reports.add_parsers(sub)
    return parser


def setup_logging(quiet: bool) -> None:
    """Log to stderr: INFO and up, or warnings and errors only with ``--quiet``. Under torchrun
    only the main process (RANK 0) logs the run's progress; the others log warnings and errors
    only, each line naming its rank, so N processes do not print every line N times."""
    rank = int(os.environ.get("RANK", "0"))
    where = f" [rank {rank}]" if rank else ""
    logging.basicConfig(level=logging.WARNING if quiet or rank else logging.INFO,
                        format=f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s", datefmt="%H:%M:%S")


def process_output() -> contextlib.AbstractContextManager:
    """Where a command prints its results: stdout, or nowhere in a torchrun process other than
    the main one (RANK 0), whose output would repeat the main process's."""
    return contextlib.nullcontext() if int(os.environ.get("RANK", "0")) == 0 else contextlib.redirect_stdout(io.StringIO())


def error_text(err: BaseException) -> str:
    """An error's message for its one line: a loader worker's error is re-raised by the
    ``DataLoader`` with the worker's traceback in its message; that comes back to the original
    message (the traceback's last, unindented lines, less the exception's type name)."""
    text = str(err)
    head, sep, tail = text.partition("\nOriginal Traceback (most recent call last):\n")
    if not sep or not head.startswith("Caught "):
        return text
    lines = tail.splitlines()
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if start is None:
        return text
    return re.sub(r"^[\w.]+: ", "", "\n".join(lines[start:]).strip(), count=1)


def say(text: str) -> None:
    """A command's closing line on stderr; under torchrun, a process other than the main one
    names its rank, as its log lines do (each process says where it stopped)."""
    rank = int(os.environ.get("RANK", "0"))
    print(text.replace("coarse2fine:", f"coarse2fine [rank {rank}]:", 1) if rank else text, file=sys.stderr)


def ignore_late_signals() -> dict[int, object]:
    """Ignore SIGINT and SIGTERM from now on: the command's work is done and written, and a Ctrl-C
    that arrives while the process exits must not turn a finished command into exit 130 (a script
    would take the finished run for an interrupted one). Returns the handlers it replaced."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if threading.current_thread() is threading.main_thread():
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Called with ``argv`` (from Python), it leaves the signal handlers as it
    found them; as the program (``argv`` None), a signal after the command finished is ignored
    until the process has exited."""
    args = build_parser().parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    setup_logging(args.quiet)
    try:
        with process_output():
            code = COMMANDS[args.command](args)
        previous = ignore_late_signals()
        try:
            leave(wait=True)  # under torchrun every process got here: leave together
        finally:
            if argv is not None and threading.current_thread() is threading.main_thread():
                restore_handlers(previous)
        return code
    except NonFiniteLossError as err:
        say(f"coarse2fine: stopped: {err}")
        leave(wait=True)  # all processes stop at the same read of the loss
        return 3
    except RunInterrupted as err:
        say(f"coarse2fine: stopped: {err}")
        leave(wait=True)  # all processes agreed to stop at this step
        return err.exit_code
    except KeyboardInterrupt:
        say("coarse2fine: interrupted; what was finished is kept (a run continues from its last checkpoint, a "
            "pack from its finished shards, when the same command runs again)")
        return 130
    except (ValueError, FileNotFoundError, MissingExtraError) as err:
        say(f"coarse2fine: error: {error_text(err)}")
        return 2
    except BrokenPipeError:  # the reader of the output went (`coarse2fine check my.yaml | head`): stop quietly
        _drop_stdout()
        return 128 + 13  # as a shell reports SIGPIPE


def _drop_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's flush at exit does not
    fail on the closed pipe again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured)
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)


if __name__ == "__main__":
    sys.exit(main())
