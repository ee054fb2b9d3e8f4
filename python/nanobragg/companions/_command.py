"""What the companion commands (nonBragg, noisify, float_add) share: their
flag tables, the parser, and the one-line error handling.

Each command has its own table of :class:`Flag` (their flag sets differ from
nanoBragg's).  As the ``nanoBragg`` command, flags match by exact name: the
names are the reference's spellings plus the other spellings that the
reference's substring matching acts on and that people use (``-thickness``
for ``-thick``, ``-readout`` for ``-readout_noise``).  An unknown flag, a
missing value or a value that is not a number is a usage error (the
reference ignores or ``atof``\\ s it).  Flags are applied left to right, so
the last of repeated settings wins.
"""

from __future__ import annotations

import struct
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the commands do not load typing
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._console import flush, run_guarded, say
from .._io import check_distinct_outputs as check_distinct, read_input
from ..params import UsageError, _token_value

HELP_FLAGS = ("-h", "-help", "--help")


class Flag:
    """One command-line flag: its spellings, its values and what it sets."""
    __slots__ = ("names", "kind", "n", "units", "help", "key")

    def __init__(self, names: Tuple[str, ...], kind: str, n: int, units: str, help: str, key: str):
        # kind: switch float int path word
        self.names, self.kind, self.n, self.units, self.help, self.key = names, kind, n, units, help, key


def table(rows: Sequence[Tuple[Any, str, int, str, str, str]]) -> Dict[str, Flag]:
    """name -> Flag from rows of (names, kind, nvalues, units, help, key)."""
    out: Dict[str, Flag] = {}
    for names, kind, n, units, help, key in rows:
        names = (names,) if isinstance(names, str) else tuple(names)
        f = Flag(names, kind, n, units, help, key)
        for name in names:
            assert name not in out, name
            out[name] = f
    return out


def parse(argv: Sequence[str], flags: Dict[str, Flag],
          positional: Optional[Callable[[str, List[Tuple[str, Any]]], bool]] = None) -> List[Tuple[str, Any]]:
    """The command line as (key, value) in order.  positional(arg, out) may
    take a non-flag argument (returns True); otherwise it is an error."""
    out: List[Tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        f = flags.get(arg)
        if f is None:
            if positional is not None and positional(arg, out):
                i += 1
                continue
            if arg.startswith("-"):
                hint = _suggest(arg, flags)
                raise UsageError(f"unknown flag {arg}" + (f" (did you mean {hint}?)" if hint else ""))
            raise UsageError(f"unexpected argument '{arg}'")
        vals = argv[i + 1:i + 1 + f.n]
        if len(vals) < f.n:
            what = {"int": "an integer", "float": "a number"}.get(f.kind, "a value")
            if f.n > 1:
                what = f"{f.n} values"
            raise UsageError(f"{arg} expects {what}" + (f" ({f.units})" if f.units else "") + ", got none"
                             if not vals else f"{arg} expects {what}, got {len(vals)}")
        if f.kind == "switch":
            v: Any = True
        elif f.kind in ("float", "int"):
            got = [_token_value(f, arg, t, f.kind) for t in vals]
            v = got[0] if f.n == 1 else tuple(got)
        else:
            if not vals[0]:
                raise UsageError(f"{arg}: empty file name")
            v = vals[0]
        out.append((f.key, v))
        i += 1 + f.n
    return out


def _suggest(name: str, flags: Dict[str, Flag]) -> Optional[str]:
    import difflib
    best = difflib.get_close_matches(name, list(flags), n=1, cutoff=0.6)
    return best[0] if best else None


def help_text(prog: str, about: str, flags: Dict[str, Flag]) -> str:
    lines = [f"usage: {prog} [options]", about, "options:"]
    seen = set()
    for f in flags.values():
        if id(f) in seen:
            continue
        seen.add(id(f))
        spell = ", ".join(f.names)
        units = f" ({f.units})" if f.units else ""
        lines.append(f"  {spell:<34} {f.help}{units}")
    return "\n".join(lines) + "\n"


def float32(x: float) -> float:
    """x rounded to single precision, as a C float variable holds it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def c_int(v: int, what: str) -> int:
    if not -2**31 <= v <= 2**31 - 1:
        raise UsageError(f"{what}: {v} is out of range for a C int")
    return v


def run_command(prog: str, run: Callable[[List[str]], int], argv: Optional[Sequence[str]],
                help: Callable[[], str]) -> int:
    """Run a command: -h prints its help, else run(argv) through the one
    failure handling of every command (nanobragg._console.run_guarded)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv):
        say(help().rstrip("\n"))
        return 0
    return run_guarded(prog, lambda: run(argv))


def detector_size(s: Dict[str, Any]) -> Tuple[float, float, int, int]:
    """The companions' detector-size flags as their references read them, in
    command-line order (a later -detpixels resets both axes): (size x, size y
    in m; pixels x, pixels y, 0 where not given)."""
    dx = dy = 102.4e-3
    nx = ny = 0
    for k, v in s.items():
        if k == "detsize":
            dx = dy = v / 1000.0
        elif k == "detsize_x":
            dx = v / 1000.0
        elif k == "detsize_y":
            dy = v / 1000.0
        elif k == "detpixels":
            nx = ny = v
        elif k == "detpixels_x":
            nx = v
        elif k == "detpixels_y":
            ny = v
    return dx, dy, nx, ny


def read_file(path: str, label: str, key: str) -> bytes:
    """A whole input file, bounded as every input is (nanobragg._io.read_input)."""
    return bytes(read_input(path, label, key))


MAX_PIXELS = 1 << 28      # as the engine's NB_MAX_PIXELS: 1 GiB per float image
