"""The nanoBragg command: the reference's flags, outputs and messages.

    nanoBragg -cell 100 100 100 90 90 90 -default_F 100 -N 5 -distance 100 ...

One process: the flags go through args_to_params() (the same table as
simulate()'s keywords) and _job.run_command() (the same job layer as
simulate()) reads, renders and writes.  NumPy is not imported.  Errors,
exit codes and signals are _console.run_guarded()'s, as for the companion
commands: SIGINT, SIGTERM and SIGHUP stop the render within the engine's
poll interval and remove every temporary file.
"""

from __future__ import annotations

import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Optional, Sequence

from . import _console
from .params import HELP_FLAGS, args_to_params, help_text

PROG = "nanoBragg"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:      # a bare nanoBragg prints the reference's usage text and status
        from .params import DEFAULT_FILES, USAGE_EXIT, usage_text
        _console.write(usage_text(os.path.exists(DEFAULT_FILES["dump"])))
        _console.flush()
        return USAGE_EXIT
    if any(a in HELP_FLAGS for a in argv):
        _console.say(help_text().rstrip("\n"))
        _console.flush()
        return 0
    if "--version" in argv:
        from ._version import __version__
        _console.say(f"{PROG} (nanobragg) {__version__}")
        return 0

    def body() -> int:
        from . import _job
        return _job.run_command(args_to_params(argv), _console.write, _console.flush)
    return _console.run_guarded(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
