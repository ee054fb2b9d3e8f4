#!/usr/bin/env python3
"""Benchmarks of the installed nanoBragg command and of simulate(), optionally
against an upstream nanoBragg binary timed in the same sitting.

    python benchmarks/run.py                                        # ours only
    python benchmarks/run.py --reference /path/to/upstream/nanoBragg
    python benchmarks/run.py --reference ... --threads 1 --only mosaic1k --repeat 5 --json out.json

Benchmarks (--only NAME, may be repeated or comma-separated):

  pilatus6m  nanoBragg $(cat pilatus6m.args): Pilatus 6M frame, 2463x2527, 10 phi steps, A.mat + scaled.hkl
  mosaic1k   nanoBragg $(cat mosaic1k.args): 1024^2, 10 mosaic domains x 5 divergence sources
             x 2x2 sub-pixels, with noise, cubic.hkl
  round1k    mosaic1k with -round_xtal;  gauss1k: with -gauss_xtal
  saxs1k     SAXS-style: the pilatus6m protein as one unit cell (-N 1: tricubic interpolation),
             1024^2 at 1 m, 5 wavelengths x 5 divergence sources x 2x2 sub-pixels, noise
  NAME@LEVEL pilatus6m and mosaic1k with NANOBRAGG_ISA=LEVEL (baseline, v3, v4) for ours
  pilatus6m+noskip  pilatus6m with -skip_negligible off for ours (its -nonoise turns skipping on,
             docs/skipping.md): every pixel summed
  readme256  nanoBragg $(cat readme256.args): the README's first example (256^2, all four images)
  small64    nanoBragg $(cat small64.args): the same on 64^2, where start-up and writing dominate
  tiny       per-call cost of simulate() on a 4x4-pixel detector (in a fresh interpreter:
             one warm-up call, then --tiny-calls calls; median microseconds per call)
  startup    the command on that 4x4 detector: the fixed cost of one process

"Ours" is the nanoBragg command installed next to the Python running this
script (else the one on PATH; --nanobragg PATH to choose).  Every command run
happens in a fresh temporary folder holding copies of the inputs it names
(from golden/inputs).  Wall time is measured from fork to exit; CPU time and
peak memory (max RSS) come from os.wait4() on that process alone (see
LAUNCHER below: it is started by a small launcher, whose floor of a few MB is
printed).  Work is counted in pixel-steps: pixels x (sources x mosaic domains
x phi steps x oversample^2 x sensor layers), the step counts being parsed from
what the program prints; "ns/step" is a run's CPU time (all threads, the whole
process) over its pixel-steps, printed next to the kernel's arithmetic floor
(FLOOR_CYCLES_PER_STEP below, at the clock /proc/cpuinfo reports).

With --reference, ours and the reference run alternately (ours, ref, ours,
ref, ...) so that both see the same machine load; the speed-up is
ref median / ours median, the memory ratio ours peak / ref peak, and our
float image is checked against the reference's by the golden rule
(|ours - ref| <= 1e-5 |ref| + 1e-6 max|ref| at every pixel).

--threads N sets OMP_NUM_THREADS=N for every run; by default it is removed
from the environment, so both programs use all cores.

This is a measuring tool, not a test: nothing imports it and it asserts no
timing.  The exit status is 1 only if a run fails or an image does not match.
Needs only the standard library and NumPy.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
INPUTS = REPO / "golden" / "inputs"

TINY_PARAMS = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5, wavelength=1,
                   distance=100, detpixels=4, pixel=0.1, seed=1)
TINY_ARGS = ("-cell 100 100 100 90 90 90 -default_F 100 -N 5 -lambda 1 -distance 100 "
             "-detpixels 4 -pixel 0.1 -seed 1 -floatfile float.bin -intfile int.img "
             "-noisefile noise.img -nopgm")

BENCHMARKS = {
    # name: (kind, description); kind "cli" runs the command, "api" calls simulate(),
    # "startup" runs the command on a job too small for a throughput figure.
    # NAME@LEVEL runs NAME.args with NANOBRAGG_ISA=LEVEL for ours (the reference
    # is the same binary every time, run alternately as always).
    "pilatus6m": ("cli", "Pilatus 6M frame, 10 phi steps, A.mat + scaled.hkl"),
    "mosaic1k": ("cli", "1024^2, 10 mosaic x 5 sources x 2x2 sub-pixels, noise"),
    "round1k": ("cli", "mosaic1k with -round_xtal"),
    "gauss1k": ("cli", "mosaic1k with -gauss_xtal"),
    "saxs1k": ("cli", "SAXS-style: -N 1 (tricubic interpolation), 1 m, 25 sources x 2x2, noise"),
    "pilatus6m+noskip": ("cli", "pilatus6m with -skip_negligible off for ours: every pixel summed"),
    "pilatus6m@baseline": ("cli", "pilatus6m, NANOBRAGG_ISA=baseline (x86-64, SSE2)"),
    "pilatus6m@v3": ("cli", "pilatus6m, NANOBRAGG_ISA=v3 (x86-64-v3: AVX2, FMA)"),
    "pilatus6m@v4": ("cli", "pilatus6m, NANOBRAGG_ISA=v4 (x86-64-v4: AVX-512)"),
    "mosaic1k@baseline": ("cli", "mosaic1k, NANOBRAGG_ISA=baseline"),
    "mosaic1k@v3": ("cli", "mosaic1k, NANOBRAGG_ISA=v3"),
    "mosaic1k@v4": ("cli", "mosaic1k, NANOBRAGG_ISA=v4"),
    "readme256": ("cli", "the README's first example: 256^2, no input files, all four images"),
    "small64": ("cli", "the same on 64^2: start-up and writing dominate"),
    "tiny": ("api", "simulate() on 4x4 pixels, per call"),
    "startup": ("startup", "nanoBragg on 4x4 pixels: the fixed cost of one process"),
}

# Arithmetic floor of the square-crystal kernel, CPU-ns per pixel-step on one
# core: the AVX-512 loop (csrc/kernel/body.c, acc_square) issues 42 FMA + 35
# multiply-class vector instructions per 8 steps (six sin(pi x) polynomials,
# h k l, the ratio) which need the two FMA/multiply pipes of a Zen 4/5 core:
# 77 / 2 = 38.5 cycles per 8 steps = 4.8 cycles per step, 1.85 ns at the
# 2.6 GHz /proc/cpuinfo reports (1.4 ns at 3.5 GHz boost).  Adds, compares,
# rounding and the one division go to the other pipes and overlap.
FLOOR_CYCLES_PER_STEP = 77 / 2 / 8

FLOAT_RTOL = 1e-5        # of |ref| per pixel
FLOAT_PEAK_TOL = 1e-6    # of max|ref| over the image


# ------------------------------------------------------------------ setup --

def bench_args(name):
    if name == "startup":
        return shlex.split(TINY_ARGS)
    return shlex.split((HERE / f"{name.split('@')[0].split('+')[0]}.args").read_text())


def bench_ours_extra(name):
    """Flags a NAME+VARIANT benchmark adds for ours (the reference has no such flag)."""
    return ["-skip_negligible", "off"] if name.endswith("+noskip") else []


def bench_isa(name):
    """The NANOBRAGG_ISA a NAME@LEVEL benchmark forces on ours, else None."""
    return name.split("@", 1)[1] if "@" in name else None


def stage_inputs(argv, workdir):
    """Copy every file of golden/inputs that argv names into workdir."""
    for tok in argv:
        if "/" in tok or tok.startswith("-"):
            continue
        src = INPUTS / tok
        if src.is_file():
            shutil.copyfile(src, Path(workdir) / tok)
        elif (INPUTS / (tok + ".gz")).is_file():
            with gzip.open(INPUTS / (tok + ".gz"), "rb") as fin, open(Path(workdir) / tok, "wb") as fout:
                shutil.copyfileobj(fin, fout)


def flag_value(argv, flag, default=None):
    value = default
    for i, tok in enumerate(argv[:-1]):
        if tok == flag:
            value = argv[i + 1]
    return value


def python_of(exe):
    """The interpreter of a console script (its #! line), else this one."""
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return sys.executable
    if first.startswith(b"#!"):
        cmd = shlex.split(first[2:].decode("utf-8", "replace").strip())
        if cmd and os.path.basename(cmd[0]) == "env":
            cmd = cmd[1:]
        if cmd and "python" in os.path.basename(cmd[0]):
            return shutil.which(cmd[0]) or cmd[0]
    return sys.executable


def find_ours():
    """The nanoBragg command installed with this Python (bin/ next to it), else the one on PATH."""
    for d in (os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))):
        exe = os.path.join(d, "nanoBragg")
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return shutil.which("nanoBragg")


def make_env(threads):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    return env


def machine_info():
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def cpu_ghz():
    """The clock /proc/cpuinfo reports (GHz), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


# -------------------------------------------------------------------- runs --

STEP_PATTERNS = {
    "sources": re.compile(r"^\s*(\d+) sources\s*$", re.M),
    "mosaic": re.compile(r"^\s*(\d+) mosaic domains", re.M),
    "phi": re.compile(r"^\s*(\d+) phi steps", re.M),
    "oversample": re.compile(r"^\s*(\d+)x\d+ pixel oversample steps", re.M),
    "layers": re.compile(r"^\s*sensor is \S+ m thick in (\d+) layers", re.M),
}


def parse_steps(stdout):
    """Steps per pixel as the program reports them, or None."""
    found = {}
    for key, pat in STEP_PATTERNS.items():
        m = pat.findall(stdout)
        if m:
            found[key] = int(m[-1])
    if not all(k in found for k in ("sources", "mosaic", "phi", "oversample")):
        return None, found
    steps = (found["sources"] * found["mosaic"] * found["phi"] * found["oversample"] ** 2
             * max(1, found.get("layers", 1)))
    return steps, found


# Each command is started by a small launcher (a fresh "python -S") that forks
# and execs it, waits for it with os.wait4() and reports that child's wall
# time, CPU time and max RSS.  Started directly from this process, the child's
# max RSS would never read below this process's own (Linux carries the RSS of
# the memory image an exec replaces into ru_maxrss, and this one holds NumPy
# and the images); the launcher's floor is a few MB, measured once per sitting.
LAUNCHER = r"""
import os, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
err = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
nul = os.open(os.devnull, os.O_RDONLY)
cmd = sys.argv[3:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(nul, 0); os.dup2(out, 1); os.dup2(err, 2)
        os.execv(cmd[0], cmd)
    except BaseException as e:
        os.write(2, ("cannot run %s: %s\n" % (cmd[0], e)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
import json   # only now: every module loaded before the fork raises the floor
unit = 1.0 if sys.platform == "darwin" else 1024.0   # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                  "cpu_s": ru.ru_utime + ru.ru_stime,
                  "maxrss_mb": ru.ru_maxrss * unit / 1048576.0, "returncode": code}))
"""


def launch(cmd, cwd, env, out_path, err_path):
    proc = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, out_path, err_path] + list(cmd),
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        return json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"returncode": proc.returncode if proc.returncode else -1, "wall_s": 0.0, "cpu_s": 0.0,
                "maxrss_mb": 0.0, "error": "launcher failed: " + proc.stderr.decode(errors="replace")[-500:]}


def launcher_floor(env, scratch):
    """Max RSS the launcher reports for a program that uses (almost) nothing."""
    true = shutil.which("true") or "/bin/true"
    work = tempfile.mkdtemp(prefix="nb-bench-", dir=scratch)
    try:
        r = launch([true], work, env, os.path.join(work, "o"), os.path.join(work, "e"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return r.get("maxrss_mb") if r.get("returncode") == 0 else None


def run_cli(exe, argv, env, keep_float, scratch):
    """One run of exe argv in a fresh folder.  Returns a dict of measurements."""
    work = tempfile.mkdtemp(prefix="nb-bench-", dir=scratch)
    try:
        stage_inputs(argv, work)
        out_path, err_path = os.path.join(work, "stdout.txt"), os.path.join(work, "stderr.txt")
        res = launch([exe] + list(argv), work, env, out_path, err_path)
        stdout = Path(out_path).read_text(errors="replace") if os.path.exists(out_path) else ""
        if res["returncode"] != 0:
            if "error" not in res:
                stderr = Path(err_path).read_text(errors="replace") if os.path.exists(err_path) else ""
                res["error"] = (stderr[-2000:] or stdout[-2000:]).strip()
            return res
        steps, found = parse_steps(stdout)
        res["steps_per_pixel"] = steps
        res["step_counts"] = found
        fpath = os.path.join(work, flag_value(argv, "-floatfile", "floatimage.bin"))
        try:
            res["pixels"] = os.path.getsize(fpath) // 4
            if keep_float:
                res["_float"] = np.fromfile(fpath, dtype="<f4")
        except OSError:
            res["pixels"] = None
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


TINY_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
try:
    from nanobragg import simulate
except Exception as e:
    print(json.dumps({"error": "simulate() is not importable: %s: %s" % (type(e).__name__, e)}))
    sys.exit(0)
t1 = time.perf_counter()
kw = json.loads(sys.argv[2])
kw["cell"] = tuple(kw["cell"])
try:
    r = simulate(**kw)
except Exception as e:
    print(json.dumps({"error": "simulate() failed: %s: %s" % (type(e).__name__, e)}))
    sys.exit(0)
t2 = time.perf_counter()
n = int(sys.argv[1])
ts = []
for _ in range(n):
    a = time.perf_counter()
    simulate(**kw)
    ts.append(time.perf_counter() - a)
ts.sort()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "calls": n,
                  "median_us": ts[n // 2] * 1e6, "best_us": ts[0] * 1e6,
                  "shape": list(r.float_image.shape)}))
"""


def run_tiny(python, calls, env, scratch):
    work = tempfile.mkdtemp(prefix="nb-bench-", dir=scratch)
    try:
        proc = subprocess.run([python, "-c", TINY_CODE, str(calls), json.dumps(TINY_PARAMS)],
                              cwd=work, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": "the simulate() run failed (exit %d): %s"
                % (proc.returncode, proc.stderr.decode(errors="replace").strip()[-500:])}


# ---------------------------------------------------------------- compare --

def compare_float(ours, ref):
    """Golden rule on the float image: (ok, worst |d|/tol, pixels off, message)."""
    if ours.size != ref.size:
        return False, None, None, f"{ours.size} pixels, reference has {ref.size}"
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    if not np.all(np.isfinite(o)):
        return False, None, None, "non-finite pixels in ours"
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    tol = FLOAT_RTOL * np.abs(r) + FLOAT_PEAK_TOL * peak
    diff = np.abs(o - r)
    bad = int(np.count_nonzero(diff > tol))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, diff / tol, np.where(diff > 0, np.inf, 0.0))
    worst = float(np.max(ratio)) if ratio.size else 0.0
    return bad == 0, worst, bad, ""


def summarize(runs, pixel_steps=None):
    ok = [r for r in runs if r.get("returncode", 0) == 0 and "error" not in r]
    if not ok:
        return None
    walls = [r["wall_s"] for r in ok]
    med = statistics.median(walls)
    s = {"runs": len(ok), "best_s": min(walls), "median_s": med,
         "spread_pct": 100.0 * (max(walls) - min(walls)) / med if med > 0 else 0.0,
         "cpu_s": statistics.median(r["cpu_s"] for r in ok),
         "peak_mb": max(r["maxrss_mb"] for r in ok)}
    if pixel_steps:
        s["pixel_steps"] = pixel_steps
        s["cpu_ns_per_step"] = s["cpu_s"] / pixel_steps * 1e9
        s["mpix_steps_per_s"] = pixel_steps / med / 1e6
        s["mpix_steps_per_s_best"] = pixel_steps / min(walls) / 1e6
    return s


# ----------------------------------------------------------------- output --

HEAD = ("benchmark", "prog", "runs", "best s", "median s", "spread", "cpu s", "peak MB", "Mpix-steps/s")
WIDTHS = (10, 5, 4, 8, 9, 7, 8, 8, 12)


def row(cells):
    out = []
    for i, (c, w) in enumerate(zip(cells, WIDTHS)):
        out.append(str(c).ljust(w) if i < 2 else str(c).rjust(w))
    return "  ".join(out).rstrip()


def fmt_t(x):
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.2f}")


def table_line(name, prog, s):
    if s is None:
        return row((name, prog, 0, "-", "-", "-", "-", "-", "-"))
    rate = s.get("mpix_steps_per_s")
    return row((name, prog, s["runs"], fmt_t(s["best_s"]), fmt_t(s["median_s"]),
                f"{s['spread_pct']:.0f}%", fmt_t(s["cpu_s"]), f"{s['peak_mb']:.1f}",
                "-" if rate is None else f"{rate:.1f}"))


def say(*a):
    print(*a, flush=True)


# -------------------------------------------------------------------- main --

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Benchmarks: " + ", ".join(BENCHMARKS))
    ap.add_argument("--reference", metavar="PATH",
                    help="an upstream nanoBragg binary to time alternately with ours and compare against")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="OMP_NUM_THREADS for every run (default: unset, i.e. all cores)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only these benchmarks (repeatable, or comma-separated)")
    ap.add_argument("--repeat", type=int, default=3, metavar="K", help="runs per program (default 3)")
    ap.add_argument("--json", metavar="FILE", help="save every measurement to FILE")
    ap.add_argument("--nanobragg", metavar="PATH",
                    help="our command (default: the nanoBragg installed next to this Python, else on PATH)")
    ap.add_argument("--tiny-calls", type=int, default=1000, metavar="N",
                    help="simulate() calls per tiny run (default 1000)")
    ap.add_argument("--scratch", metavar="DIR", help="where the per-run folders go (default: the temp dir)")
    args = ap.parse_args(argv)

    names = list(BENCHMARKS)
    if args.only:
        want = [n.strip() for o in args.only for n in o.split(",") if n.strip()]
        unknown = [n for n in want if n not in BENCHMARKS]
        if unknown:
            ap.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
        names = [n for n in names if n in want]
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be at least 1")

    ours = args.nanobragg or find_ours()
    if not ours:
        ap.error("no nanoBragg command on PATH: pip install the package (or give --nanobragg PATH)")
    ours = os.path.abspath(ours)
    ref = None
    if args.reference:
        ref = os.path.abspath(args.reference)
        if not (os.path.isfile(ref) and os.access(ref, os.X_OK)):
            ap.error(f"--reference {args.reference}: not an executable file")
    python = python_of(ours)
    env = make_env(args.threads)

    try:
        version = subprocess.run([ours, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 env=env, timeout=120).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.SubprocessError):
        version = "?"

    info = machine_info()
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
              "ours": ours, "ours_version": version, "ours_python": python, "reference": ref,
              "threads": args.threads, "repeat": args.repeat, "load_start": loadavg(),
              "benchmarks": {}}

    say(f"nanoBragg benchmarks, {result['date']}")
    say(f"machine: {info.get('cpu', '?')}, {info.get('cpus_usable', info['cpus'])} usable cores, "
        f"{info['platform']}")
    say(f"ours:    {ours} ({version})")
    if ref:
        say(f"ref:     {ref}")
    say("threads: " + (f"OMP_NUM_THREADS={args.threads}" if args.threads
                       else "all cores (OMP_NUM_THREADS unset)"))
    say(f"runs:    {args.repeat} per program" + (", ours and ref alternating" if ref else "")
        + f"; load average at start {result['load_start']}")
    floor = launcher_floor(env, args.scratch)
    result["rss_floor_mb"] = floor
    if floor is not None:
        say(f"memory:  max RSS of each run's process; {floor:.1f} MB is the launcher's floor "
            "(a run reading that little used at most that)")
    say()

    failed = False
    lines, notes = [], []
    for name in names:
        kind, desc = BENCHMARKS[name]
        say(f"-- {name}: {desc}")
        entry = {"description": desc}
        result["benchmarks"][name] = entry

        if kind == "api":
            runs = []
            for i in range(args.repeat):
                r = run_tiny(python, args.tiny_calls, env, args.scratch)
                runs.append(r)
                if "error" in r:
                    break
                say(f"   run {i + 1}: import {r['import_s'] * 1e3:.0f} ms, first call "
                    f"{r['first_call_s'] * 1e3:.1f} ms, median {r['median_us']:.1f} us/call "
                    f"over {r['calls']} calls")
            entry["ours_runs"] = runs
            if "error" in runs[-1]:
                say(f"   skipped: {runs[-1]['error']}")
                entry["skipped"] = runs[-1]["error"]
                notes.append(f"{'tiny:':11s}skipped ({runs[-1]['error']})")
                continue
            meds = [r["median_us"] for r in runs]
            entry["ours"] = {"runs": len(runs), "best_us": min(r["best_us"] for r in runs),
                             "median_us": statistics.median(meds),
                             "import_s": statistics.median(r["import_s"] for r in runs),
                             "first_call_s": statistics.median(r["first_call_s"] for r in runs)}
            e = entry["ours"]
            notes.append(f"{'tiny:':11s}simulate() on 4x4 pixels: {e['median_us']:.1f} us/call median "
                         f"(best run median {min(meds):.1f}); import nanobragg {e['import_s'] * 1e3:.0f} ms, "
                         f"first call {e['first_call_s'] * 1e3:.1f} ms")
            continue

        argv = bench_args(name)
        entry["args"] = argv
        isa = bench_isa(name)
        ours_env = dict(env)
        if isa:
            ours_env["NANOBRAGG_ISA"] = isa
            entry["isa"] = isa
        progs = [("ours", ours)] + ([("ref", ref)] if ref else [])
        runs = {p: [] for p, _ in progs}
        floats = {}
        broken = set()
        for i in range(args.repeat):
            for prog, exe in progs:
                if prog in broken:
                    continue
                r = run_cli(exe, argv + (bench_ours_extra(name) if prog == "ours" else []),
                            ours_env if prog == "ours" else env, keep_float=(prog not in floats),
                            scratch=args.scratch)
                if "_float" in r:
                    floats[prog] = r.pop("_float")
                runs[prog].append(r)
                if r["returncode"] != 0:
                    broken.add(prog)
                    failed = True
                    say(f"   {prog} run {i + 1} FAILED (exit {r['returncode']}): {r.get('error', '')[-500:]}")
                    continue
                say(f"   {prog:4s} run {i + 1}: {r['wall_s']:7.3f} s wall, {r['cpu_s']:7.3f} s cpu, "
                    f"{r['maxrss_mb']:7.1f} MB peak")
        for prog, _ in progs:
            entry[prog + "_runs"] = runs[prog]
            good = [r for r in runs[prog] if r["returncode"] == 0]
            ps = None
            if kind == "cli" and good and good[0].get("steps_per_pixel") and good[0].get("pixels"):
                ps = good[0]["pixels"] * good[0]["steps_per_pixel"]
                entry.setdefault("pixels", good[0]["pixels"])
                entry.setdefault("steps_per_pixel", good[0]["steps_per_pixel"])
                entry.setdefault("step_counts", good[0]["step_counts"])
            entry[prog] = summarize(runs[prog], ps)
        if "pixels" in entry:
            c = entry["step_counts"]
            say(f"   work: {entry['pixels']} pixels x {entry['steps_per_pixel']} steps "
                f"({c.get('sources')} sources x {c.get('mosaic')} mosaic x {c.get('phi')} phi x "
                f"{c.get('oversample')}^2 oversample"
                + (f" x {c['layers']} layers" if c.get("layers", 1) > 1 else "")
                + f") = {entry['pixels'] * entry['steps_per_pixel'] / 1e6:.1f} M pixel-steps")
        lines.append(table_line(name, "ours", entry["ours"]))
        if ref:
            lines.append(table_line(name, "ref", entry["ref"]))
            o, rf = entry["ours"], entry["ref"]
            cmp_ = {}
            if o and rf:
                cmp_["speedup"] = rf["median_s"] / o["median_s"]
                cmp_["speedup_best"] = rf["best_s"] / o["best_s"]
                cmp_["cpu_ratio"] = rf["cpu_s"] / o["cpu_s"] if o["cpu_s"] > 0 else None
                cmp_["memory_ratio"] = o["peak_mb"] / rf["peak_mb"]
            if "ours" in floats and "ref" in floats:
                ok, worst, bad, msg = compare_float(floats["ours"], floats["ref"])
                cmp_.update({"float_match": ok, "worst_over_tol": worst, "pixels_off": bad})
                if msg:
                    cmp_["message"] = msg
                if not ok:
                    failed = True
            entry["compare"] = cmp_
            if cmp_:
                parts = []
                if "speedup" in cmp_:
                    parts.append(f"speed-up {cmp_['speedup']:.2f}x (ref median / ours median wall time; "
                                 f"best/best {cmp_['speedup_best']:.2f}x; CPU time ref/ours "
                                 + (f"{cmp_['cpu_ratio']:.2f}x)" if cmp_["cpu_ratio"] else "-)"))
                    parts.append(f"memory  {cmp_['memory_ratio']:.2f}x (ours peak / ref peak: "
                                 f"{o['peak_mb']:.1f} / {rf['peak_mb']:.1f} MB)")
                if o and o.get("cpu_ns_per_step"):
                    ghz = cpu_ghz()
                    floor = f"; floor {FLOOR_CYCLES_PER_STEP / ghz:.2f} ns at {ghz:.2f} GHz" if ghz else ""
                    parts.append(f"ns/step {o['cpu_ns_per_step']:.2f} ours, {rf['cpu_ns_per_step']:.2f} ref "
                                 f"(CPU time / pixel-steps, whole run{floor})")
                if "float_match" in cmp_:
                    verdict = "PASS" if cmp_["float_match"] else "FAIL"
                    detail = cmp_.get("message") or (
                        f"worst pixel at {cmp_['worst_over_tol']:.3g} of tolerance"
                        + ("" if cmp_["float_match"] else f", {cmp_['pixels_off']} pixels off"))
                    parts.append(f"match   {verdict}: float image vs ref, golden rule ({detail})")
                notes.append(f"{name + ':':11s}" + ("\n" + " " * 11).join(parts))
        say()

    result["load_end"] = loadavg()
    say("=" * 92)
    if lines:
        say(row(HEAD))
        for l in lines:
            say(l)
        say("=" * 92)
        say("spread = (slowest - fastest) / median; Mpix-steps/s from the median wall time;"
            " peak MB = max RSS of the process")
    for n in notes:
        say(n)
    say(f"load average: {result['load_start']} at start, {result['load_end']} at end")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        say(f"saved {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
