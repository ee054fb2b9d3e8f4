"""Every bad input gets one clear error; nothing crashes, nothing is lost.

One table of bad inputs, by category (option values, limits, input files,
outputs), each row run through the `nanoBragg` command in a scratch folder
holding the inputs and a set of pre-existing outputs with known bytes:

* the exit status is 2 (usage) or 1 (anything else), never a signal;
* stderr is exactly one line, "nanoBragg: error: ...", holding the expected
  fragment, and no traceback;
* the pre-existing outputs are byte-for-byte untouched and no temporary
  file is left behind.

The rows that have a simulate() form run through it too: the expected exception type
(TypeError/ValueError/OSError) with the same kind of message, and nothing
printed.  Failures while writing are run for real (a file-size limit makes
the write fail after the render; Ctrl-C during the render) and in-process at
a chosen point (ENOSPC, Ctrl-C, SIGTERM or a bug once three of the four
images are staged).  See docs/reliability.md.
"""
import errno
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nanobragg._core", reason="the compiled engine is not built")

from nanobragg import _core, _job, simulate  # noqa: E402
from nanobragg.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
INPUTS = REPO / "golden" / "inputs"
CLI = [sys.executable, "-m", "nanobragg"]
TIMEOUT = 300

# a quick, valid run; the rows add the one bad thing
BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "2", "-detpixels", "16",
        "-seed", "1"]
BASE_KW = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=2, detpixels=16, seed=1)
# outputs that exist before every run, with bytes no run would write
OLD_OUTPUTS = {name: f"old {name} - must survive\n".encode() for name in
               ("floatimage.bin", "intimage.img", "noiseimage.img", "image.pgm")}


def _permissions_apply() -> bool:
    """False for root (or CAP_DAC_OVERRIDE): a mode-0 file still opens."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "probe"
        p.write_text("x")
        p.chmod(0)
        try:
            p.open().close()
            return False
        except PermissionError:
            return True
        finally:
            p.chmod(0o600)


PERMISSIONS_APPLY = _permissions_apply()


@pytest.fixture
def cli_env():
    """The environment of the command under test (no debug tracebacks)."""
    env = dict(os.environ)
    env.pop("NANOBRAGG_DEBUG", None)
    return env


# ---------------------------------------------------------------- inputs --

def _fdump_bytes():
    return _core.Hkl.from_text((INPUTS / "small.hkl").read_bytes(), 0.0).fdump()


def make_inputs(d: Path) -> None:
    """Good and bad input files, named after what is wrong with them."""
    for name in ("small.hkl", "A.mat", "header.img", "mask.img", "sources.txt"):
        shutil.copy(INPUTS / name, d / name)
    w = lambda name, data: (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())  # noqa: E731
    # HKL
    w("bad_line.hkl", "1 2 3 40\n0 0 1 50\n1 x 2 30\n")
    w("short_line.hkl", "1 2 3 40\n1 2 3\n")
    w("fractional.hkl", "1 2.5 3 40\n")
    w("nan_F.hkl", "1 2 3 nan\n")
    w("comments_only.hkl", "# h k l F\n\n")
    w("binary.hkl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    w("huge_range.hkl", "-600 -600 -600 1\n600 600 600 1\n")
    # Fdump
    dump = _fdump_bytes()
    w("truncated_Fdump.bin", dump[:-100])
    w("foreign_Fdump.bin", b"GIF89a" + bytes(200))
    w("huge_Fdump.bin", b"-1000 1000 -1000 1000 -1000 1000\n\f" + bytes(64))
    # -mat
    w("short.mat", "0.01 0 0\n0 0.01\n")
    w("bad.mat", "0.01 0 0\n0 x 0\n0 0 0.01\n")
    w("nan.mat", "0.01 0 0\n0 nan 0\n0 0 0.01\n")
    w("singular.mat", "0 0 0\n0 0 0\n0 0 0\n")
    # SMV
    header = (INPUTS / "header.img").read_bytes()
    w("not_smv.img", b"P5\n100 80\n255\n" + bytes(8000))
    w("truncated.img", header[:1000])
    w("zero_pixel.img", header.replace(b"PIXEL_SIZE=0.12", b"PIXEL_SIZE=0.00"))
    # -sourcefile
    w("empty_sources.txt", "\n\n")
    w("bad_sources.txt", "-10 0 0\n-10 0 zero\n")
    w("zero_sources.txt", "-10 0 0\n0 0 0 1 1e-10\n")
    w("negative_lambda_sources.txt", "-10 0 0 1 -1e-10\n")
    (d / "a_directory").mkdir()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    make_inputs(d)
    return d


@pytest.fixture
def workdir(inputs, tmp_path):
    """A scratch folder: the inputs plus pre-existing outputs."""
    d = tmp_path / "run"
    shutil.copytree(inputs, d)
    for name, data in OLD_OUTPUTS.items():
        (d / name).write_bytes(data)
    return d


def snapshot(d: Path):
    def content(p):
        try:
            return p.read_bytes() if p.is_file() else None
        except PermissionError:          # the unreadable input
            return "unreadable"
    return {str(p.relative_to(d)): content(p) for p in sorted(d.rglob("*"))}


def temp_files(d: Path):
    return [str(p) for p in d.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def assert_nothing_lost(d: Path, before):
    for name, data in OLD_OUTPUTS.items():
        assert (d / name).read_bytes() == data, f"{name} was changed"
    after = snapshot(d)
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not changed, f"files changed: {changed}"
    assert not temp_files(d), f"temporary files left behind: {temp_files(d)}"


def one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("nanoBragg: error: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------- table --

class Row:
    """One bad input: CLI args (added to BASE unless base=False), the exit
    code and a message fragment; optionally the same through simulate()."""

    def __init__(self, id, category, args, code, fragment, kw=None, exc=None, api_fragment=None, base=True,
                 root_ok=True):
        self.id, self.category, self.args, self.code, self.fragment = id, category, args, code, fragment
        # simulate() names keywords where the command line names flags
        if api_fragment is None and fragment is not None:
            api_fragment = fragment[1:] if re.match(r"-[A-Za-z]", fragment) else fragment
        self.kw, self.exc, self.api_fragment = kw, exc, api_fragment
        self.base, self.root_ok = base, root_ok

    def argv(self):
        return (BASE if self.base else []) + self.args.split()

    def kwargs(self):
        kw = dict(BASE_KW) if self.base else {}
        kw.update(self.kw)
        return kw


ROWS = [
    # --- option values: parsed strictly, usage errors (exit 2) ------------------
    Row("not-a-number", "value", "-lambda abc", 2, "-lambda expects a number (Angstrom), got 'abc'",
        kw={"wavelength": "abc"}, exc=ValueError, api_fragment="wavelength: expected a number"),
    Row("nan-value", "value", "-distance nan", 2, "-distance expects a number",
        kw={"distance": float("nan")}, exc=ValueError, api_fragment="distance: expected a finite number"),
    Row("missing-value", "value", "-lambda", 2, "-lambda expects a number (Angstrom), got none"),
    Row("bad-choice", "value", "-skip_negligible maybe", 2, "-skip_negligible expects one of auto|on|off, got 'maybe'",
        kw={"skip_negligible": "maybe"}, exc=ValueError,
        api_fragment="skip_negligible: expected one of auto, on, off, got 'maybe'"),
    Row("option-as-value", "value", "-hkl -mat A.mat", 2, "-hkl expects a file name, got the option '-mat'"),
    Row("too-few-numbers", "value", "-cell 100 100", 2, "-cell expects 6 numbers",
        kw={"cell": (100, 100)}, exc=ValueError, api_fragment="cell: expected 6 numbers, got 2"),
    Row("not-an-integer", "value", "-detpixels 2.5", 2, "-detpixels expects an integer",
        kw={"detpixels": 2.5}, exc=ValueError, api_fragment="detpixels: expected an integer"),
    Row("integer-overflow", "value", "-detpixels 99999999999", 2, "-detpixels: 99999999999 is out of range",
        kw={"detpixels": 99999999999}, exc=ValueError, api_fragment="out of range"),
    Row("seed-overflow", "value", "-seed 99999999999999999999", 2, "-seed: 99999999999999999999 is out of range",
        kw={"seed": 2**70}, exc=ValueError, api_fragment="out of range"),
    Row("zero-wavelength", "value", "-lambda 0", 2, "-lambda: the wavelength must be > 0, got 0 A",
        kw={"wavelength": 0}, exc=ValueError, api_fragment="wavelength: the wavelength must be > 0, got 0 A"),
    Row("negative-wavelength", "value", "-lambda -1", 2, "-lambda: the wavelength must be > 0, got -1 A",
        kw={"wavelength": -1}, exc=ValueError, api_fragment="wavelength: the wavelength must be > 0, got -1 A"),
    Row("zero-energy", "value", "-energy 0", 2, "-energy: must be > 0",
        kw={"energy": 0}, exc=ValueError),
    Row("zero-distance", "value", "-distance 0", 2, "-distance: the detector distance must be > 0, got 0 mm",
        kw={"distance": 0}, exc=ValueError),
    Row("negative-pixel-size", "value", "-pixel -0.1", 2, "-pixel: the pixel size must be > 0, got -0.1 mm",
        kw={"pixel": -0.1}, exc=ValueError),
    Row("zero-pixels", "value", "-detpixels 0", 2, "-detpixels: must be > 0",
        kw={"detpixels": 0}, exc=ValueError),
    Row("negative-pixels", "value", "-detpixels_x -5", 2, "-detpixels_x: must be > 0",
        kw={"detpixels_x": -5}, exc=ValueError),
    Row("zero-detsize", "value", "-detsize 0", 2, "-detsize: must be > 0",
        kw={"detsize": 0}, exc=ValueError),
    Row("negative-N", "value", "-N -1", 2, "-N: the number of unit cells must be >= 0, got -1", kw={"N": -1}, exc=ValueError),
    Row("negative-oversample", "value", "-oversample -2", 2, "-oversample: must be >= 0",
        kw={"oversample": -2}, exc=ValueError),
    Row("negative-thicksteps", "value", "-detector_thicksteps -3", 2, "-detector_thicksteps: must be >= 0",
        kw={"detector_thicksteps": -3}, exc=ValueError),
    Row("negative-mosaic-domains", "value", "-mosaic_domains -2", 2, "-mosaic_domains: must be >= 0",
        kw={"mosaic_domains": -2}, exc=ValueError),
    Row("negative-phisteps", "value", "-phisteps -1", 2, "-phisteps: must be >= 0",
        kw={"phisteps": -1}, exc=ValueError),
    Row("negative-divsteps", "value", "-divsteps -4", 2, "-divsteps: must be >= 0",
        kw={"divsteps": -4}, exc=ValueError),
    Row("bad-cell-angle", "value", "-cell 100 100 100 0 90 90", 2, "cell angles must be between 0 and 180",
        kw={"cell": (100, 100, 100, 0, 90, 90)}, exc=ValueError),
    Row("inverted-roi", "value", "-roi 10 5 0 10", 2, "-roi: 10 5 0 10 is inverted",
        kw={"roi": (10, 5, 0, 10)}, exc=ValueError, api_fragment="roi: 10 5 0 10 is inverted"),
    Row("printout-pixel-off-detector", "value", "-printout_pixel 16 3", 2,
        "-printout_pixel 16 3: outside the 16 x 16 pixel detector",
        kw={"printout_pixel": (3, 99)}, exc=ValueError, api_fragment="printout_pixel 3 99: outside"),
    Row("unknown-option", "value", "-lamda 1", 2, "unknown option '-lamda' (did you mean '-lambda'?)",
        kw={"lamda": 1}, exc=TypeError, api_fragment="'lamda' (did you mean 'lambda'?)"),
    Row("stray-argument", "value", "100", 2, "unexpected argument '100'"),
    Row("no-crystal", "value", "-default_F 1", 2, "no crystal: give -cell or -mat", base=False,
        kw={"default_F": 1}, exc=ValueError, api_fragment="no crystal: give cell or mat"),
    Row("no-structure-factors", "value", "-cell 100 100 100 90 90 90", 2, "no structure factors", base=False,
        kw={"cell": (100, 100, 100, 90, 90, 90)}, exc=ValueError),
    Row("same-output-twice", "value", "-floatfile x.img -intfile ./x.img", 2,
        "-floatfile and -intfile both name './x.img'"),

    # --- values that are fine alone but not together, and absurd sizes (exit 1)
    Row("roi-outside-detector", "limit", "-roi 20 30 0 5", 1, "-roi 20 30 0 5 lies outside the 16 x 16 pixel detector",
        kw={"roi": (20, 30, 0, 5)}, exc=ValueError, api_fragment="-roi 20 30 0 5 lies outside"),
    Row("detector-too-large", "limit", "-detpixels 100000", 1, "detector of 100000 x 100000 pixels needs 40.0 GB",
        kw={"detpixels": 100000}, exc=ValueError),
    Row("too-many-phi-steps", "limit", "-osc 360 -phistep 0.000001", 1, "3.6e+08 phi steps",
        kw={"osc": 360, "phistep": 1e-6}, exc=ValueError),
    Row("too-many-sources", "limit", "-divergence 1 -divsteps 20000", 1, "sources: too many",
        kw={"divergence": 1, "divsteps": 20000}, exc=ValueError),
    Row("too-many-orientations", "limit", "-mosaic 1 -mosaic_domains 100000 -phisteps 1000", 1,
        "crystal orientations (7.2 GB): too many",
        kw={"mosaic": 1, "mosaic_domains": 100000, "phisteps": 1000}, exc=ValueError),
    Row("oversample-too-large", "limit", "-oversample 5000", 1, "oversample 5000 is too large",
        kw={"oversample": 5000}, exc=ValueError),
    Row("automatic-oversample-absurd", "limit", "-N 100000", 1, "automatic oversampling would be 30000-fold",
        kw={"N": 100000}, exc=ValueError),
    Row("dispersion-too-wide", "limit", "-dispersion 250", 1, "dispersion of 250% would make wavelengths <= 0",
        kw={"dispersion": 250}, exc=ValueError),
    Row("flux-without-beam", "limit", "-flux 1e12 -beamsize 0", 1, "-flux with -beamsize 0",
        kw={"flux": 1e12, "beamsize": 0}, exc=ValueError, api_fragment="-flux with -beamsize 0"),

    # --- input files (exit 1) -------------------------------------------------------
    Row("hkl-missing", "file", "-hkl nothing.hkl", 1, "cannot read -hkl file 'nothing.hkl': No such file",
        kw={"hkl": "nothing.hkl"}, exc=FileNotFoundError, api_fragment="cannot read hkl file 'nothing.hkl'"),
    Row("hkl-is-directory", "file", "-hkl a_directory", 1, "cannot read -hkl file 'a_directory': Is a directory",
        kw={"hkl": "a_directory"}, exc=IsADirectoryError,
        api_fragment="cannot read hkl file 'a_directory': Is a directory"),
    Row("hkl-bad-line", "file", "-hkl bad_line.hkl", 1, "-hkl bad_line.hkl: line 3: k is not a number",
        kw={"hkl": "bad_line.hkl"}, exc=ValueError, api_fragment="hkl bad_line.hkl: line 3"),
    Row("hkl-short-line", "file", "-hkl short_line.hkl", 1, "line 2: expected 4 numbers (h k l F), found 3",
        kw={"hkl": "short_line.hkl"}, exc=ValueError),
    Row("hkl-fractional-index", "file", "-hkl fractional.hkl", 1, "line 1: k = 2.5 is not an integral Miller index",
        kw={"hkl": "fractional.hkl"}, exc=ValueError),
    Row("hkl-nan-F", "file", "-hkl nan_F.hkl", 1, "line 1: F = nan is not a finite number",
        kw={"hkl": "nan_F.hkl"}, exc=ValueError),
    Row("hkl-no-reflections", "file", "-hkl comments_only.hkl", 1, "no reflections",
        kw={"hkl": "comments_only.hkl"}, exc=ValueError),
    Row("hkl-binary", "file", "-hkl binary.hkl", 1, "-hkl binary.hkl: binary data (a NUL byte at offset 8)",
        kw={"hkl": "binary.hkl"}, exc=ValueError),
    Row("hkl-too-large", "file", "-hkl huge_range.hkl", 1, "GB): too large",
        kw={"hkl": "huge_range.hkl"}, exc=ValueError),
    Row("hkl-array-shape", "file", None, None, None,
        kw={"hkl": np.zeros((3, 3))}, exc=ValueError, api_fragment="hkl: expected an (n, 4) array"),
    Row("hkl-array-nan", "file", None, None, None,
        kw={"hkl": [[1, 2, 3, float("nan")]]}, exc=ValueError, api_fragment="hkl: non-finite values"),
    Row("fdump-truncated", "file", "-default_F 0 -dump truncated_Fdump.bin", 1,
        "-dump truncated_Fdump.bin: Fdump: 3996 data bytes for a grid that needs 4096 (truncated or foreign file)",
        kw={"default_F": 0, "dump": "truncated_Fdump.bin"}, exc=ValueError, api_fragment="truncated or foreign"),
    Row("fdump-foreign", "file", "-default_F 0 -dump foreign_Fdump.bin", 1, "not an Fdump.bin file",
        kw={"default_F": 0, "dump": "foreign_Fdump.bin"}, exc=ValueError),
    Row("fdump-too-large", "file", "-default_F 0 -dump huge_Fdump.bin", 1, "GB) is too large",
        kw={"default_F": 0, "dump": "huge_Fdump.bin"}, exc=ValueError),
    Row("mat-missing", "file", "-mat nothing.mat", 1, "cannot read -mat file 'nothing.mat'",
        kw={"mat": "nothing.mat"}, exc=FileNotFoundError, api_fragment="cannot read mat file 'nothing.mat'"),
    Row("mat-short", "file", "-mat short.mat", 1, "-mat short.mat: expected 9 numbers (3 lines of 3), found 5",
        kw={"mat": "short.mat"}, exc=ValueError),
    Row("mat-bad-line", "file", "-mat bad.mat", 1, "-mat bad.mat: line 2: 'x' is not a number",
        kw={"mat": "bad.mat"}, exc=ValueError),
    Row("mat-nan", "file", "-mat nan.mat", 1, "-mat nan.mat: line 2: 'nan' is not a number",
        kw={"mat": "nan.mat"}, exc=ValueError),
    Row("mat-singular", "file", "-default_F 100 -N 2 -detpixels 16 -mat singular.mat", 1,
        "the orientation matrix is singular", base=False,
        kw={"default_F": 100, "N": 2, "detpixels": 16, "mat": "singular.mat"}, exc=ValueError),
    Row("mat-array-shape", "file", None, None, None,
        kw={"mat": np.eye(2)}, exc=ValueError, api_fragment="mat: expected a file name or a 3x3 array"),
    Row("img-not-smv", "file", "-img not_smv.img", 1, "-img not_smv.img: SMV: not an SMV/ADSC image",
        kw={"img": "not_smv.img"}, exc=ValueError),
    Row("img-truncated", "file", "-img truncated.img", 1, "SMV: 100 x 80 image needs 16000 data bytes, file has 488",
        kw={"img": "truncated.img"}, exc=ValueError),
    Row("img-bad-header-value", "file", "-img zero_pixel.img", 1, "header PIXEL_SIZE=0 must be positive",
        kw={"img": "zero_pixel.img"}, exc=ValueError),
    Row("mask-missing", "file", "-mask nothing.img", 1, "cannot read -mask file 'nothing.img'",
        kw={"mask": "nothing.img"}, exc=FileNotFoundError, api_fragment="cannot read mask file 'nothing.img'"),
    Row("mask-not-smv", "file", "-mask small.hkl", 1, "-mask small.hkl: SMV: not an SMV/ADSC image",
        kw={"mask": "small.hkl"}, exc=ValueError),
    Row("mask-array-size", "file", None, None, None,
        kw={"mask": np.ones((5, 7))}, exc=ValueError, api_fragment="the mask is 7x5 pixels but the detector is 16x16"),
    Row("sourcefile-missing", "file", "-sourcefile nothing.txt", 1, "cannot read -sourcefile file 'nothing.txt'",
        kw={"sourcefile": "nothing.txt"}, exc=FileNotFoundError,
        api_fragment="cannot read sourcefile file 'nothing.txt'"),
    Row("sourcefile-empty", "file", "-sourcefile empty_sources.txt", 1, "no sources in the file",
        kw={"sourcefile": "empty_sources.txt"}, exc=ValueError),
    Row("sourcefile-bad-line", "file", "-sourcefile bad_sources.txt", 1,
        "-sourcefile bad_sources.txt: line 2: Z 'zero' is not a number",
        kw={"sourcefile": "bad_sources.txt"}, exc=ValueError),
    Row("sourcefile-zero-direction", "file", "-sourcefile zero_sources.txt", 1,
        "-sourcefile zero_sources.txt: line 2: the source position 0 0 0",
        kw={"sourcefile": "zero_sources.txt"}, exc=ValueError),
    Row("sourcefile-bad-wavelength", "file", "-sourcefile negative_lambda_sources.txt", 1,
        "line 1: the wavelength -1e-10 m must be positive",
        kw={"sourcefile": "negative_lambda_sources.txt"}, exc=ValueError),
    Row("sourcefile-array-zero", "file", None, None, None,
        kw={"sourcefile": [[-10, 0, 0], [0, 0, 0]]}, exc=ValueError, api_fragment="sourcefile: row 1: the source position"),
    Row("unreadable-file", "file", "-hkl unreadable.hkl", 1, "cannot read -hkl file 'unreadable.hkl': Permission denied",
        kw={"hkl": "unreadable.hkl"}, exc=PermissionError, root_ok=False,
        api_fragment="cannot read hkl file 'unreadable.hkl': Permission denied"),

    # --- outputs: checked before anything is read or rendered (exit 1) --------
    Row("output-directory-missing", "output", "-floatfile no_such_dir/float.bin", 1,
        "cannot write 'no_such_dir/float.bin': directory"),
    Row("output-is-a-directory", "output", "-noisefile a_directory", 1, "cannot write 'a_directory': it is a directory"),
    Row("output-not-writable", "output", "-intfile read_only/int.img", 1, "cannot write 'read_only/int.img'",
        root_ok=False),
]
CLI_ROWS = [r for r in ROWS if r.args is not None]
API_ROWS = [r for r in ROWS if r.kw is not None]


def _prepare(row, d: Path):
    if not row.root_ok and not PERMISSIONS_APPLY:
        pytest.skip("file permissions do not apply to this user (root)")
    if row.id == "unreadable-file":
        p = d / "unreadable.hkl"
        p.write_text("1 2 3 4\n")
        p.chmod(0)
    if row.id == "output-not-writable":
        (d / "read_only").mkdir()
        (d / "read_only").chmod(0o555)


@pytest.mark.parametrize("row", CLI_ROWS, ids=[f"{r.category}-{r.id}" for r in CLI_ROWS])
def test_cli_bad_input(row, workdir, cli_env):
    _prepare(row, workdir)
    before = snapshot(workdir)
    p = subprocess.run(CLI + row.argv(), cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT, env=cli_env)
    assert p.returncode >= 0, f"killed by signal {-p.returncode}:\n{p.stderr[-2000:]}"
    line = one_error_line(p.stderr)
    assert p.returncode == row.code, f"exit {p.returncode}, expected {row.code}: {line}"
    assert row.fragment in line, f"{row.fragment!r} not in {line!r}"
    assert_nothing_lost(workdir, before)


@pytest.mark.parametrize("row", API_ROWS, ids=[f"{r.category}-{r.id}" for r in API_ROWS])
def test_simulate_bad_input(row, workdir, monkeypatch, capfd):
    _prepare(row, workdir)
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    with pytest.raises(row.exc) as e:
        simulate(**row.kwargs())
    assert isinstance(e.value, (TypeError, ValueError, OSError))
    msg = str(e.value)
    assert row.api_fragment in msg, f"{row.api_fragment!r} not in {msg!r}"
    assert "\n" not in msg
    out, err = capfd.readouterr()
    assert out == "" and err == "", "the engine printed something"
    assert_nothing_lost(workdir, before)


def test_every_category_is_covered():
    for category in ("value", "limit", "file", "output"):
        assert any(r.category == category for r in CLI_ROWS), category
    for category in ("value", "limit", "file"):
        assert any(r.category == category for r in API_ROWS), category


# -------------------------------------------- accepted inputs stay accepted --

@pytest.mark.parametrize("args", [
    "-N 0",                         # a single cell
    "-phi -5 -osc 1",               # negative phi
    "-adc 0",
    "-oversample 0",                # automatic
    "-phisteps 0",                  # one step
    "-roi -1 -1 -1 -1",             # -1: the detector's edges
    "-roi 0 100 0 100",             # beyond the edge: clipped, as the reference
    "-printout_pixel -1 -1",        # negative: every pixel, as the reference
    "-printout_pixel 15 15",
    "-detector_thicksteps 0 -dispsteps 0 -divsteps 0",
])
def test_reference_inputs_still_accepted(args, tmp_path, cli_env):
    p = subprocess.run(CLI + BASE + args.split(), cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                       env=cli_env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "floatimage.bin").stat().st_size == 16 * 16 * 4


def test_mat_numbers_may_run_together(tmp_path):
    """fscanf("%lg") reads "-0.0283-0.0030" as two numbers (Fortran writes them so)."""
    text = (INPUTS / "A.mat").read_text()
    glued = text.replace(" -", "-", 1)
    assert glued != text
    (tmp_path / "glued.mat").write_text(glued)
    (tmp_path / "A.mat").write_text(text)
    kw = dict(default_F=10, N=2, detpixels=16, seed=1)
    a = simulate(mat=str(tmp_path / "glued.mat"), **kw).float_image
    b = simulate(mat=str(tmp_path / "A.mat"), **kw).float_image
    assert np.array_equal(a, b)


def test_hkl_line_endings():
    """LF, CR LF and lone CR (old Mac) end a line alike, as the reference's fscanf reads them."""
    lf = _core.Hkl.from_text(b"1 2 3 40\n-1 0 2 50\n# c\n0 0 1 7.5\n", 0.0).fdump()
    assert _core.Hkl.from_text(b"1 2 3 40\r\n-1 0 2 50\r\n# c\r\n0 0 1 7.5\r\n", 0.0).fdump() == lf
    assert _core.Hkl.from_text(b"1 2 3 40\r-1 0 2 50\r# c\r0 0 1 7.5", 0.0).fdump() == lf
    with pytest.raises(ValueError, match="line 3: k is not a number"):
        _core.Hkl.from_text(b"1 2 3 40\r-1 0 2 50\r1 x 2 3\r", 0.0)


def test_hkl_numbers_read_as_strtod_reads_them():
    """Plain decimals take a fast path (an integer over a power of ten);
    every spelling must give the double that correct rounding (strtod,
    Python's float) gives, on and past the fast path's 15 digits."""
    rng = np.random.default_rng(7)
    words = ["0", "-0", "+3", "7.", ".5", "-.25", "00012.500", "1e2", "2.5E-3",
             "999999999999999", "9999999999999999", "0.1", "-123456.789012345", "12345678901234567890",
             "3.141592653589793", "1.0000000000000002", "0.30000000000000004"]
    for _ in range(3000):
        digits = "".join(rng.choice(list("0123456789"), size=int(rng.integers(1, 19))))
        cut = int(rng.integers(0, len(digits) + 1))
        sign = str(rng.choice(["", "-", "+"]))
        words.append(sign + digits[:cut] + "." + digits[cut:] if rng.random() < 0.8 else sign + digits)
    lines = [f"{i % 50} {i // 50 % 50} {i // 2500} {w}" for i, w in enumerate(words)]
    rows = np.array([[float(x) for x in line.split()] for line in lines])
    text = ("\n".join(lines) + "\n").encode()
    assert _core.Hkl.from_text(text, 0.0).fdump() == _core.Hkl.from_rows(rows, len(rows), 0.0).fdump()


def test_sourcefile_comments_and_separators(tmp_path):
    (tmp_path / "s.txt").write_text("# X Y Z weight lambda\n-10 0 0 1 1e-10\n\n-10,0.001,0;1\n")
    r = simulate(sourcefile=str(tmp_path / "s.txt"), **BASE_KW)
    assert r.geometry["n_sources"] == 2


# --------------------------------------------------- failures while writing --

def test_write_failure_on_disk_full(workdir, cli_env):
    """A real write error (the file size limit: EFBIG) after the render: the
    old outputs stay, no temporary file is left."""
    before = snapshot(workdir)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    args = CLI + BASE + ["-detpixels", "32"]      # a float image of 32 x 32 x 4 = 4096 bytes: over the limit
    p = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limit,
                       env=cli_env)
    assert p.returncode == 1, p.stderr
    line = one_error_line(p.stderr)
    assert "cannot write 'floatimage.bin': File too large" in line
    assert_nothing_lost(workdir, before)


@pytest.mark.parametrize("failure, code, fragment", [
    (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
    (KeyboardInterrupt(), 130, "interrupted"),
    ("SIGTERM", 143, "stopped by SIGTERM"),
    (RuntimeError("a bug"), 1, "internal error: RuntimeError: a bug"),
])
def test_failure_after_some_outputs_are_staged(failure, code, fragment, workdir, monkeypatch, capsys):
    """The float, int and PGM images are already written to temporary files
    when the noise image fails: nothing replaces the old files, no
    temporary file stays."""
    def fail(self, seed=None):
        assert len(temp_files(workdir)) == 3, "float, int and pgm should be staged by now"
        if failure == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("SIGTERM was not handled")
        raise failure

    monkeypatch.setattr(_job.Images, "noise_image", fail)
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("NANOBRAGG_DEBUG", raising=False)
    before = snapshot(workdir)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    assert main(BASE) == code
    line = one_error_line(capsys.readouterr().err)
    assert fragment in line
    assert_nothing_lost(workdir, before)
    assert signal.getsignal(signal.SIGTERM) == sigterm_before     # the handler is only there while the command runs


def test_interrupted_render_writes_nothing(workdir, cli_env):
    """Ctrl-C during the render: exit 130, the old outputs stay."""
    before = snapshot(workdir)
    # a render of about half a second: the setup log is flushed just before it starts
    args = CLI + ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "5",
                  "-detpixels", "512", "-oversample", "6", "-mosaic", "1", "-mosaic_domains", "10",
                  "-threads", "1", "-seed", "1"]
    p = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        first = p.stdout.readline()
        assert first, p.stderr.read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in one_error_line(err)
    assert_nothing_lost(workdir, before)


def test_successful_run_replaces_outputs(workdir, cli_env):
    p = subprocess.run(CLI + BASE, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT, env=cli_env)
    assert p.returncode == 0, p.stderr
    for name, data in OLD_OUTPUTS.items():
        assert (workdir / name).read_bytes() != data
    assert (workdir / "floatimage.bin").stat().st_size == 16 * 16 * 4
    assert not temp_files(workdir)


def test_result_write_to_missing_directory(workdir):
    r = simulate(**BASE_KW)
    with pytest.raises(FileNotFoundError, match="cannot write"):
        r.write_float(str(workdir / "no_such_dir" / "f.bin"))
    before = snapshot(workdir)
    with pytest.raises(IsADirectoryError):
        r.write_smv(str(workdir / "a_directory"))
    assert_nothing_lost(workdir, before)


# ------------------------------------------------------------ the engine --

def test_engine_never_prints_or_exits():
    """The C engine reports through return codes and messages only."""
    forbidden = re.compile(r"\b(printf|fprintf|puts|fputs|putchar|perror|exit|_exit|abort|assert)\s*\(")
    found = []
    for src in sorted((REPO / "csrc").glob("*.c")):
        for n, line in enumerate(src.read_text().splitlines(), 1):
            code = line.split("//")[0]
            if forbidden.search(code) and "snprintf" not in code:
                found.append(f"{src.name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
