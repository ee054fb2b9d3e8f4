"""The nanoBragg command: the reference's flags, outputs and messages.

    nanoBragg -cell 100 100 100 90 90 90 -default_F 100 -N 5 -distance 100 ...

The flags go through args_to_params(), the same table as simulate()'s
keywords.  Installed, the command is a lean Python front end plus a native
program: _native.py checks the flags, reads the small inputs and hands a
plan to nanobragg-run, which renders and writes the images, so that the
command's peak memory stays that of a small C program (no NumPy, no _core in
this process).  Without the runner (a source tree) it renders in-process
through the same Run as simulate().  Errors are one line on stderr
("nanoBragg: error: ..."): exit 2 for usage mistakes, 1 for anything else.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Dict, List, Optional, Sequence

from . import _io, _native
from .params import DEFAULT_FILES, HELP_FLAGS, UsageError, args_to_params, help_text, params_to_fields

PROG = "nanoBragg"


def _say(line: str = "") -> None:
    try:
        sys.stdout.write(line + "\n")
    except BrokenPipeError:
        _stdout_gone()


def _say_partial(text: str) -> None:
    try:
        sys.stdout.write(text)
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
    # [drop-in] a bare nanoBragg prints the reference's usage text and status
    if not argv:
        from .params import USAGE_EXIT, usage_text
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
    except MemoryError as e:
        _error(f"out of memory{': ' + str(e) if str(e) else ''}")
        return 1
    except (ValueError, TypeError) as e:
        _error(e)
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except _Terminated:
        _error("terminated")
        return 143
    except Exception as e:   # a bug: still one line, no traceback (NANOBRAGG_DEBUG=1 shows it)
        if os.environ.get("NANOBRAGG_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (please report it; NANOBRAGG_DEBUG=1 shows the traceback)")
        return 1


class _Terminated(BaseException):
    """SIGTERM while the outputs are being written."""


@contextlib.contextmanager
def _terminate_cleanly():
    """While the outputs are written, SIGTERM raises _Terminated so that the
    temporary files are removed; elsewhere it keeps its default action."""
    def handler(signum, frame):
        raise _Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):     # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_OUTPUT_FLAGS = (("floatfile", "-floatfile"), ("intfile", "-intfile"), ("pgmfile", "-pgmfile"),
                 ("noisefile", "-noisefile"))


def _outputs(params) -> Dict[str, str]:
    """The files this run will write, by flag, from the parsed flags alone;
    two outputs naming the same file is a usage error (one would be lost)."""
    x = params_to_fields(params).extras
    out = {}
    for key, flag in _OUTPUT_FLAGS:
        if key == "pgmfile" and not x.get("write_pgm", True):
            continue
        if key == "noisefile" and not x.get("noise", True):
            continue
        out[flag] = x.get(key, DEFAULT_FILES[key])
    if "hkl" in params:
        out["-dump"] = params.get("dump", DEFAULT_FILES["dump"])
    seen: Dict[str, str] = {}
    for flag, path in out.items():
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{seen[real]} and {flag} both name '{path}': one output would overwrite the other")
        seen[real] = flag
    return out


def _run(argv: List[str]) -> int:
    params = args_to_params(argv)
    # every output is checked before any input is read or anything rendered
    outputs = _outputs(params)
    _io.check_writable([p for flag, p in outputs.items() if flag != "-dump"])
    runner = _native.runner_path()
    if runner is not None:
        code = _native.run(params, runner)
        if code is not None:
            return code
    from .api import Run   # in-process: NumPy and the compiled engine
    run = Run(params, cli=True)
    x = run.extras

    files = {k: x.get(k, DEFAULT_FILES[k]) for k in ("floatfile", "intfile", "pgmfile", "noisefile")}
    write_pgm = x.get("write_pgm", True)
    write_noise = x.get("noise", True)

    if run.hkl_from_text:
        run.write_dump()
    for line in run.log_lines():
        _say(line)
    if run.setup.warn_pix0_ignored and not any("pix0_vector ignored" in l for l in run.setup.log.splitlines()):
        _say("WARNING: -pix0_vector ignored because custom detector vectors (-fdet/-sdet/-odet_vector) are given")
    _flush()

    result = run.render()
    st = result.stats
    # [drop-in] the reference's progress lines, printed here from the final
    # count (the text is the same as printing them while rendering); the job
    # layer re-points this at the engine's poll callback.
    meter = _reference_meter(run, x)
    if st.get("interpolation_fell_back"):
        if meter is not None:
            meter.update(st["fallback_pixel"])       # the warning comes while that pixel renders
        h, k, l = st["fallback_hkl"]
        h0, k0, l0 = st["fallback_hkl0"]
        _say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
             % (h, k, l, h0, k0, l0))
        # no newline, as the reference: the next progress line (or the blank
        # line after the render) completes it
        _say_partial("WARNING: further warnings will not be printed! ")
    if meter is not None:
        meter.finish()
    _say()

    omega = st["solid_angle"]
    _say("solid angle subtended by detector = %g steradian ( %g%% sphere)" % (omega, 100 * omega / 4 / math.pi))

    # every image goes to a temporary file first; they replace the old files
    # together at the end, so a failed or interrupted run changes nothing
    with _terminate_cleanly(), _io.OutputSet() as out:
        image = result.float_image
        _say("writing %s as %d %d-byte floats" % (files["floatfile"], image.size, 4))
        out.stage(files["floatfile"], [result.float_bytes()])

        _say("max_I = %g  at %g %g" % (st["max_I"], st["max_I_x"], st["max_I_y"]))
        _say("mean= %g rms= %g rmsd= %g" % (st["mean"], st["rms"], st["rmsd"]))
        int_img, int_scale = result._int()
        _say("intfile_scale = %g" % int_scale)
        _say("writing %s as %d-byte integers" % (files["intfile"], 2))
        out.stage(files["intfile"], [result._smv_file(int_img)])
        del int_img

        if write_pgm:
            pgm_img, pgm_scale = result._pgm(int_scale)
            _say("pgm_scale = %g" % pgm_scale)
            _say("writing %s as %d-byte integers" % (files["pgmfile"], 1))
            out.stage(files["pgmfile"], [result._pgm_file(pgm_img, pgm_scale)])
            del pgm_img

        if write_noise:
            noise = result.noise()
            _say("%.0f photons on noise image (%d overloads)" % (noise.photons, noise.overloads))
            _say("writing %s as %d-byte integers" % (files["noisefile"], 2))
            out.stage(files["noisefile"], [result._smv_file(noise.image)])
            del noise
        out.commit()
    _flush()
    return 0


def _reference_meter(run, extras):
    """[drop-in] The "% done" meter of this run, or None (-noprogress, -printout)."""
    if not extras.get("progress", True) or extras.get("printout") or extras.get("printout_pixel"):
        return None
    from ._progress import ReferenceMeter
    g = run.setup.geometry
    return ReferenceMeter(g["fpixels"], g["spixels"], (g["roi_xmin"], g["roi_xmax"], g["roi_ymin"], g["roi_ymax"]),
                          _say, mask=run.mask)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
