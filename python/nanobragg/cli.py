"""The nanoBragg command: the reference's flags, outputs and messages.

    nanoBragg -cell 100 100 100 90 90 90 -default_F 100 -N 5 -distance 100 ...

The flags go through args_to_params() and the same Run as simulate(), so the
command and the Python API cannot disagree.  Errors are one line on stderr
("nanoBragg: error: ..."): exit 2 for usage mistakes, 1 for anything else.
"""

from __future__ import annotations

import math
import os
import sys
from typing import List, Optional, Sequence

from . import _io
from .api import DEFAULT_FILES, Run
from .params import HELP_FLAGS, UsageError, args_to_params, help_text

PROG = "nanoBragg"


def _say(line: str = "") -> None:
    try:
        sys.stdout.write(line + "\n")
    except BrokenPipeError:
        _stdout_gone()


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv):
        _say(help_text().rstrip("\n"))
        _flush()
        return 0
    if "--version" in argv:
        from . import __version__
        _say(f"{PROG} (nanobragg) {__version__}")
        return 0
    try:
        return _run(argv)
    except UsageError as e:
        _error(e)
        return 2
    except OSError as e:
        _error(_os_message(e))
        return 1
    except (ValueError, TypeError, MemoryError) as e:
        _error(e)
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _run(argv: List[str]) -> int:
    params = args_to_params(argv)
    run = Run(params, cli=True)
    x = run.extras

    files = {k: x.get(k, DEFAULT_FILES[k]) for k in ("floatfile", "intfile", "pgmfile", "noisefile")}
    write_pgm = x.get("write_pgm", True)
    write_noise = x.get("noise", True)
    outputs = [files["floatfile"], files["intfile"]]
    if write_pgm:
        outputs.append(files["pgmfile"])
    if write_noise:
        outputs.append(files["noisefile"])
    _io.check_writable(outputs)          # fail before a long render, not after

    if run.hkl_from_text:
        run.write_dump()
    for line in run.log_lines():
        _say(line)
    if run.setup.warn_pix0_ignored and not any("pix0_vector ignored" in l for l in run.setup.log.splitlines()):
        _say("WARNING: -pix0_vector ignored because custom detector vectors (-fdet/-sdet/-odet_vector) are given")
    _flush()

    result = run.render()
    st = result.stats
    if st.get("interpolation_fell_back"):
        h, k, l = st["fallback_hkl"]
        h0, k0, l0 = st["fallback_hkl0"]
        _say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
             % (h, k, l, h0, k0, l0))
        _say("WARNING: further warnings will not be printed! ")
    _say()

    omega = st["solid_angle"]
    _say("solid angle subtended by detector = %g steradian ( %g%% sphere)" % (omega, 100 * omega / 4 / math.pi))

    image = result.float_image
    _say("writing %s as %d %d-byte floats" % (files["floatfile"], image.size, 4))
    result.write_float(files["floatfile"])

    _say("max_I = %g  at %g %g" % (st["max_I"], st["max_I_x"], st["max_I_y"]))
    _say("mean= %g rms= %g rmsd= %g" % (st["mean"], st["rms"], st["rmsd"]))
    int_img, int_scale = result._int()
    _say("intfile_scale = %g" % int_scale)
    _say("writing %s as %d-byte integers" % (files["intfile"], 2))
    _io.atomic_write(files["intfile"], [result._smv_file(int_img)])

    if write_pgm:
        pgm_img, pgm_scale = result._pgm(int_scale)
        _say("pgm_scale = %g" % pgm_scale)
        _say("writing %s as %d-byte integers" % (files["pgmfile"], 1))
        _io.atomic_write(files["pgmfile"], [result._pgm_file(pgm_img, pgm_scale)])

    if write_noise:
        noise = result.noise()
        _say("%.0f photons on noise image (%d overloads)" % (noise.photons, noise.overloads))
        _say("writing %s as %d-byte integers" % (files["noisefile"], 2))
        _io.atomic_write(files["noisefile"], [result._smv_file(noise.image)])
    _flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
