"""Helpers for the golden-image tests: run a case, read the outputs, compare.

The comparison rules are those of golden/README.md ("What matches means").
Every comparison returns a list of human-readable problems (empty = match),
so that one failing case reports every output that is off and by how much.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "golden"
INPUTS = GOLDEN / "inputs"

OUTPUT_FLAGS = ["-floatfile", "float.bin", "-intfile", "int.img",
                "-noisefile", "noise.img", "-pgmfile", "image.pgm"]
OUTPUTS = ["float.bin", "int.img", "noise.img", "image.pgm"]

FLOAT_RTOL = 1e-5          # of |ref| per pixel
FLOAT_PEAK_TOL = 1e-6      # of max|ref| over the image
HEADER_RTOL = 1e-5
NOISE_MIN_IDENTICAL = 0.999
RUN_TIMEOUT = 900          # seconds per nanoBragg run


# ------------------------------------------------------------------ cases --

def load_cases():
    """The shared reference cases, then our extra reference-rendered ones."""
    cases = []
    for name in ("cases.json", "extra_cases.json"):
        with open(GOLDEN / name) as f:
            cases += json.load(f)["cases"]
    return cases


def case_by_id(case_id):
    for c in load_cases():
        if c["id"] == case_id:
            return c
    raise KeyError(case_id)


def stage_inputs(case, workdir):
    """Copy the case's input files into workdir (gunzipping NAME.gz if only
    the compressed copy is stored)."""
    workdir = Path(workdir)
    for name in case.get("inputs", []):
        src = INPUTS / name
        if src.exists():
            shutil.copyfile(src, workdir / name)
        elif src.with_name(name + ".gz").exists():
            with gzip.open(src.with_name(name + ".gz"), "rb") as fin, open(workdir / name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            raise FileNotFoundError(f"golden input {name} is missing from {INPUTS}")


def nanobragg_command():
    exe = shutil.which("nanoBragg")
    if exe:
        return [exe]
    return [sys.executable, "-m", "nanobragg"]


def run_case(case, workdir, env=None, extra_args=()):
    """Stage inputs and run nanoBragg with the case's args and the fixed
    output flags in workdir.  Returns the CompletedProcess; raises
    AssertionError with the tail of its output if it fails."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stage_inputs(case, workdir)
    cmd = nanobragg_command() + list(case["args"]) + OUTPUT_FLAGS + list(extra_args)
    run_env = dict(os.environ)
    if env:
        run_env.update(env)
    proc = subprocess.run(cmd, cwd=workdir, env=run_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        raise AssertionError(
            f"{case['id']}: nanoBragg exited with {proc.returncode}\n"
            f"command: {' '.join(cmd)}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr)}\n--- stdout (tail) ---\n{_tail(proc.stdout)}")
    return proc


def _tail(data, n=30):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return "\n".join(text.splitlines()[-n:])


def golden_bytes(case_id, name, root=None):
    """Content of golden/<case>/<name>(.gz) (or of <root>/<case>/<name>)."""
    d = (GOLDEN if root is None else root) / case_id
    if (d / (name + ".gz")).exists():
        with gzip.open(d / (name + ".gz"), "rb") as f:
            return f.read()
    return (d / name).read_bytes()


# ----------------------------------------------------------------- readers --

def read_float(data):
    if len(data) % 4:
        raise ValueError(f"float image has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype="<f4")


def parse_smv(data):
    """(header dict in file order, pixel array (height, width) as int64,
    whether the header text is closed by '}').

    Header lines are KEY=VALUE with an optional ';' (upstream writes
    DIALS_ORIGIN without one).  The pixels are the last 2*SIZE1*SIZE2 bytes
    of the file: upstream pads its header to HEADER_BYTES but, when the text
    is longer (long numbers in pilatus_roi_pix0_guard), writes all of it and
    the data right after, so the data does not always start at HEADER_BYTES."""
    if not data.startswith(b"{"):
        raise ValueError("not an SMV file (does not start with '{')")
    m = re.search(rb"HEADER_BYTES\s*=\s*(\d+)", data[:1024])
    if not m:
        raise ValueError("SMV header has no HEADER_BYTES")
    nhdr = int(m.group(1))
    m1 = re.search(rb"SIZE1\s*=\s*(\d+)", data[:max(nhdr, 4096)])
    m2 = re.search(rb"SIZE2\s*=\s*(\d+)", data[:max(nhdr, 4096)])
    if not (m1 and m2):
        raise ValueError("SMV header lacks SIZE1/SIZE2")
    width, height = int(m1.group(1)), int(m2.group(1))
    nbody = 2 * width * height
    if len(data) < nhdr + nbody:
        raise ValueError(f"SMV file has {len(data)} bytes, expected {nhdr} + {nbody} for {width}x{height}")
    header_region = data[:len(data) - nbody]
    closed = b"}" in header_region
    text = header_region.split(b"}", 1)[0].replace(b"\0", b"").decode("ascii", "replace")
    header = {}
    for line in text.splitlines():
        line = line.strip().lstrip("{").strip()
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        header[key.strip()] = value.strip().rstrip(";").strip()
    order = header.get("BYTE_ORDER", "little_endian")
    dtype = "<u2" if order.startswith("little") else ">u2"
    pixels = np.frombuffer(data[len(data) - nbody:], dtype=dtype).reshape(height, width).astype(np.int64)
    return header, pixels, closed


def parse_pgm(data):
    """(width, height, maxval, pixel bytes as int array (height, width), comments)."""
    if not data.startswith(b"P5"):
        raise ValueError(f"not a binary PGM: starts with {data[:2]!r}, expected b'P5'")
    pos, fields, comments = 2, [], []
    while len(fields) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            end = data.index(b"\n", pos)
            comments.append(data[pos + 1:end].decode("ascii", "replace").strip())
            pos = end + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        fields.append(int(data[start:pos]))
    pos += 1   # the single whitespace after maxval
    width, height, maxval = fields
    body = data[pos:pos + width * height]
    if len(body) != width * height:
        raise ValueError(f"PGM data has {len(body)} bytes, expected {width * height}")
    return width, height, maxval, np.frombuffer(body, dtype=np.uint8).reshape(height, width).astype(np.int64), comments


# ------------------------------------------------------------- comparisons --

def _where(index, width):
    if width:
        return f"pixel {index} (slow {index // width}, fast {index % width})"
    return f"pixel {index}"


def compare_float(ours_bytes, ref_bytes, width=None, name="float.bin"):
    """|ours - ref| <= 1e-5 |ref| + 1e-6 max|ref| at every pixel."""
    try:
        ours, ref = read_float(ours_bytes), read_float(ref_bytes)
    except ValueError as e:
        return [f"{name}: {e}"]
    if ours.size != ref.size:
        return [f"{name}: {ours.size} pixels, reference has {ref.size}"]
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(o)):
        bad = np.flatnonzero(~np.isfinite(o))
        return [f"{name}: {bad.size} non-finite pixels, first at {_where(int(bad[0]), width)} = {o[bad[0]]}"]
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    diff = np.abs(o - r)
    tol = FLOAT_RTOL * np.abs(r) + FLOAT_PEAK_TOL * peak
    bad = diff > tol
    if not bad.any():
        return []
    excess = np.where(bad, diff / np.maximum(tol, np.finfo(float).tiny), 0.0)
    i = int(np.argmax(excess))
    rel = diff / np.maximum(np.abs(r), np.finfo(float).tiny)
    return [f"{name}: {int(bad.sum())} of {r.size} pixels out of tolerance; worst {_where(i, width)}: "
            f"ours {o[i]:.9g} ref {r[i]:.9g} (|diff| {diff[i]:.3g} = {excess[i]:.3g}x the allowed {tol[i]:.3g}); "
            f"max |diff| {diff.max():.3g} (peak |ref| {peak:.6g}), max rel diff where ref != 0 "
            f"{float(rel[r != 0].max()) if np.any(r != 0) else 0.0:.3g}"]


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def printout_block(stdout):
    """The -printout part of a run's stdout: from the first pixel's lines (or
    an interpolation warning among them) to the blank line before "solid
    angle"."""
    lines = stdout.splitlines()
    start = next((i for i, l in enumerate(lines) if " : stol = " in l or l.startswith("WARNING: out of range")),
                 None)
    end = next((i for i, l in enumerate(lines) if l.startswith("solid angle")), len(lines))
    while end > 0 and not lines[end - 1].strip():     # the blank line after the render
        end -= 1
    return [] if start is None or start >= end else lines[start:end]


# printed with %f and %11.8f: a last digit may round either way
_PRINTOUT_DIGITS = {"hkl=": 1.01e-6, "X:": 1.01e-8, "Y:": 1.01e-8, "Z:": 1.01e-8}


def compare_printout(ours_stdout, ref_stdout):
    """The -printout lines token by token: words equal, integers equal, other
    numbers by the float rule (1e-5 relative plus 1e-6 of the largest value
    in the same place of any pixel's lines) or to the last printed digit."""
    ours, ref = printout_block(ours_stdout), printout_block(ref_stdout)
    if len(ours) != len(ref):
        return [f"printout: {len(ours)} lines, the reference {len(ref)}"]

    def key(tokens, j):
        return (tokens[0] if tokens and not tokens[0].lstrip("-").isdigit() else "#", len(tokens), j)

    peak = {}
    for line in ref:
        t = line.split()
        for j, tok in enumerate(t):
            v = _number(tok)
            if v is not None and math.isfinite(v):
                peak[key(t, j)] = max(peak.get(key(t, j), 0.0), abs(v))
    bad = []
    for n, (lo, lr) in enumerate(zip(ours, ref)):
        to, tr = lo.split(), lr.split()
        ok = len(to) == len(tr)
        for j, (a, b) in enumerate(zip(to, tr)):
            if not ok or a == b:
                continue
            x, y = _number(a), _number(b)
            integral = b.lstrip("-").isdigit()
            if x is None or y is None or integral:
                ok = False
                break
            digits = _PRINTOUT_DIGITS.get(tr[0], 0.0)
            if not abs(x - y) <= FLOAT_RTOL * abs(y) + FLOAT_PEAK_TOL * peak.get(key(tr, j), 0.0) + digits:
                ok = False
        if not ok:
            bad.append(n)
    if not bad:
        return []
    n = bad[0]
    return [f"printout: {len(bad)} of {len(ref)} lines differ; first, line {n}: ours {ours[n]!r}, ref {ref[n]!r}"]


def compare_header_value(key, ours, ref):
    """None if equal under the rule (numbers to 1e-5 relative, comma lists
    element-wise relative to the list's largest magnitude), else a message."""
    ref_items = [t.strip() for t in ref.split(",")]
    our_items = [t.strip() for t in ours.split(",")]
    if len(ref_items) != len(our_items):
        return f"{key}: ours {ours!r}, ref {ref!r} (different number of items)"
    ref_nums = [_number(t) for t in ref_items]
    our_nums = [_number(t) for t in our_items]
    scale = max([abs(v) for v in ref_nums if v is not None] or [0.0])
    for i, (rt, ot, rv, ov) in enumerate(zip(ref_items, our_items, ref_nums, our_nums)):
        if rv is None or ov is None:
            if rt != ot:
                return f"{key}: ours {ours!r}, ref {ref!r}"
            continue
        allowed = HEADER_RTOL * max(abs(rv), abs(ov), scale if len(ref_items) > 1 else 0.0)
        if abs(ov - rv) > allowed:
            which = f" (item {i})" if len(ref_items) > 1 else ""
            return f"{key}: ours {ours!r}, ref {ref!r}{which}"
    return None


def compare_smv(ours_bytes, ref_bytes, name, check_header=True, max_count_diff=1):
    try:
        ours_h, ours_px, ours_closed = parse_smv(ours_bytes)
    except ValueError as e:
        return [f"{name}: cannot read ours: {e}"]
    ref_h, ref_px, ref_closed = parse_smv(ref_bytes)
    problems = []
    if check_header:
        if ref_closed and not ours_closed:
            problems.append(f"{name}: header text is not closed by '}}' (truncated?)")
        missing = [k for k in ref_h if k not in ours_h]
        if missing:
            problems.append(f"{name}: header lacks {', '.join(missing)}")
        for k, rv in ref_h.items():
            if k in ours_h:
                msg = compare_header_value(k, ours_h[k], rv)
                if msg:
                    problems.append(f"{name}: header {msg}")
    if ours_px.shape != ref_px.shape:
        problems.append(f"{name}: image is {ours_px.shape[1]}x{ours_px.shape[0]}, "
                        f"reference {ref_px.shape[1]}x{ref_px.shape[0]}")
        return problems
    diff = np.abs(ours_px - ref_px)
    bad = diff > max_count_diff
    if bad.any():
        i = int(np.argmax(diff))
        w = ref_px.shape[1]
        problems.append(f"{name}: {int(bad.sum())} of {ref_px.size} pixels differ by more than {max_count_diff} "
                        f"count; worst {_where(i, w)}: ours {ours_px.flat[i]} ref {ref_px.flat[i]} "
                        f"(diff {int(diff.flat[i])})")
    return problems


def compare_noise(ours_bytes, ref_bytes, name="noise.img"):
    try:
        _, ours_px, _ = parse_smv(ours_bytes)
    except ValueError as e:
        return [f"{name}: cannot read ours: {e}"]
    _, ref_px, _ = parse_smv(ref_bytes)
    if ours_px.shape != ref_px.shape:
        return [f"{name}: image is {ours_px.shape[1]}x{ours_px.shape[0]}, "
                f"reference {ref_px.shape[1]}x{ref_px.shape[0]}"]
    same = ours_px == ref_px
    frac = float(same.mean()) if same.size else 1.0
    if frac < NOISE_MIN_IDENTICAL:
        diff = np.abs(ours_px - ref_px)
        i = int(np.argmax(diff))
        return [f"{name}: only {100 * frac:.3f}% of pixels identical (need >= {100 * NOISE_MIN_IDENTICAL:.1f}%); "
                f"{int((~same).sum())} of {same.size} differ, worst {_where(i, ref_px.shape[1])}: "
                f"ours {ours_px.flat[i]} ref {ref_px.flat[i]}"]
    return []


def compare_pgm(ours_bytes, ref_bytes, name="image.pgm"):
    try:
        ow, oh, omax, opx, _ = parse_pgm(ours_bytes)
    except (ValueError, IndexError) as e:
        return [f"{name}: cannot read ours: {e}"]
    rw, rh, rmax, rpx, _ = parse_pgm(ref_bytes)
    if (ow, oh, omax) != (rw, rh, rmax):
        return [f"{name}: P5 {ow}x{oh} maxval {omax}, reference {rw}x{rh} maxval {rmax}"]
    diff = np.abs(opx - rpx)
    bad = diff > 1
    if bad.any():
        i = int(np.argmax(diff))
        return [f"{name}: {int(bad.sum())} of {rpx.size} bytes differ by more than 1; worst {_where(i, rw)}: "
                f"ours {opx.flat[i]} ref {rpx.flat[i]}"]
    return []


def compare_exact(ours_bytes, ref_bytes, name):
    if ours_bytes == ref_bytes:
        return []
    if len(ours_bytes) != len(ref_bytes):
        return [f"{name}: {len(ours_bytes)} bytes, reference {len(ref_bytes)} bytes"]
    a = np.frombuffer(ours_bytes, dtype=np.uint8)
    b = np.frombuffer(ref_bytes, dtype=np.uint8)
    nd = np.flatnonzero(a != b)
    return [f"{name}: {nd.size} of {len(ref_bytes)} bytes differ, first at offset {int(nd[0])}"]


def compare_case(case, workdir):
    """Every problem with the outputs in workdir against golden/<id>/."""
    workdir = Path(workdir)
    cid = case["id"]
    problems = []

    def ours(name):
        p = workdir / name
        if not p.exists():
            problems.append(f"{name}: not written")
            return None
        return p.read_bytes()

    width = None
    ref_int = golden_bytes(cid, "int.img")
    try:
        width = int(parse_smv(ref_int)[0]["SIZE1"])
    except (ValueError, KeyError):
        pass

    data = ours("float.bin")
    if data is not None:
        problems += compare_float(data, golden_bytes(cid, "float.bin"), width)
    data = ours("int.img")
    if data is not None:
        problems += compare_smv(data, ref_int, "int.img", check_header="ref_args" not in case)
    data = ours("noise.img")
    if data is not None:
        problems += compare_noise(data, golden_bytes(cid, "noise.img"))
    data = ours("image.pgm")
    if data is not None:
        problems += compare_pgm(data, golden_bytes(cid, "image.pgm"))
    for name in case.get("keep", []):
        data = ours(name)
        if data is not None:
            problems += compare_exact(data, golden_bytes(cid, name), name)
    return problems


# ----------------------------------------------------------- kernel levels --
ISA_LEVELS = ("baseline", "v3", "v4")


def kernel_levels():
    """The kernel levels (NANOBRAGG_ISA values) this build and CPU can run,
    each checked by rendering a tiny image with it; a level that is refused
    must be refused for the CPU's sake (see test_isa.py for the cross-check
    against /proc/cpuinfo)."""
    global _LEVELS
    if _LEVELS is None:
        from nanobragg import simulate
        found = []
        saved = os.environ.get("NANOBRAGG_ISA")
        try:
            for level in ISA_LEVELS:
                os.environ["NANOBRAGG_ISA"] = level
                try:
                    r = simulate(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5, wavelength=1,
                                 distance=100, detpixels=4, pixel=0.1)
                except Exception as e:  # noqa: BLE001 - the message is checked
                    if "lacks" not in str(e) and "one kernel" not in str(e):
                        raise
                    continue
                assert r.stats["kernel_isa"] == level, (level, r.stats["kernel_isa"])
                found.append(level)
        finally:
            if saved is None:
                os.environ.pop("NANOBRAGG_ISA", None)
            else:
                os.environ["NANOBRAGG_ISA"] = saved
        _LEVELS = found
    return list(_LEVELS)


_LEVELS = None


# ------------------------------------------------------ differential runs --
# tests/test_differential*.py: random valid combinations, ours against reference binaries
DIFF_CASES = int(os.environ.get("NANOBRAGG_DIFF_CASES", "40"))
DIFF_SEED = int(os.environ.get("NANOBRAGG_DIFF_SEED", "1"))


def differential_run(draw, compare, cases, seed=DIFF_SEED, start=0, jobs=1, report=None):
    """compare(draw(i, seed)) for i in start .. start+cases-1, jobs at a time.
    compare returns [] for a match, the list of problems, or None when the
    reference crashed (no verdict).  Returns (mismatches as (combination,
    problems) pairs, crash count); report(line), if given, hears each as it
    comes."""
    from concurrent.futures import ThreadPoolExecutor
    combos = [draw(i, seed) for i in range(start, start + cases)]
    bad, crashed = [], 0
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for combo, problems in zip(combos, pool.map(compare, combos)):
            if problems is None:
                crashed += 1
                if report:
                    report(f"REFERENCE CRASHED {combo!r}")
            elif problems:
                bad.append((combo, problems))
                if report:
                    report(f"MISMATCH {combo!r}\n    " + "\n    ".join(problems))
    return bad, crashed


def assert_differential_match(draw, compare, cases=DIFF_CASES):
    bad, _ = differential_run(draw, compare, cases)
    assert not bad, f"{len(bad)} of {cases} combinations differ:\n" + "\n".join(
        f"{combo!r}\n    " + "\n    ".join(problems) for combo, problems in bad[:10])


def differential_main(argv, doc, draw, compare, reference_ok, missing):
    """The command line of a differential test: --cases, --start, --seed,
    --jobs; missing: what to say when reference_ok() is false."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--cases", type=int, default=DIFF_CASES)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, default=DIFF_SEED)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    if not reference_ok():
        print(missing, file=sys.stderr)
        return 2
    bad, crashed = differential_run(draw, compare, args.cases, args.seed, args.start, args.jobs,
                                    report=lambda line: print(line, flush=True))
    crash_note = f"; the reference crashed on {crashed} more" if crashed else ""
    print(f"{args.cases - len(bad) - crashed} of {args.cases - crashed} combinations match the reference "
          f"(seed {args.seed}, from {args.start}{crash_note})")
    return 1 if bad else 0
