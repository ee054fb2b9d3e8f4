"""Golden tests of the companion commands nonBragg, noisify and float_add.

Each case of golden/companions/cases.json runs the installed command in a
fresh folder holding copies of its inputs, and every output is compared
with what the reference program wrote, by the rules of
golden/companions/README.md ("What matches means"): float, smv, noise, pgm,
ignore, and for float_add the printed numbers.  The SMV and PGM rules are
goldenlib's; SMV files may hold 32-bit pixels (noisify -bits 32) and float
files may hold NaN where the reference has NaN.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import goldenlib

ROOT = goldenlib.GOLDEN / "companions"
INPUTS = ROOT / "inputs"
with open(ROOT / "cases.json") as _f:
    CASES = json.load(_f)["cases"]
MODULES = {"nonBragg": "nanobragg.companions.nonbragg", "noisify": "nanobragg.companions.noisify",
           "float_add": "nanobragg.companions.float_add"}


def command(program):
    exe = shutil.which(program)
    if exe:
        return [exe]
    return [sys.executable, "-m", MODULES[program]]


def golden(case_id, name):
    return goldenlib.golden_bytes(case_id, name, root=ROOT)


def run(case, workdir):
    for name in case.get("inputs", []):
        shutil.copyfile(INPUTS / name, workdir / name)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(command(case["program"]) + case["args"], cwd=workdir, capture_output=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, (f"{case['id']}: exit {proc.returncode}\n"
                                  + proc.stderr.decode("utf-8", "replace")[-2000:])
    return proc.stdout.decode("utf-8", "replace")


# ----------------------------------------------------------- comparisons --

def compare_float(ours, ref, name):
    """Finite reference pixels by goldenlib's rule; NaN (either sign) where
    the reference has NaN."""
    o, r = np.frombuffer(ours, "<f4").astype(np.float64), np.frombuffer(ref, "<f4").astype(np.float64)
    if len(ours) != len(ref):
        return [f"{name}: {len(ours)} bytes, reference {len(ref)}"]
    problems = []
    nan = np.isnan(r)
    if np.any(np.isnan(o) != nan):
        problems.append(f"{name}: NaN at {int(np.sum(np.isnan(o) != nan))} pixels where the reference differs")
    fin = np.isfinite(r)
    if np.any(~np.isfinite(r) & ~nan & (o != r)):
        problems.append(f"{name}: infinite reference pixels differ")
    if fin.any():
        peak = float(np.max(np.abs(r[fin])))
        bad = ~(np.abs(o[fin] - r[fin]) <= goldenlib.FLOAT_RTOL * np.abs(r[fin]) + goldenlib.FLOAT_PEAK_TOL * peak)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problems.append(f"{name}: {int(bad.sum())} pixels out of tolerance, first ours {o[fin][i]:.9g} "
                            f"ref {r[fin][i]:.9g}")
    return problems


def smv_parts(data):
    """(header dict, pixels int64) of an SMV file with 16- or 32-bit pixels."""
    nhdr = int(re.search(rb"HEADER_BYTES\s*=\s*(\d+)", data[:1024]).group(1))
    text = data[:nhdr].split(b"}", 1)[0].decode("ascii", "replace")
    header = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.lstrip("{").split("=", 1)
            header[k.strip()] = v.strip().rstrip(";").strip()
    w, h = int(header["SIZE1"]), int(header["SIZE2"])
    width = 4 if header.get("TYPE") == "long_integer" else 2
    body = data[len(data) - width * w * h:]
    px = np.frombuffer(body, "<u4" if width == 4 else "<u2").astype(np.int64)
    return header, px, len(data) - width * w * h


def compare_smv(ours, ref, name, noise):
    oh, opx, osize = smv_parts(ours)
    rh, rpx, rsize = smv_parts(ref)
    problems = []
    if len(ours) != len(ref):
        problems.append(f"{name}: {len(ours)} bytes, reference {len(ref)}")
    for k, rv in rh.items():
        if k not in oh:
            problems.append(f"{name}: header lacks {k}")
        else:
            msg = goldenlib.compare_header_value(k, oh[k], rv)
            if msg:
                problems.append(f"{name}: header {msg}")
    if opx.shape != rpx.shape:
        return problems + [f"{name}: {opx.size} pixels, reference {rpx.size}"]
    if noise:
        same = float(np.mean(opx == rpx)) if rpx.size else 1.0
        if same < goldenlib.NOISE_MIN_IDENTICAL:
            problems.append(f"{name}: only {100 * same:.3f}% of pixels identical")
    else:
        d = np.abs(opx - rpx)
        if d.size and d.max() > 1:
            problems.append(f"{name}: {int(np.sum(d > 1))} pixels differ by more than 1 count (max {int(d.max())})")
    return problems


_NUM = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:nan|inf)$", re.IGNORECASE)


def compare_stdout(ours, ref_text):
    """The same non-empty lines with the same words; numbers within 1e-5
    relative (nan matches -nan)."""
    ref = [l.split() for l in ref_text.split("--- stderr ---")[0].splitlines() if l.strip()]
    got = [l.split() for l in ours.splitlines() if l.strip()]
    if len(ref) != len(got):
        return [f"stdout: {len(got)} lines, reference {len(ref)}"]
    problems = []
    for n, (a, b) in enumerate(zip(got, ref), 1):
        if len(a) != len(b):
            problems.append(f"stdout line {n}: {' '.join(a)!r} vs {' '.join(b)!r}")
            continue
        for x, y in zip(a, b):
            if _NUM.match(y) and _NUM.match(x):
                fx, fy = float(x), float(y)
                if math.isnan(fy) and math.isnan(fx):
                    continue
                if not (fx == fy or abs(fx - fy) <= 1e-5 * max(abs(fx), abs(fy))):
                    problems.append(f"stdout line {n}: {x} vs {y} in {' '.join(b)!r}")
            elif x != y:
                problems.append(f"stdout line {n}: {' '.join(a)!r} vs {' '.join(b)!r}")
                break
    return problems


def compare_output(case_id, name, rule, ours):
    if rule == "ignore":      # written, not compared (see the README)
        return []
    ref = golden(case_id, name)
    if rule == "float":
        return compare_float(ours, ref, name)
    if rule in ("smv", "noise"):
        return compare_smv(ours, ref, name, noise=rule == "noise")
    if rule == "pgm":
        return goldenlib.compare_pgm(ours, ref, name)
    raise AssertionError(f"unknown rule {rule!r}")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_companion_golden(case, tmp_path):
    out = run(case, tmp_path)
    problems = []
    for name, rule in case["outputs"].items():
        path = tmp_path / name
        if not path.exists():
            problems.append(f"{name} was not written")
            continue
        problems += compare_output(case["id"], name, rule, path.read_bytes())
    if case.get("stdout") == "numbers":
        problems += compare_stdout(out, (ROOT / case["id"] / "stdout.txt").read_text())
    assert not problems, f"{case['id']} ({case['covers']}):\n  " + "\n  ".join(problems)


def test_cases_are_complete():
    for c in CASES:
        for name in c.get("inputs", []):
            assert (INPUTS / name).exists(), f"{c['id']}: input {name} missing"
        for name in c["outputs"]:
            d = ROOT / c["id"]
            if c["outputs"][name] != "ignore":
                assert (d / (name + ".gz")).exists() or (d / name).exists(), f"{c['id']}: golden {name} missing"


def test_comparisons_catch_differences():
    """The rules fail on a changed output (the test cannot pass vacuously)."""
    ref = golden("nz_defaults", "noiseimage.img")
    bad = bytearray(ref)
    for i in range(512, len(bad), 7):
        bad[i] ^= 0x5A
    assert compare_output("nz_defaults", "noiseimage.img", "noise", bytes(bad))
    f = golden("fa_sum", "sum.bin")
    arr = np.frombuffer(f, "<f4").copy()
    arr[10] *= 1.001
    assert compare_output("fa_sum", "sum.bin", "float", arr.tobytes())
    text = (ROOT / "fa_sum" / "stdout.txt").read_text()
    assert compare_stdout(text.replace("CC = ", "CC = 1"), text)
    assert not compare_stdout(text, text)


def test_threads_give_identical_bytes(tmp_path):
    """nonBragg and noisify (with a PSF) write the same bytes on 1, 2 and 3
    threads (images big enough to take the parallel paths; nonBragg's noise
    is drawn while the image renders, in bands of rows)."""
    outs = {}
    for t in ("1", "2", "3"):
        d = tmp_path / f"t{t}"
        d.mkdir()
        shutil.copyfile(INPUTS / "water.stol", d / "water.stol")
        env = dict(os.environ, OMP_NUM_THREADS=t)
        subprocess.run(command("nonBragg") + "-stol water.stol -detpixels 300 -oversample 2 -seed 3 "
                       "-flux 1e13 -beamsize 0.1".split(), cwd=d, check=True, capture_output=True, env=env)
        subprocess.run(command("noisify") + "-floatfile floatimage.bin -detpixels 300 -psf gauss -psf_fwhm 200 "
                       "-seed 4 -flicker 0.01 -intfile nz_int.img -noisefile nz_noise.img -nopgm".split(),
                       cwd=d, check=True, capture_output=True, env=env)
        outs[t] = {n: (d / n).read_bytes() for n in ("floatimage.bin", "intimage.img", "noiseimage.img",
                                                     "nz_int.img", "nz_noise.img")}
    assert outs["1"] == outs["2"] == outs["3"]


def test_streamed_psf_falls_back_when_a_count_outgrows_its_kernel(tmp_path):
    """After a noise draw the PSF follows the draw on a second thread with a
    kernel sized for counts up to 4x the brightest mean (+1000).  Strong
    flicker pushes a count past that: the blur must then be done again
    as on one thread, byte for byte."""
    d = tmp_path / "w"
    d.mkdir()
    shutil.copyfile(INPUTS / "water.stol", d / "water.stol")
    subprocess.run(command("nonBragg") + "-stol water.stol -detpixels 300 -seed 3 -flux 1e13 -beamsize 0.1 -nonoise".split(),
                   cwd=d, check=True, capture_output=True)
    args = ("-floatfile floatimage.bin -detpixels 300 -psf gauss -psf_fwhm 3000 -scale 1000 -flicker 5 "
            "-calibration 0 -seed 4 -intfile int.img -noisefile noise.img -nopgm").split()
    outs, printed = {}, {}
    for t in ("1", "2"):
        r = subprocess.run(command("noisify") + args, cwd=d, check=True, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS=t))
        outs[t], printed[t] = (d / "noise.img").read_bytes(), r.stdout
    assert outs["1"] == outs["2"] and printed["1"] == printed["2"]
    # the case does take the fall-back: the brightest count's radius exceeds the streamed kernel's
    mean = float(re.search(r"\( *([0-9.e+]+) on photon scale\)", printed["2"]).group(1))
    count = float(re.search(r"maximum input photon/pixel: ([0-9.e+]+)", printed["2"]).group(1))

    def radius(v, fwhm_px=30.0):
        return 1 + math.ceil(math.sqrt(-math.log(math.sqrt(v) / 10 / v) / math.log(16)) * fwhm_px)
    assert radius(count) > radius(4 * mean + 1000) + 1, (mean, count)
