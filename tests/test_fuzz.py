"""Fuzzing of every reader of untrusted input: valid seeds (the golden
inputs) mutated by byte flips, truncations, deletions, duplications and
insertions of random bytes or of tokens the readers care about, plus plain
random bytes.  Each reader must return a clean result or raise ValueError /
OSError with a one-line message: never crash, hang or raise anything else.

Readers: the C ones through nanobragg._core (Hkl.from_text, Hkl.from_fdump,
parse_smv), the Python ones (the -mat reader, the -sourcefile reader, the
-stol table reader, the SMV header reader of the command line, which must
agree with the C one), and what consumes their results (a Setup built from a
fuzzed matrix or source list, the front end seeded by a fuzzed -img/-mask
header).

Bounded and reproducible by default: NANOBRAGG_FUZZ_EXAMPLES examples per
reader (default 600, about 4,200 in all), derandomized.  A long run:

    NANOBRAGG_FUZZ_EXAMPLES=100000 NANOBRAGG_FUZZ_RANDOM=1 pytest tests/test_fuzz.py

(see docs/reliability.md).  NANOBRAGG_FUZZ_RANDOM=1 draws fresh inputs.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("nanobragg._core", reason="the compiled engine is not built")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nanobragg import _core, _io  # noqa: E402
from nanobragg._job import Job  # noqa: E402

INPUTS = Path(__file__).resolve().parent.parent / "golden" / "inputs"
EXAMPLES = int(os.environ.get("NANOBRAGG_FUZZ_EXAMPLES", "600"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("NANOBRAGG_FUZZ_RANDOM", "") in ("", "0"),
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# a fuzzed HKL may ask for a big (lazily allocated) grid: only small ones are re-encoded
SMALL_GRID = 2_000_000


# ----------------------------------------------------------------- seeds --

def _read(name):
    return (INPUTS / name).read_bytes()


def _smv(width, height, order=b"little_endian", extra=b""):
    text = (b"{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=" + order + b";\nTYPE=unsigned_short;\nSIZE1=%d;\nSIZE2=%d;\n"
            b"PIXEL_SIZE=0.1;\nDISTANCE=100;\nWAVELENGTH=1;\nBEAM_CENTER_X=0.2;\nBEAM_CENTER_Y=0.2;\nPHI=0;\n"
            b"OSC_RANGE=0.1;\n" % (width, height) + extra + b"}\f")
    return text.ljust(512, b" ") + bytes(range(256)) * (2 * width * height // 256) + bytes(2 * width * height % 256)


HKL_SEEDS = [
    _read("small.hkl"),
    b"".join(_read("tri.hkl").splitlines(keepends=True)[:40]),
    b"# h k l F sigma\n1 0 0 10.5 1.0\n0 1 0 20 2\r\n\n0 0 -1 3e1\n-1 -1 -1 0.5 phase 90\n",
]
FDUMP_SEEDS = [_core.Hkl.from_text(s, 0.0).fdump() for s in HKL_SEEDS[1:]] + [
    _core.Hkl.from_text(HKL_SEEDS[0], 7.0).fdump()]
SMV_SEEDS = [_read("header.img"), _smv(4, 4), _smv(3, 5, b"big_endian"),
             _smv(2, 2, extra=b"SIZE1=0;\nDETECTOR_DIMENSIONS=2;\n")]
MAT_SEEDS = [
    _read("A.mat"),
    _read("A.mat").replace(b" -", b"-"),        # Fortran-style numbers that run together
    b" -0.01189049 -0.00426015  0.01059880\n  0.00117460 -0.01382620 -0.00383680\n  0.01302744 -0.00093549 "
    b" 0.00825734\n       0.000       0.000       0.000\n -0.6603154 -0.4023534  0.6340612\n  0.0652294 -0.8688427"
    b" -0.4907046\n  0.7483352 -0.2885064  0.5970498\n     78.4200     78.4200     38.1700     90.0000     90.0000"
    b"     90.0000\n       0.000       0.000       0.000\n",
]
SOURCE_SEEDS = [_read("sources.txt"), _read("sources3.txt"),
                b"# X Y Z weight lambda\n-10,0,0;1!1e-10\n\n-10 0.001 0\t0.5\n-10 0 0.002 1 1.1e-10 extra\n"]

# what the readers look for: numbers at the edges, separators, keywords
TOKENS = [b"0", b"-0", b"1", b"-1", b"+7", b".5", b"1e308", b"-1e308", b"1e-320", b"nan", b"inf", b"-inf",
          b"infinity", b"0x1p3", b"2147483647", b"2147483648", b"-2147483649", b"999999999", b"1000000000",
          b"4294967296", b"99999999999999999999", b"e", b"E+", b".", b"-", b"+", b"\x00", b"\n", b"\r", b"\r\n",
          b"\f", b"\n\f", b" ", b"\t", b",", b";", b":", b"!", b"#", b"=", b"}", b"{", b"\xff", b"\xc3\xa9",
          b"{\nHEADER_BYTES=", b"HEADER_BYTES=", b"HEADER_BYTES=0;", b"HEADER_BYTES=100000000;", b"SIZE1=",
          b"SIZE2=", b"SIZE1=1000000;", b"DETECTOR_DIMENSIONS=", b"BYTE_ORDER=big_endian;",
          b"BYTE_ORDER=little_endian;", b"PIXEL_SIZE=", b"PIXEL_SIZE=0;", b"WAVELENGTH=-1;", b"DISTANCE=0;",
          b"-1000000000 1000000000", b"0 0 0", b"1 2 3 4\n"]


@st.composite
def mutants(draw, seeds):
    """A seed with 1 to 8 random edits (mostly 1 or 2) at uniformly random places (drawn
    from a hypothesis-seeded Random: reproducible, and not biased towards
    the start of the file as hypothesis' own integers are)."""
    rnd = draw(st.randoms(use_true_random=True))
    data = bytearray(rnd.choice(seeds))
    edits = 0 if rnd.random() < 0.05 else 1
    while 0 < edits < 8 and rnd.random() < 0.5:      # mostly one or two edits: deep, not only early, checks
        edits += 1
    for _ in range(edits):
        n = len(data)
        op = rnd.randrange(8)
        pos = rnd.randrange(n + 1)
        if op == 0 and n:                                   # flip one bit
            data[min(pos, n - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:                                 # replace one byte
            data[min(pos, n - 1)] = rnd.randrange(256)
        elif op == 2:                                       # insert a token
            data[pos:pos] = rnd.choice(TOKENS)
        elif op == 3:                                       # replace a run by a token
            data[pos:pos + rnd.randrange(1, 13)] = rnd.choice(TOKENS)
        elif op == 4:                                       # insert random bytes
            data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 17)))
        elif op == 5 and n:                                 # delete a run
            del data[pos:pos + rnd.randrange(1, 65)]
        elif op == 6:                                       # truncate
            del data[pos:]
        elif op == 7 and n:                                 # duplicate a chunk elsewhere
            chunk = data[pos:pos + rnd.randrange(1, 257)]
            at = rnd.randrange(n + 1)
            data[at:at] = chunk
    return bytes(data)


def fuzzed(seeds):
    return st.one_of(mutants(seeds), mutants(seeds), mutants(seeds), st.binary(max_size=1024))


def check_message(e: BaseException):
    msg = str(e)
    assert msg and "\n" not in msg, repr(msg)


def expect_clean(fn, *args):
    """fn(*args): a result, or ValueError/OSError with a one-line message."""
    try:
        return fn(*args)
    except (ValueError, OSError) as e:
        check_message(e)
        return None


# --------------------------------------------------------------- C readers --

@FUZZ
@given(data=fuzzed(HKL_SEEDS), default_F=st.sampled_from([0.0, 0.0, 0.0, 12.5]))
def test_fuzz_hkl_text(data, default_F):
    cells = None
    if default_F:
        # a non-zero default touches the whole grid: keep it to small ones
        pre = expect_clean(_core.Hkl.from_text, data, 0.0)
        if pre is None:
            return
        cells = (pre.h_max - pre.h_min + 2) * (pre.k_max - pre.k_min + 2) * (pre.l_max - pre.l_min + 2)
        if cells > SMALL_GRID:
            return
    h = expect_clean(_core.Hkl.from_text, data, default_F)
    if h is None:
        return
    assert h.count >= 1
    assert h.h_min <= h.h_max and h.k_min <= h.k_max and h.l_min <= h.l_max
    cells = (h.h_max - h.h_min + 2) * (h.k_max - h.k_min + 2) * (h.l_max - h.l_min + 2)
    if cells <= SMALL_GRID:
        dump = h.fdump()
        again = _core.Hkl.from_fdump(dump)
        assert again.fdump() == dump
        assert (again.h_min, again.h_max, again.l_max) == (h.h_min, h.h_max, h.l_max)


@FUZZ
@given(data=fuzzed(FDUMP_SEEDS))
def test_fuzz_fdump(data):
    h = expect_clean(_core.Hkl.from_fdump, data)
    if h is None:
        return
    assert h.h_min <= h.h_max and h.k_min <= h.k_max and h.l_min <= h.l_max
    dump = h.fdump()
    assert len(dump) <= len(data) + 64          # the grid is exactly the file's data
    assert _core.Hkl.from_fdump(dump).fdump() == dump


@FUZZ
@given(data=fuzzed(SMV_SEEDS))
def test_fuzz_smv(data):
    """The SMV reader (the only one: -img and -mask go through it)."""
    smv = expect_clean(_core.parse_smv, data)
    if smv is None:
        return
    assert smv.width >= 1 and smv.height >= 1 and 2 * smv.width * smv.height <= len(data)
    pixels = np.asarray(smv.data)
    assert pixels.shape == (smv.height, smv.width) and pixels.dtype == np.uint16
    assert smv.header_bytes <= len(data)


# ---------------------------------------------------------- Python readers --

def _text(data: bytes) -> str:
    return data.decode("latin-1")      # as the front ends decode these files


@FUZZ
@given(data=fuzzed(MAT_SEEDS))
def test_fuzz_mat(data):
    """The -mat reader, then a setup built on the matrix it read."""
    mat = expect_clean(_io.parse_mat_values, _text(data))
    if mat is None:
        return
    assert len(mat) == 9 and np.all(np.isfinite(mat))
    setup = expect_clean(_core.Setup, {"has_amat": 1, "amat": mat, "fpixels": 4, "spixels": 4,
                                       "default_F": 1.0, "oversample": 1})
    if setup is not None:
        assert setup.fpixels == 4


@FUZZ
@given(data=fuzzed(SOURCE_SEEDS))
def test_fuzz_sourcefile(data):
    """The -sourcefile reader and its checks, then a setup with those sources."""
    got = expect_clean(_io.read_source_rows, _text(data))
    if got is None:
        return
    rows, lines = got
    assert all(len(r) == 5 for r in rows) and len(lines) == len(rows)
    assert lines == sorted(set(lines))
    if not rows:
        return
    try:
        _io.check_source_rows(rows, lambda i: f"line {lines[i]}")
    except ValueError as e:
        check_message(e)
        return
    setup = expect_clean(_core.Setup, {"has_cell": 1, "cell": [50, 60, 70, 90, 90, 90], "sources": rows,
                                       "fpixels": 4, "spixels": 4, "default_F": 1.0, "oversample": 1})
    if setup is not None:
        assert setup.geometry["n_sources"] == len(rows)


@FUZZ
@given(data=fuzzed(SOURCE_SEEDS + [b"0.1 100\n0.2 90\n0.3 80\n"]))
def test_fuzz_stol_table(data):
    """-stol tables are read as the reference reads them (atof): never an error."""
    rows = _io.read_text_rows(_text(data), 2)
    assert all(len(r) == 2 for r in rows)


# ---------------------------------------------- the front end on fuzzed headers --

@FUZZ
@given(data=fuzzed(SMV_SEEDS), kind=st.sampled_from(["img", "mask"]))
def test_fuzz_front_end_smv_header(data, kind):
    """A fuzzed -img/-mask seeds the detector, beam and spindle: the whole
    front end up to the render must end cleanly (no render is run)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "in.img")
        with open(path, "wb") as f:
            f.write(data)
        params = {"cell": (50, 60, 70, 90, 90, 90), "default_F": 1.0, "oversample": 1, kind: path}
        job = expect_clean(Job, params)
    if job is not None:
        assert job.setup.fpixels >= 1 and job.setup.spixels >= 1
        if kind == "mask":
            assert tuple(job.mask.shape) == (job.setup.spixels, job.setup.fpixels)


def test_seeds_are_valid():
    """The seeds themselves read cleanly: the fuzzing starts from good inputs."""
    for s in HKL_SEEDS:
        _core.Hkl.from_text(s, 0.0)
    for s in FDUMP_SEEDS:
        _core.Hkl.from_fdump(s)
    for s in SMV_SEEDS:
        _core.parse_smv(s)
    for s in MAT_SEEDS:
        assert len(_io.parse_mat_values(_text(s))) == 9
    for s in SOURCE_SEEDS:
        assert len(_io.read_source_rows(_text(s))[0]) >= 2
