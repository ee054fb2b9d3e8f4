"""The nanoBragg command: the reference's flags, outputs and messages.

    nanoBragg -cell 100 100 100 90 90 90 -default_F 100 -N 5 -distance 100 ...

One process: the flags go through args_to_params() (the same table as
simulate()'s keywords) and _job.run_command() (the same job layer as
simulate()) reads, renders and writes.  NumPy is not imported.  Errors are
one line on stderr ("nanoBragg: error: ..."): exit 2 for usage mistakes, 1
for anything else.  SIGINT, SIGTERM and SIGHUP stop the render within the
engine's poll interval and remove every temporary file: exit 130, 143, 129.
"""

from __future__ import annotations

import os
import sys

# the C module: `signal` itself would add its enum wrappers (1.5 ms) to
# every start of the command
import _signal as signal
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Optional, Sequence

from .params import HELP_FLAGS, UsageError, args_to_params, help_text

PROG = "nanoBragg"


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
    except BrokenPipeError:
        _stdout_gone()


def _say(line: str = "") -> None:
    _write(line + "\n")


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def _stdout_gone() -> None:
    """Nobody reads our messages any more (nanoBragg ... | head): keep working
    and writing the images, silently, and do not fail at exit on the flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _error(msg: str) -> None:
    msg = " ".join(str(msg).split())  # one line
    _flush()
    sys.stderr.write(f"{PROG}: error: {msg}\n")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:      # a bare nanoBragg prints the reference's usage text and status
        from .params import DEFAULT_FILES, USAGE_EXIT, usage_text
        try:
            sys.stdout.write(usage_text(os.path.exists(DEFAULT_FILES["dump"])))
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_gone()
        return USAGE_EXIT
    if any(a in HELP_FLAGS for a in argv):
        _say(help_text().rstrip("\n"))
        _flush()
        return 0
    if "--version" in argv:
        from ._version import __version__
        _say(f"{PROG} (nanobragg) {__version__}")
        return 0
    try:
        with _StopHandlers():
            from . import _job
            return _job.run_command(args_to_params(argv), _write, _flush)
    except UsageError as e:
        _error(e)
        return 2
    except OSError as e:
        _error(_os_message(e))
        return 1
    except MemoryError as e:
        _error(f"out of memory{': ' + str(e) if str(e) else ''}")
        return 1
    except (ValueError, TypeError) as e:
        _error(e)
        return 1
    except ImportError as e:   # an optional library (gemmi, fabio, h5py) is missing
        _error(e)
        return 1
    except KeyboardInterrupt:
        _error("interrupted (SIGINT): nothing written")
        return 128 + signal.SIGINT
    except Stopped as e:
        import signal as named
        _error(f"stopped by {named.Signals(e.signum).name}: nothing written")
        return 128 + e.signum
    except Exception as e:   # a bug: still one line, no traceback (NANOBRAGG_DEBUG=1 shows it)
        if os.environ.get("NANOBRAGG_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (please report it; NANOBRAGG_DEBUG=1 shows the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
