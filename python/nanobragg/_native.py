"""The nanoBragg command's lean path: flags -> plan file -> nanobragg-run.

The command must not need more memory than the reference binary (issue
"Performance": at most 1.5x its peak), and a Python process with NumPy
loaded already needs several times that.  So the command's Python side only
parses the flags, checks them and reads the small inputs (the -mat numbers,
the -sourcefile rows, the header values of -img/-mask), then hands a plan
to ``nanobragg-run``, the small C program installed next to this module,
which loads the structure factors and the mask, renders, prints and writes
the images.  Peak memory is the larger of the two processes, not their sum.

Nothing here imports NumPy or the compiled module ``_core``.  What happens
before the render mirrors :class:`nanobragg.api.Run` with ``cli=True`` (the
in-process path, used when the runner is missing): the same checks in the
same order with the same messages.  The checks that need the resolved setup
(mask size, -printout_pixel, the engine's messages about sources) are made by
the runner.  tests/test_native_cli.py runs both paths and compares them.

The plan format is described at the top of csrc/cli/nanobragg_run.c.
"""

from __future__ import annotations

import os
import sys

from . import _io
from .params import DEFAULT_FILES, UsageError, normalize, params_to_fields

RUNNER = "nanobragg-run"


def runner_path():
    """The installed nanobragg-run, or None (a source tree without a build,
    or NANOBRAGG_NO_RUNNER=1: the command then renders in-process)."""
    if os.environ.get("NANOBRAGG_NO_RUNNER", "") not in ("", "0"):
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, _core_folder(here)):
        exe = os.path.join(folder, RUNNER) if folder else ""
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return None


def _core_folder(here):
    """Where the compiled module is when it is not next to this file (an
    editable install keeps the build products elsewhere); found without
    loading it."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("nanobragg._core")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = os.path.dirname(os.path.abspath(spec.origin))
    return None if folder == here else folder


# ---------------------------------------------------------------- inputs --

def _read_file(path: str, key: str) -> bytes:
    try:
        return _io.read_bytes(path)
    except OSError as e:
        raise type(e)(e.errno, f"cannot read -{key} file '{path}': {e.strerror or e}") from None


def _read_smv(path: str, key: str, notes_pre: list):
    try:
        smv = _io.read_smv_header(path)
    except OSError as e:
        raise type(e)(e.errno, f"cannot read -{key} file '{path}': {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"-{key} {path}: {e}") from None
    _io.check_smv_seed_values(smv, f"-{key} {path}")
    notes_pre.append(f"reading {path}")
    return smv


def _read_mat(path: str, notes_mat: list):
    text = _read_file(path, "mat").decode("latin-1")
    try:
        mat = _io.parse_mat_values(text)
    except ValueError as e:
        raise ValueError(f"-mat {path}: {e}") from None
    notes_mat.append(f"reading {path}")
    return mat


def _read_sources(path: str):
    name = f"-sourcefile {path}"
    text = _read_file(path, "sourcefile").decode("latin-1")
    try:
        rows, lines = _io.read_source_rows(text)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    if not rows:
        raise ValueError(f"{name}: no sources in the file")
    _io.check_source_rows(rows, lambda i: f"{name}: line {lines[i]}")
    return rows, name, lines


def _check_stol(path: str, notes_hkl: list):
    # the reference reads the amorphous F(stol) table and stops when it is empty, but never uses it
    text = _read_file(path, "stol").decode("latin-1")
    notes_hkl.append(f"reading {path}")
    if not _io.read_text_rows(text, 2):
        raise ValueError(f"-stol {path}: no data in the file")


# ------------------------------------------------------------------ plan --

def _text(s: str) -> str:
    """A plan token: the bytes of s (as the OS spells the path), %XX for
    anything outside '!'..'~' and for '%'."""
    out = []
    for b in os.fsencode(s):
        out.append(chr(b) if 0x21 <= b <= 0x7E and b != 0x25 else "%%%02X" % b)
    return "".join(out)


def _number(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def _field_tokens(value) -> str:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (list, tuple)):
        return " ".join(_number(x) for x in value)
    return _number(value)


def prepare(params) -> list:
    """The plan for one command (params: args_to_params() of its flags), as
    lines.  Raises UsageError / ValueError / OSError as api.Run(cli=True)."""
    items = normalize(params)
    last = {}
    for opt, _name, value in items:
        last[opt.key] = value

    # the reference's usage check: structure factors and a crystal are required
    dump_path = last.get("dump", DEFAULT_FILES["dump"])
    if (last.get("hkl") is None and float(last.get("default_F", 0.0)) == 0.0
            and not os.path.isfile(dump_path)):
        raise UsageError(f"no structure factors: give -hkl FILE or -default_F F (no {dump_path} to read)")
    if last.get("cell") is None and last.get("mat") is None:
        raise UsageError("no crystal: give -cell or -mat")

    notes = {"pre": [], "mat": [], "hkl": []}
    # -mask then -img: their headers seed the detector before every flag
    headers = []
    mask = last.get("mask")
    if mask is not None:
        headers.append(("mask", _read_smv(mask, "mask", notes["pre"])))
    if last.get("img") is not None:
        headers.append(("img", _read_smv(last["img"], "img", notes["pre"])))

    # data keywords resolved in flag order
    resolved = []
    sources_name, sources_lines = None, []
    for opt, name, value in items:
        if opt.key == "mat":
            value = _read_mat(value, notes["mat"])
        elif opt.key == "sourcefile":
            value, sources_name, sources_lines = _read_sources(value)
        resolved.append((opt, name, value))
    st = params_to_fields(resolved, headers)
    fields, extras = st.fields, st.extras

    if extras.get("stol") is not None:
        _check_stol(extras["stol"], notes["hkl"])
    for key in ("stol", "4stol", "Q", "stolout", "coherent", "printout", "printout_pixel"):
        if key in last:
            notes["pre"].append(f"note: -{key} is accepted for compatibility and has no effect")

    lines = ["nanobragg-plan 1"]
    for name, value in fields.items():
        if name == "sources":
            continue
        lines.append(f"field {name} {_field_tokens(value)}")
    if "sources" in fields:
        lines.append(f"sources_name {_text(sources_name)}")
        for row, lineno in zip(fields["sources"], sources_lines):
            lines.append("source " + " ".join(_number(x) for x in row) + f" {lineno}")
    pp = extras.get("printout_pixel")
    if pp is not None:
        lines.append(f"printout_pixel {int(pp[0])} {int(pp[1])}")
    if mask is not None:
        lines.append(f"mask {_text(mask)}")

    hkl = last.get("hkl")
    if hkl is not None:
        lines.append(f"hkl {_text(hkl)}")
        lines.append(f"dump {_text(dump_path)}")
    elif os.path.isfile(dump_path):
        lines.append(f"fdump {_text(dump_path)}")
    for kind in ("pre", "mat", "hkl"):
        for note in notes[kind]:
            lines.append(f"note {kind} {_text(note)}")
    lines.append(f"threads {int(extras.get('threads', 0))}")

    lines.append(f"float {_text(extras.get('floatfile', DEFAULT_FILES['floatfile']))}")
    lines.append(f"int {_text(extras.get('intfile', DEFAULT_FILES['intfile']))}")
    if extras.get("write_pgm", True):
        lines.append(f"pgm {_text(extras.get('pgmfile', DEFAULT_FILES['pgmfile']))}")
    if extras.get("noise", True):
        lines.append(f"noise {_text(extras.get('noisefile', DEFAULT_FILES['noisefile']))}")
    lines.append("end")
    return lines


def _write_plan(lines):
    """The plan in a new private temporary file; its path, or None if no
    temporary folder takes it."""
    data = ("\n".join(lines) + "\n").encode("ascii")
    dirs = [os.environ.get(k) for k in ("TMPDIR", "TEMP", "TMP")] + ["/tmp", "/var/tmp", "/usr/tmp", os.getcwd()]
    for d in dirs:
        if not d:
            continue
        path = os.path.join(d, f".nanobragg-plan-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return path
        except OSError:
            _unlink(path)
    return None


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# ------------------------------------------------------------------- run --

def run(params, runner: str):
    """Run one command through the runner: its exit status, or None when the
    runner cannot be started (the caller then renders in-process)."""
    spawn = getattr(os, "posix_spawn", None)    # not on Windows: the caller renders in-process
    if spawn is None:
        return None
    plan = _write_plan(prepare(params))
    if plan is None:
        return None
    import signal
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        # Ctrl-C, SIGTERM and SIGHUP for the command go to the runner (it
        # removes its temporary files and reports them), including one that
        # arrives while it is being started: installed before the spawn, so
        # that no KeyboardInterrupt can leave a runner writing on its own
        pid = None
        pending = []

        def forward(signum, frame):
            if pid is None:
                pending.append(signum)
                return
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, forward)
            except (ValueError, OSError):     # not the main thread
                pass
        try:
            try:
                pid = spawn(runner, [runner, plan], os.environ)
            except OSError:
                if signal.SIGINT in pending:
                    raise KeyboardInterrupt from None
                return None
            for sig in pending:
                forward(sig, None)
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                    break
                except InterruptedError:     # pragma: no cover - retried by Python already
                    pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        _unlink(plan)       # the runner deletes it once read; this covers an early failure
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return code
    sig = -code
    if sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        # stopped from outside (we forwarded it, or it was sent to the runner): end the same way
        sys.stdout.flush()
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (ValueError, OSError):
            pass
        return 128 + sig
    sys.stdout.flush()
    if sig == signal.SIGKILL:
        msg = f"{RUNNER} was killed (signal 9; out of memory?)"
    else:
        msg = f"internal error: {RUNNER} stopped by signal {sig} (please report it)"
    sys.stderr.write(f"nanoBragg: error: {msg}\n")
    sys.stderr.flush()
    return 128 + sig if sig == signal.SIGKILL else 1
