#!/usr/bin/env python3
"""Benchmarks of the companion commands nonBragg and noisify on a 2048^2
detector, against the upstream binaries timed in the same sitting.

    python benchmarks/companions.py --reference-dir /path/to/upstream/bin [--repeat 5]

  nonbragg2k  nonBragg $(cat nonbragg2k.args): water (water.stol, 0.1 mm) on 2048^2 at 100 mm,
              3x3 sub-pixels, with noise
  noisify2k   noisify $(cat noisify2k.args): the float image nonbragg2k writes, with flicker,
              calibration error, read-out noise and a 150 um Gaussian PSF

Ours are the commands installed next to the Python running this script.
Runs alternate (ours, reference, ours, ...) in fresh folders so that both
see the same load; the figure is the ratio of the medians of wall time.
Every output of ours is checked against the reference's by the golden rules
of golden/companions/README.md (float: |d| <= 1e-5 |ref| + 1e-6 max|ref|;
SMV: pixels within 1 count, noise images 99.9 % identical).  A measuring
tool, not a test: it asserts no timing; exit 1 only if a run fails or an
output does not match.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STOL = HERE.parent / "python" / "nanobragg" / "data" / "water.stol"


def ours(program):
    exe = Path(sys.executable).with_name(program)
    return str(exe) if exe.exists() else shutil.which(program)


def timed(cmd, cwd, env):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return wall


def compare(a: Path, b: Path):
    x, y = a.read_bytes(), b.read_bytes()
    if a.suffix == ".bin":
        o, r = np.frombuffer(x, "<f4").astype(float), np.frombuffer(y, "<f4").astype(float)
        ok = o.shape == r.shape and bool(np.all(np.abs(o - r) <= 1e-5 * np.abs(r) + 1e-6 * np.abs(r).max()))
        return ok, "float rule"
    po, pr = np.frombuffer(x[512:], "<u2").astype(int), np.frombuffer(y[512:], "<u2").astype(int)
    if po.shape != pr.shape or x[:512] != y[:512] and "noise" not in a.name:
        return False, "size/header"
    same = float(np.mean(po == pr))
    if "noise" in a.name:
        return same >= 0.999, f"{100 * same:.4f}% identical"
    return bool(np.all(np.abs(po - pr) <= 1)), f"max |d| {int(np.abs(po - pr).max())}"


def bench(name, program, args, inputs, refdir, repeat, env):
    print(f"\n{name}: {program} {' '.join(args)}")
    times = {"ours": [], "ref": []}
    dirs = {}
    for i in range(repeat):
        for who, exe in (("ours", ours(program)), ("ref", str(Path(refdir) / program))):
            d = Path(tempfile.mkdtemp(prefix=f"{name}-{who}-"))
            for src, dst in inputs:
                shutil.copyfile(src, d / dst)
            times[who].append(timed([exe] + args, d, env))
            if who in dirs:
                shutil.rmtree(d)
            else:
                dirs[who] = d
    mo, mr = statistics.median(times["ours"]), statistics.median(times["ref"])
    print(f"  ours: median {mo:.3f} s  {['%.3f' % t for t in times['ours']]}")
    print(f"  ref:  median {mr:.3f} s  {['%.3f' % t for t in times['ref']]}")
    print(f"  speed-up (ref median / ours median): {mr / mo:.2f}x")
    ok_all = True
    for f in sorted(dirs["ref"].iterdir()):
        if f.suffix in (".bin", ".img") and f.name not in [dst for _s, dst in inputs]:
            ok, what = compare(dirs["ours"] / f.name, f)
            ok_all &= ok
            print(f"  {f.name}: {'match' if ok else 'MISMATCH'} ({what})")
    for d in dirs.values():
        shutil.rmtree(d)
    return ok_all, mr / mo


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-dir", required=True, help="folder holding the upstream nonBragg and noisify")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=["nonbragg2k", "noisify2k"])
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}   # all cores, both programs
    ok = True
    work = Path(tempfile.mkdtemp(prefix="companions-bench-"))
    nb_args = (HERE / "nonbragg2k.args").read_text().split()
    nz_args = (HERE / "noisify2k.args").read_text().split()
    # the noisify input: the float image nonbragg2k writes (made once, by the reference)
    shutil.copyfile(STOL, work / "water.stol")
    subprocess.run([str(Path(a.reference_dir) / "nonBragg")] + nb_args, cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    if a.only in (None, "nonbragg2k"):
        r, _ = bench("nonbragg2k", "nonBragg", nb_args, [(STOL, "water.stol")], a.reference_dir, a.repeat, env)
        ok &= r
    if a.only in (None, "noisify2k"):
        r, _ = bench("noisify2k", "noisify", nz_args, [(work / "float.bin", "water2k.bin")], a.reference_dir,
                     a.repeat, env)
        ok &= r
    shutil.rmtree(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
