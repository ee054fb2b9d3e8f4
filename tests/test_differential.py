"""Differential test: random valid option combinations, ours against a reference binary.

Skipped unless NANOBRAGG_REFERENCE names a reference ``nanoBragg`` you built
yourself (upstream nanoBragg.c main + its three fix branches, as
golden/README.md describes; never part of this project).  Each combination
runs both programs in their own empty folder on small detectors and compares
every output by the golden rules (tests/goldenlib.py), and the "N% done"
lines of their stdout.

The generator draws conventions, custom vectors, pivots, rotations,
two-theta, curved and point pixels, misset, crystal sizes (exact multiples
of a cell edge too), phi, mosaic, divergence, dispersion, source files,
sub-pixels, sensor layers, spot shapes, interpolation, polarization, water,
dmin, roi, masks and -img headers, the image scales and the per-pixel dump
(-printout, -printout_pixel, compared line by line).  It avoids what
docs/differences.md lists: every flag at most once and by its exact name,
-twotheta always after -twotheta_axis and -misset_seed only right before
-misset random (the reference's substring accidents), no -pix0_vector, no
inverted or off-detector roi, -seed always given.

    NANOBRAGG_REFERENCE=/tmp/ref/nanoBragg pytest -q tests/test_differential.py
    NANOBRAGG_REFERENCE=/tmp/ref/nanoBragg python tests/test_differential.py --cases 3000 --jobs 2

NANOBRAGG_DIFF_CASES (default 40) and NANOBRAGG_DIFF_SEED (default 1) set
how many combinations pytest draws and from which seed.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import goldenlib  # noqa: E402

REFERENCE = os.environ.get("NANOBRAGG_REFERENCE", "")
SEED = goldenlib.DIFF_SEED
MAX_SAMPLES = 250          # steps per pixel (sub-pixels x layers x sources x phi x mosaic), for speed

OUTPUT_NAMES = {"float.bin": "-floatfile", "int.img": "-intfile", "noise.img": "-noisefile", "image.pgm": "-pgmfile"}

# the lab direction each convention's beam travels along (sources sit behind the sample)
_BEAM = {"-mosflm": (1, 0, 0), "-denzo": (1, 0, 0), "-adxv": (0, 0, 1), "-xds": (0, 0, 1), "-dials": (0, 0, 1),
         None: (1, 0, 0)}
# MOSFLM's frame, the default that custom vectors start from
_MOSFLM = {"-fdet_vector": (0, 0, 1), "-sdet_vector": (0, -1, 0), "-odet_vector": (1, 0, 0),
           "-beam_vector": (1, 0, 0), "-polar_vector": (0, 0, 1), "-spindle_axis": (0, 0, 1),
           "-twotheta_axis": (0, 1, 0)}


def _f(x: float) -> str:
    return "%.6g" % x


class Combination:
    """One random command line and the input files it needs."""

    def __init__(self, index: int, seed: int = SEED):
        self.index = index
        rng = random.Random(seed * 1_000_003 + index)
        self.files: dict = {}       # name -> bytes written into both folders
        self.inputs: list = []      # golden/inputs files copied into both folders
        groups = []                 # lists of tokens; shuffled, then -seed last
        samples = 1

        def maybe(p):
            return rng.random() < p

        # crystal
        if maybe(0.8):
            a, b, c = (rng.uniform(30, 80) for _ in range(3))
            if maybe(0.5):
                al = be = ga = 90.0
            else:
                al, be, ga = (rng.uniform(75, 105) for _ in range(3))
            if maybe(0.3):
                a = b = c = rng.choice([40.0, 50.0, 60.0])
            groups.append(["-cell"] + [_f(x) for x in (a, b, c, al, be, ga)])
            edge = a
        else:
            self.inputs.append("A.mat")
            groups.append([rng.choice(["-mat", "-matrix"]), "A.mat"])
            edge = 170.0
        hkl = None
        if maybe(0.4):
            hkl = rng.choice(["small.hkl", "cubic.hkl", "tri.hkl"])
            self.inputs.append(hkl)
            groups.append(["-hkl", hkl])
            if maybe(0.5):
                groups.append(["-default_F", _f(rng.uniform(0, 20))])
        else:
            groups.append(["-default_F", _f(rng.uniform(1, 100))])
        if maybe(0.3):
            # sometimes an exact multiple of the first edge (the rounding bug)
            size_um = edge * 1e-4 * rng.randint(2, 30) if maybe(0.5) else rng.uniform(0.05, 1.5)
            groups.append([rng.choice(["-xtalsize", "-samplesize"]), _f(size_um / 1000)])
        elif maybe(0.2):
            for flag in ("-xtal_x", "-xtal_y", "-xtal_z"):
                if maybe(0.7):
                    groups.append([flag, _f(edge * 1e-7 * rng.randint(1, 20))])
        elif maybe(0.3):
            for flag in ("-Na", "-Nb", "-Nc"):
                if maybe(0.7):
                    groups.append([flag, str(rng.randint(1, 12))])
        else:
            groups.append(["-N", str(rng.randint(1, 12))])
        if maybe(0.5):
            groups.append(["-misset"] + [_f(rng.uniform(-180, 180)) for _ in range(3)])
        elif maybe(0.2):
            groups.append(["-misset_seed", str(rng.randint(1, 10**6)), "-misset", "random"])
        if maybe(0.3):
            groups.append([rng.choice(["-round_xtal", "-gauss_xtal", "-tophat_spots", "-square_xtal"])])
            if maybe(0.5):
                groups.append(["-fudge", _f(rng.uniform(0.5, 2))])
        if hkl and maybe(0.4):
            groups.append([rng.choice(["-interpolate", "-nointerpolate"])])

        # beam
        if maybe(0.8):
            groups.append([rng.choice(["-lambda", "-wave"]), _f(rng.uniform(0.7, 1.6))])
        else:
            groups.append(["-energy", _f(rng.uniform(8000, 15000))])
        if maybe(0.25):
            groups.append(["-dispersion", _f(rng.uniform(0, 3))])
            steps = rng.randint(1, 3)
            groups.append(["-dispsteps", str(steps)])
            samples *= steps
        if maybe(0.25):
            if maybe(0.5):
                groups.append(["-divergence", _f(rng.uniform(0, 2))])
            else:
                groups.append(["-hdivrange", _f(rng.uniform(0, 2))])
                groups.append(["-vdivrange", _f(rng.uniform(0, 2))])
            h, v = rng.randint(1, 3), rng.randint(1, 3)
            if maybe(0.5):
                groups.append(["-hdivsteps", str(h)])
                groups.append(["-vdivsteps", str(v)])
            else:
                groups.append(["-divsteps", str(h)])
                v = h
            samples *= h * v
            if maybe(0.5):
                groups.append([rng.choice(["-square_div", "-round_div"])])
        if maybe(0.3):
            groups.append(["-polar", _f(rng.uniform(0, 1))])
        elif maybe(0.15):
            groups.append(["-nopolar"])
        r = rng.random()
        if r < 0.3:
            groups.append(["-fluence", _f(10 ** rng.uniform(20, 30))])
        elif r < 0.5:
            groups.append(["-flux", _f(10 ** rng.uniform(8, 14))])
            groups.append(["-exposure", _f(rng.uniform(0.1, 10))])
            groups.append(["-beamsize", _f(rng.uniform(0.001, 0.2))])

        # detector and convention
        header = None
        if maybe(0.08):
            header = rng.choice(["-mask", "-img"])
            name = "mask.img" if header == "-mask" else "header.img"
            self.inputs.append(name)
            groups.append([header, name])
        conv = None
        if maybe(0.5):
            conv = rng.choice(["-mosflm", "-denzo", "-adxv", "-xds", "-dials"])
            groups.append([conv])
        if maybe(0.3):
            # custom vectors: MOSFLM's frame, gently turned, so the beam still meets the detector
            for flag in rng.sample(sorted(_MOSFLM), rng.randint(1, 3)):
                v = [x + rng.uniform(-0.15, 0.15) for x in _MOSFLM[flag]]
                if flag == "-twotheta_axis":
                    groups.append([flag] + [_f(x) for x in v] + ["-twotheta", _f(rng.uniform(-20, 20))])
                else:
                    groups.append([flag] + [_f(x) for x in v])
            conv = "custom"
        if header is None:
            if maybe(0.7):
                groups.append(["-detpixels", str(rng.randint(24, 48))])
            else:
                groups.append(["-detpixels_f" if maybe(0.5) else "-detpixels_x", str(rng.randint(24, 48))])
                groups.append(["-detpixels_s" if maybe(0.5) else "-detpixels_y", str(rng.randint(24, 48))])
            groups.append(["-pixel", _f(rng.uniform(0.05, 0.25))])
        if maybe(0.75):
            groups.append(["-distance", _f(rng.uniform(40, 200))])
        elif maybe(0.5):
            groups.append(["-close_distance", _f(rng.uniform(40, 200))])
        r = rng.random()
        if r < 0.25:
            groups.append(["-Xbeam", _f(rng.uniform(0.5, 4))])
            groups.append(["-Ybeam", _f(rng.uniform(0.5, 4))])
        elif r < 0.35:
            groups.append(["-Xclose", _f(rng.uniform(0.5, 4))])
            groups.append(["-Yclose", _f(rng.uniform(0.5, 4))])
        elif r < 0.45:
            groups.append(["-ORGX", _f(rng.uniform(5, 30))])
            groups.append(["-ORGY", _f(rng.uniform(5, 30))])
        if maybe(0.2):
            groups.append(["-pivot", rng.choice(["beam", "sample"])])
        for flag in ("-detector_rotx", "-detector_roty", "-detector_rotz"):
            if maybe(0.15):
                groups.append([flag, _f(rng.uniform(-8, 8))])
        if maybe(0.2) and not any(g[0] == "-twotheta_axis" for g in groups):
            groups.append(["-twotheta", _f(rng.uniform(-20, 20))])
        if maybe(0.15):
            groups.append(["-curved_det"])
        if maybe(0.15):
            groups.append(["-point_pixel"])
        if maybe(0.25):
            groups.append(["-detector_thick", _f(rng.uniform(10, 400))])
            groups.append(["-detector_abs", rng.choice(["inf", _f(rng.uniform(30, 600))])])
            layers = rng.randint(1, 3)
            groups.append([rng.choice(["-detector_thicksteps", "-thicksteps"]), str(layers)])
            samples *= layers
            if maybe(0.4):
                groups.append(["-oversample_thick"])
        over = 1
        if maybe(0.4):
            over = rng.randint(1, 3)
            groups.append(["-oversample", str(over)])
            for flag in ("-oversample_omega", "-oversample_polar"):
                if maybe(0.3):
                    groups.append([flag])
        samples *= over * over

        # spindle and mosaic
        if maybe(0.3):
            groups.append(["-phi", _f(rng.uniform(-30, 30))])
            groups.append(["-osc", _f(rng.uniform(0, 2))])
            n = rng.randint(1, 3)
            if maybe(0.5):
                groups.append(["-phisteps", str(n)])
            else:
                groups.append(["-phistep", _f(rng.uniform(0.4, 2))])
                n = 3
            samples *= n
        if maybe(0.25):
            groups.append([rng.choice(["-mosaic", "-mosaic_spread"]), _f(rng.uniform(0, 2))])
            n = rng.randint(1, 4)
            groups.append([rng.choice(["-mosaic_domains", "-mosaic_dom"]), str(n)])
            groups.append(["-mosaic_seed", str(rng.randint(1, 10**6))])
            samples *= n

        # sources (then divergence and dispersion make no steps of their own)
        if maybe(0.1):
            beam = _BEAM.get(conv, (1, 0, 0))
            lines = []
            for _ in range(rng.randint(1, 3)):
                pos = [-10 * x + rng.uniform(-0.003, 0.003) for x in beam]
                cols = pos + [rng.uniform(0.2, 2), rng.uniform(0.9, 1.3) * 1e-10]
                lines.append(" ".join(_f(x) for x in cols[:rng.choice([3, 4, 5])]))
            self.files["sources.txt"] = ("\n".join(lines) + "\n").encode()
            groups.append(["-sourcefile", "sources.txt"])

        # background, resolution, region, scales
        if maybe(0.2):
            groups.append(["-water", _f(rng.uniform(0, 80))])
        if maybe(0.15):
            groups.append(["-dmin", _f(rng.uniform(1.5, 6))])
        if maybe(0.15) and header is None:
            lo_f, lo_s = rng.randint(0, 10), rng.randint(0, 10)
            groups.append(["-roi", str(lo_f), str(lo_f + rng.randint(0, 13)), str(lo_s), str(lo_s + rng.randint(0, 13))])
        if maybe(0.2):
            groups.append(["-scale", _f(10 ** rng.uniform(-2, 4))])
        if maybe(0.15):
            groups.append(["-pgmscale", _f(10 ** rng.uniform(-2, 2))])
        if maybe(0.15):
            groups.append([rng.choice(["-adc", "-adcoffset"]), _f(rng.uniform(0, 100))])

        # the per-pixel dump: every pixel, or one (which may be outside the roi).
        # Only with an HKL file: without one the reference prints uninitialised
        # memory for values no step has set yet (docs/differences.md)
        if maybe(0.1) and any(name.endswith(".hkl") for name in self.inputs):
            groups.append(["-printout"] if maybe(0.5) else ["-printout_pixel", str(rng.randint(0, 23)),
                                                             str(rng.randint(0, 23))])

        self.samples = samples
        rng.shuffle(groups)
        self.args = [t for g in groups for t in g] + ["-seed", str(rng.randint(1, 10**6))]

    def __repr__(self):
        return f"Combination({self.index}): nanoBragg {' '.join(self.args)}"


def draw(index: int, seed: int = SEED) -> Combination:
    """Combination number index, redrawn (deterministically) until it is quick to render."""
    k = 0
    while True:
        c = Combination(index + 7_919 * k, seed)
        if c.samples <= MAX_SAMPLES:
            c.index = index
            return c
        k += 1


def _run(command, combo, folder, env=None):
    folder.mkdir(parents=True)
    for name in combo.inputs:
        shutil.copyfile(goldenlib.INPUTS / name, folder / name)
    for name, data in combo.files.items():
        (folder / name).write_bytes(data)
    cmd = list(command) + combo.args + [t for n, f in OUTPUT_NAMES.items() for t in (f, n)]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)


def compare(combo, reference=REFERENCE):
    """Every problem of ours against the reference for one combination ([] = match)."""
    work = Path(tempfile.mkdtemp(prefix="nbdiff-"))
    try:
        ref = _run([reference], combo, work / "ref")
        ours = _run(goldenlib.nanobragg_command(), combo, work / "ours")
        if ref.returncode != 0:
            return [f"the reference failed ({ref.returncode}): {ref.stdout.decode(errors='replace')[-200:]}"]
        if ours.returncode != 0:
            return [f"ours failed ({ours.returncode}): {ours.stderr.decode(errors='replace').strip()[-300:]}"]
        problems = []
        if any(a.startswith("-printout") for a in combo.args):
            problems += goldenlib.compare_printout(ours.stdout.decode(errors="replace"),
                                                   ref.stdout.decode(errors="replace"))
        ref_meter, our_meter = (_progress_lines(p.stdout) for p in (ref, ours))
        if ref_meter != our_meter:
            first = next((i for i, (a, b) in enumerate(zip(ref_meter, our_meter)) if a != b),
                         min(len(ref_meter), len(our_meter)))
            problems.append(f"stdout: {len(our_meter)} progress lines, the reference {len(ref_meter)}; first "
                            f"difference at line {first}")
        width = None
        try:
            width = int(goldenlib.parse_smv((work / "ref" / "int.img").read_bytes())[0]["SIZE1"])
        except (OSError, ValueError, KeyError):
            pass
        for name in OUTPUT_NAMES:
            r, o = work / "ref" / name, work / "ours" / name
            if not r.exists():
                if o.exists():
                    problems.append(f"{name}: written by ours only")
                continue
            if not o.exists():
                problems.append(f"{name}: not written by ours")
                continue
            rb, ob = r.read_bytes(), o.read_bytes()
            if name == "float.bin":
                problems += goldenlib.compare_float(ob, rb, width)
            elif name == "int.img":
                problems += goldenlib.compare_smv(ob, rb, name)
            elif name == "noise.img":
                problems += goldenlib.compare_noise(ob, rb)
            else:
                problems += goldenlib.compare_pgm(ob, rb)
        return problems
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _progress_lines(stdout):
    """The "N% done" lines and the interpolation warnings they interleave with."""
    keep = ("% done", "WARNING: out of range", "WARNING: further")
    return [l for l in stdout.decode(errors="replace").splitlines() if any(k in l for k in keep)]


def _reference_ok():
    return bool(REFERENCE) and os.path.isfile(REFERENCE) and os.access(REFERENCE, os.X_OK)


needs_reference = pytest.mark.skipif(
    not _reference_ok(),
    reason="set NANOBRAGG_REFERENCE to a reference nanoBragg binary you built (see golden/README.md) "
           "to compare random option combinations against it")


def test_generator_is_deterministic_and_covers_the_options():
    a = [draw(i, 5).args for i in range(300)]
    assert a == [draw(i, 5).args for i in range(300)]
    seen = {t for args in a for t in args if t.startswith("-") and not t[1:2].isdigit()}
    for flag in ("-xds", "-dials", "-adxv", "-denzo", "-fdet_vector", "-twotheta_axis", "-pivot", "-detector_rotx",
                 "-twotheta", "-curved_det", "-point_pixel", "-misset", "-xtalsize", "-phisteps", "-mosaic_domains",
                 "-hdivsteps", "-dispsteps", "-sourcefile", "-oversample", "-oversample_thick", "-detector_thicksteps",
                 "-gauss_xtal", "-interpolate", "-polar", "-nopolar", "-water", "-dmin", "-roi", "-mask", "-img",
                 "-scale", "-pgmscale", "-adc"):
        assert flag in seen, flag
    for args in a:
        flags = [t for t in args if t.startswith("-") and not t[1:2].isdigit() and t != "-inf"]
        assert len(flags) == len(set(flags)), args          # every flag once
        if "-twotheta_axis" in args:                         # the reference's substring accident
            assert args[args.index("-twotheta_axis") + 4] == "-twotheta"
        if "-misset_seed" in args:
            assert args[args.index("-misset_seed") + 2:args.index("-misset_seed") + 4] == ["-misset", "random"]
        assert args[-2] == "-seed"


@needs_reference
def test_random_combinations_match_the_reference():
    goldenlib.assert_differential_match(draw, compare)


def main(argv=None) -> int:
    return goldenlib.differential_main(argv, __doc__, draw, compare, _reference_ok,
                                       "NANOBRAGG_REFERENCE must name the reference nanoBragg binary")


if __name__ == "__main__":
    raise SystemExit(main())
