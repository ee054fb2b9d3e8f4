"""What the commands (nanoBragg, nonBragg, noisify, float_add) share at the
console: printing to stdout that survives a closed pipe, the one-line
errors with their exit codes, and the signals that stop a run.

run_guarded(prog, body) runs a command's body: exit 2 for a usage mistake,
1 for any other error (one line on stderr, "<prog>: error: ..."), 130, 143
or 129 for SIGINT, SIGTERM or SIGHUP (which unwind like Ctrl-C, so every
temporary file is removed on the way out).
"""

from __future__ import annotations

import os
import sys

# the C module: `signal` itself would add its enum wrappers (1.5 ms) to
# every start of a command
import _signal as signal
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the commands do not load typing
    from typing import Callable

from .params import UsageError


def write(text: str) -> None:
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        stdout_gone()


def say(line: str = "") -> None:
    write(line + "\n")


def flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def stdout_gone() -> None:
    """Nobody reads our messages any more (nanoBragg ... | head): keep working
    and writing the images, silently, and do not fail at exit on the flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def error(prog: str, msg: object) -> None:
    msg = " ".join(str(msg).split())  # one line
    flush()
    sys.stderr.write(f"{prog}: error: {msg}\n")
    sys.stderr.flush()


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.strerror}: '{e.filename}'"
    return e.strerror or str(e)


class Stopped(BaseException):
    """A SIGTERM or SIGHUP: unwinds like KeyboardInterrupt, so that every
    temporary file is removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


class _StopHandlers:
    """SIGTERM and SIGHUP raise Stopped while the command runs (where they
    kept their default action), and get their old handlers back after."""

    def __enter__(self) -> "_StopHandlers":
        self.previous = {}
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            try:
                if signal.getsignal(sig) == signal.SIG_DFL:
                    self.previous[sig] = signal.signal(sig, _stop)
            except (ValueError, OSError):     # not the main thread (main() called from a thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_guarded(prog: str, body: "Callable[[], int]") -> int:
    """body()'s exit status, every failure turned into one line and its code."""
    try:
        with _StopHandlers():
            code = body()
        flush()
        return code
    except UsageError as e:
        error(prog, e)
        return 2
    except OSError as e:
        error(prog, _os_message(e))
        return 1
    except MemoryError as e:
        error(prog, f"out of memory{': ' + str(e) if str(e) else ''}")
        return 1
    except (ValueError, TypeError, OverflowError) as e:
        error(prog, e)
        return 1
    except ImportError as e:   # an optional library (gemmi, fabio, h5py) is missing
        error(prog, e)
        return 1
    except KeyboardInterrupt:
        error(prog, "interrupted (SIGINT): nothing written")
        return 128 + signal.SIGINT
    except Stopped as e:
        import signal as named
        error(prog, f"stopped by {named.Signals(e.signum).name}: nothing written")
        return 128 + e.signum
    except Exception as e:   # a bug: still one line, no traceback (NANOBRAGG_DEBUG=1 shows it)
        if os.environ.get("NANOBRAGG_DEBUG"):
            raise
        error(prog, f"internal error: {type(e).__name__}: {e} (please report it; NANOBRAGG_DEBUG=1 shows "
                    "the traceback)")
        return 1
