"""Differential test of the companions: random valid option combinations of
nonBragg, noisify and float_add, ours against the reference binaries.

Skipped unless NANOBRAGG_COMPANIONS_REFERENCE names a folder holding the
upstream nonBragg, noisify and float_add that you built yourself (the
sources golden/companions/README.md names; never part of this project).
Each combination runs both programs in their own empty folder holding the
golden inputs and compares every output by that README's rules (float, smv,
noise, pgm; float_add's printed numbers too).

The generator draws, for nonBragg: tables by -stol/-4stol/-Q, detector
sizes and pixel counts, beam centres and pivots (Xbeam, Xclose, ORGX,
close_distance), rotations and two-theta, curved and point pixels,
sub-pixels, divergence (round and square), dispersion, source files, sample
size, density, MW and molecules, fluence or flux, polarization, roi, Fmap
and the image scales; for noisify: scale, fluence, gain, adc, flicker,
calibration and its seed, read-out noise, Gaussian and fiber PSFs with
automatic or given radius, 16 and 32 bits, sizes from -detpixels, its x/y
forms, a guess or a -header, and the header values; for float_add: one or
two inputs, scales, offsets, ignore values, -normalize, -histogram, -bin,
-reject and -header.  It keeps to what the README says the references do
well: no flag that takes a value as the last argument, no -histogram
with -reject (the reference crashes), no divergence grid cut to nothing, no negative ADUs,
no -nonoise with an automatic Gauss radius, no PGM compared where the
float image goes negative, -seed always given.

    NANOBRAGG_COMPANIONS_REFERENCE=/tmp/ref pytest -q tests/test_differential_companions.py
    NANOBRAGG_COMPANIONS_REFERENCE=/tmp/ref python tests/test_differential_companions.py --cases 600 --jobs 2

NANOBRAGG_DIFF_CASES (default 40) and NANOBRAGG_DIFF_SEED (default 1) set
how many combinations pytest draws and from which seed.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import goldenlib  # noqa: E402
import test_companions_golden as cg  # noqa: E402

REFERENCE_DIR = os.environ.get("NANOBRAGG_COMPANIONS_REFERENCE", "")
SEED = goldenlib.DIFF_SEED
PROGRAMS = ("nonBragg", "noisify", "float_add")
# the golden float inputs and their sizes (fast, slow)
FLOATS = {"spots.bin": (128, 128), "water.bin": (128, 128), "floatimage.bin": (128, 128), "hdr80.bin": (100, 80)}


def _f(x: float) -> str:
    return f"{x:.6g}"


class Combination:
    """One command line: program, args, the inputs it needs, and each
    output with its rule."""

    def __init__(self, index: int, seed: int = SEED):
        rnd = random.Random(f"companions-{seed}-{index}")
        self.index, self.seed = index, seed
        self.program = PROGRAMS[index % 3]
        self.args: list = []
        self.inputs: list = []
        self.outputs: dict = {}
        self.stdout_numbers = False
        getattr(self, "_draw_" + self.program)(rnd)

    # ---------------------------------------------------------- nonBragg --
    def _draw_nonBragg(self, rnd):
        a, maybe = self.args, (lambda p: rnd.random() < p)
        table = rnd.choice(["water.stol", "air.stol", "unity.stol", "ice.stol"])
        a += [rnd.choice(["-stol", "-stol", "-4stol", "-Q"]), table]
        self.inputs.append(table)
        pixel = rnd.choice([0.05, 0.1, 0.172, 0.2, 0.3])
        if maybe(0.5):
            n = rnd.randint(16, 96)
            a += ["-detpixels", str(n)]
            nx = ny = n
        elif maybe(0.5):
            nx, ny = rnd.randint(16, 96), rnd.randint(16, 96)
            a += ["-detpixels_x", str(nx), "-detpixels_y", str(ny)]
        elif maybe(0.5):
            nx = ny = rnd.randint(16, 96)
            a += ["-detsize", _f(nx * pixel * rnd.uniform(0.95, 1.05))]
        else:
            nx, ny = rnd.randint(16, 96), rnd.randint(16, 96)
            a += ["-detsize_x", _f(nx * pixel), "-detsize_y", _f(ny * pixel)]
        a += ["-pixel", _f(pixel)]
        if maybe(0.5):
            a += [rnd.choice(["-lambda", "-wave"]), _f(rnd.uniform(0.6, 2.0))]
        elif maybe(0.5):
            a += ["-energy", _f(rnd.uniform(6000, 20000))]
        # placement: one pivot family, then maybe rotations
        fam = rnd.choice(["beam", "close", "org", "none"])
        if fam == "beam":
            a += ["-distance", _f(rnd.uniform(30, 300))]
            if maybe(0.7):
                a += ["-Xbeam", _f(rnd.uniform(0, nx * pixel)), "-Ybeam", _f(rnd.uniform(0, ny * pixel))]
        elif fam == "close":
            a += ["-close_distance", _f(rnd.uniform(30, 300))]
            if maybe(0.7):
                a += ["-Xclose", _f(rnd.uniform(0, nx * pixel)), "-Yclose", _f(rnd.uniform(0, ny * pixel))]
        elif fam == "org":
            a += ["-distance", _f(rnd.uniform(30, 300)), "-ORGX", _f(rnd.uniform(0, nx)),
                  "-ORGY", _f(rnd.uniform(0, ny))]
        if maybe(0.2):
            a += ["-pivot", rnd.choice(["beam", "sample"])]
        for ax in ("x", "y", "z"):
            if maybe(0.2):
                a += [f"-detector_rot{ax}", _f(rnd.uniform(-20, 20))]
        if maybe(0.1):
            # the axis also sets -twotheta to its first number: a -twotheta follows
            a += ["-twotheta_axis"] + rnd.choice([["0", "1", "0"], ["0", "0", "1"], ["0", "-1", "0"]])
            a += ["-twotheta", _f(rnd.uniform(-30, 30))]
        elif maybe(0.2):
            a += ["-twotheta", _f(rnd.uniform(-30, 30))]
        if maybe(0.1):
            a += ["-fdet_vector", "0", "0", "1", "-sdet_vector"] + rnd.choice([["0", "-1", "0"], ["0", "1", "0"]])
        if maybe(0.05):
            a += ["-beam_vector", "1", _f(rnd.uniform(-0.05, 0.05)), "0"]
        if maybe(0.1):
            a += ["-curved_det"]
        if maybe(0.15):
            a += ["-point_pixel"]
        if maybe(0.3):
            a += ["-oversample", str(rnd.randint(1, 3))]
        # sources
        if maybe(0.15):
            a += ["-sourcefile", "sources5.txt"]
            self.inputs.append("sources5.txt")
        else:
            if maybe(0.25):
                h = v = rnd.uniform(0.5, 5)
                if maybe(0.5):
                    a += ["-divergence", _f(h)]
                else:
                    v = rnd.uniform(0.5, 5)
                    a += ["-hdivrange", _f(h), "-vdivrange", _f(v)]
                if maybe(0.5):
                    a += ["-divsteps", str(rnd.randint(2, 5))]
                elif maybe(0.5):
                    # steps within the ranges: a grid the ellipse cuts to
                    # nothing is an error here (docs/differences.md)
                    a += ["-hdivstep", _f(h / rnd.uniform(1.2, 4)), "-vdivstep", _f(v / rnd.uniform(1.2, 4))]
                if maybe(0.3):
                    a += ["-square_div"]
            if maybe(0.2):
                a += ["-dispersion", _f(rnd.uniform(0.5, 10)), "-dispsteps", str(rnd.randint(2, 5))]
            if maybe(0.1):
                a += ["-source_distance", _f(rnd.uniform(1000, 20000))]
        # sample and beam
        if maybe(0.3):
            a += ["-samplesize", _f(rnd.uniform(0.01, 1))]
        else:
            for flag in ("-thick", "-width", "-height"):
                if maybe(0.3):
                    a += [flag, _f(rnd.uniform(0.01, 1))]
        if maybe(0.3):
            a += ["-density", _f(rnd.uniform(0.001, 3))]
        if maybe(0.2):
            a += ["-MW", _f(rnd.uniform(10, 200))]
        if maybe(0.1):
            a += ["-molecules", _f(10 ** rnd.uniform(15, 20))]
        if maybe(0.4):
            a += ["-flux", _f(10 ** rnd.uniform(10, 13)), "-exposure", _f(rnd.uniform(0.1, 2)),
                  "-beamsize", _f(rnd.uniform(0.02, 0.5))]
        elif maybe(0.3):
            a += ["-fluence", _f(10 ** rnd.uniform(18, 24))]
        if maybe(0.2):
            a += ["-nopolar"]
        elif maybe(0.3):
            a += ["-polar", _f(rnd.uniform(-1, 1))]
            if maybe(0.3):
                a += ["-polar_vector", "0", "1", "0"]
        if maybe(0.15):
            x0, y0 = rnd.randint(0, nx - 2), rnd.randint(0, ny - 2)
            a += ["-roi", str(x0), str(rnd.randint(x0, nx - 1)), str(y0), str(rnd.randint(y0, ny - 1))]
        fmap = maybe(0.05)
        if fmap:
            a += ["-Fmap"]
        if maybe(0.3):
            a += ["-scale", _f(10 ** rnd.uniform(-1, 3))]
        if maybe(0.3):
            a += ["-pgmscale", _f(10 ** rnd.uniform(-1, 1))]
        if maybe(0.3):
            a += ["-adc", _f(rnd.uniform(0, 100))]
        if maybe(0.15):
            a += ["-phi", _f(rnd.uniform(0, 90)), "-osc", _f(rnd.uniform(0.1, 2))]
        noise = not maybe(0.15)
        if not noise:
            a += ["-nonoise"]
        a += ["-seed", str(rnd.randint(1, 10 ** 6)), "-floatfile", "float.bin", "-intfile", "int.img",
              "-pgmfile", "image.pgm"]
        self.outputs = {"float.bin": "float", "int.img": "smv", "image.pgm": "pgm"}
        if noise:
            a += ["-noisefile", "noise.img"]
            self.outputs["noise.img"] = "noise"
        self.signed = fmap or table == "ice.stol" or table == "unity.stol" and "-polar" in a

    # ----------------------------------------------------------- noisify --
    def _draw_noisify(self, rnd):
        a, maybe = self.args, (lambda p: rnd.random() < p)
        name = rnd.choice(sorted(FLOATS))
        self.inputs.append(name)
        w, h = FLOATS[name]
        a += [rnd.choice(["-floatfile", "-bin"]), name]
        if name == "hdr80.bin" and maybe(0.6):
            a += ["-header", "header.img"]
            self.inputs.append("header.img")
        elif w == h and maybe(0.5):
            a += ["-detpixels", str(w)]
        elif maybe(0.5):
            a += ["-detpixels_x", str(w)] + (["-detpixels_y", str(h)] if maybe(0.5) else [])
        scale = 10 ** rnd.uniform(-1, 2.5)
        a += ["-scale", _f(scale)]
        if maybe(0.2):
            a += ["-fluence", _f(1.25932015286227e29 * rnd.uniform(0.5, 2))]
        if maybe(0.3):
            a += ["-gain", _f(rnd.uniform(0.5, 4))]
        adc = rnd.choice([40.0, 40.0, 100.0, 10.0])
        if adc != 40.0:
            a += ["-adc", _f(adc)]
        if maybe(0.4):
            a += [rnd.choice(["-readout_noise", "-readnoise", "-readout"]), _f(rnd.uniform(0, adc / 8))]
        if maybe(0.4):
            a += ["-flicker", _f(rnd.uniform(0, 0.1))]
        if maybe(0.4):
            a += ["-calibration", _f(rnd.uniform(0, 0.1))]
        if maybe(0.2):
            a += ["-calib_seed", str(rnd.randint(1, 10 ** 6))]
        nonoise = maybe(0.15)
        if maybe(0.4):
            a += ["-psf", rnd.choice(["gauss", "fiber"]), "-psf_fwhm", _f(rnd.uniform(20, 300))]
            if nonoise or maybe(0.4):
                a += ["-psf_radius", str(rnd.randint(1, 8))]
        if maybe(0.2):
            a += ["-bits", rnd.choice(["16", "32"])]
        if maybe(0.3):
            a += ["-pixel", _f(rnd.choice([0.05, 0.1, 0.172]))]
        if maybe(0.2):
            a += ["-distance", _f(rnd.uniform(50, 500)), "-lambda", _f(rnd.uniform(0.5, 2))]
        if maybe(0.2):
            a += ["-Xbeam", _f(rnd.uniform(0, 20)), "-Ybeam", _f(rnd.uniform(0, 20))]
        if maybe(0.2):
            a += ["-phi", _f(rnd.uniform(0, 180)), "-osc", _f(rnd.uniform(0.05, 2))]
        if nonoise:
            a += ["-nonoise"]
        a += ["-seed", str(rnd.randint(1, 10 ** 6)), "-intfile", "int.img", "-pgmfile", "image.pgm"]
        self.outputs = {"int.img": "smv", "image.pgm": "pgm"}
        if not nonoise:
            a += ["-noisefile", "noise.img"]
            self.outputs["noise.img"] = "noise"
        self.signed = False

    # --------------------------------------------------------- float_add --
    def _draw_float_add(self, rnd):
        a, maybe = self.args, (lambda p: rnd.random() < p)
        if maybe(0.2):
            a += ["-header", "64", "a.map"] + (["b.map"] if maybe(0.8) else [])
            self.inputs += ["a.map", "b.map"]
        else:
            pool = rnd.choice([["spots.bin", "water.bin"], ["ramp.bin", "ramp2.bin"], ["water.bin", "floatimage.bin"]])
            rnd.shuffle(pool)
            a += pool[:2 if maybe(0.8) else 1]
            self.inputs += pool
        # after one input a second name would be input 2 (a missing input is
        # an error here, docs/differences.md): name the output by flag then
        a += ["out.bin"] if len([t for t in a if t.endswith((".bin", ".map"))]) == 2 else ["-outfile", "out.bin"]
        for flag in ("-scale1", "-scale2", "-outscale"):
            if maybe(0.3):
                a += [flag, _f(rnd.uniform(-3, 3))]
        if maybe(0.2):
            a += ["-offset", _f(rnd.uniform(-10, 50))]
        if maybe(0.2):
            a += ["-outoffset", _f(rnd.uniform(-10, 50))]
        if maybe(0.2):
            a += ["-ignore", "0"]
        if maybe(0.15):
            a += ["-normalize"]
        if maybe(0.25):
            a += ["-histogram"] + (["-bin", _f(rnd.choice([0.0, 0.5, 1.0, 5.0]))] if maybe(0.6) else [])
        if maybe(0.25) and "-histogram" not in a:       # together they crash the reference
            a += ["-reject"]
        self.outputs = {"out.bin": "float"}
        self.stdout_numbers = True
        self.signed = True

    def __repr__(self):
        return f"[{self.seed}:{self.index}] {self.program} " + " ".join(self.args)


def draw(index: int, seed: int = SEED) -> Combination:
    return Combination(index, seed)


def _run(command, combo, folder):
    folder.mkdir(parents=True)
    for name in combo.inputs:
        shutil.copyfile(cg.INPUTS / name, folder / name)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(list(command) + combo.args, cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=600)


def compare(combo, reference_dir=REFERENCE_DIR):
    """Every problem of ours against the reference for one combination ([] =
    match), or None when the reference crashed (float_add -normalize
    -histogram can need more than its 100000 bins and write past them: no
    verdict, docs/differences.md)."""
    work = Path(tempfile.mkdtemp(prefix="nbcdiff-"))
    try:
        ref = _run([os.path.join(reference_dir, combo.program)], combo, work / "ref")
        ours = _run(cg.command(combo.program), combo, work / "ours")
        if ref.returncode < 0 and combo.program == "float_add" and "-histogram" in combo.args:
            return None
        if ref.returncode != 0:
            return [f"the reference failed ({ref.returncode}): {ref.stdout.decode(errors='replace')[-200:]}"]
        if ours.returncode != 0:
            return [f"ours failed ({ours.returncode}): {ours.stderr.decode(errors='replace').strip()[-300:]}"]
        problems = []
        negative = False
        for name, rule in combo.outputs.items():
            r, o = work / "ref" / name, work / "ours" / name
            if not r.exists():
                if o.exists():
                    problems.append(f"{name}: written by ours only")
                continue
            if not o.exists():
                problems.append(f"{name}: not written by ours")
                continue
            rb, ob = r.read_bytes(), o.read_bytes()
            if rule == "float":
                negative = bool(np.any(np.frombuffer(rb, "<f4") < 0))
                problems += cg.compare_float(ob, rb, name)
            elif rule in ("smv", "noise"):
                problems += cg.compare_smv(ob, rb, name, noise=rule == "noise")
            elif not negative:          # the reference's byte of a negative value is undefined
                problems += goldenlib.compare_pgm(ob, rb, name)
        if combo.stdout_numbers:
            problems += cg.compare_stdout(ours.stdout.decode(errors="replace"), ref.stdout.decode(errors="replace"))
        return problems
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reference_ok():
    return bool(REFERENCE_DIR) and all(os.access(os.path.join(REFERENCE_DIR, p), os.X_OK) for p in PROGRAMS)


needs_reference = pytest.mark.skipif(
    not _reference_ok(),
    reason="set NANOBRAGG_COMPANIONS_REFERENCE to a folder of reference nonBragg, noisify and float_add "
           "binaries you built (see golden/companions/README.md)")


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_generator_is_deterministic_and_covers_the_options():
    combos = [draw(i, 5) for i in range(600)]
    assert [c.args for c in combos] == [draw(i, 5).args for i in range(600)]
    seen = {(c.program, t) for c in combos for t in c.args if t.startswith("-") and not _is_number(t)}
    wanted = {"nonBragg": ["-stol", "-4stol", "-Q", "-detpixels_x", "-detsize", "-energy", "-close_distance",
                           "-Xclose", "-ORGX", "-pivot", "-detector_rotz", "-twotheta", "-curved_det",
                           "-point_pixel", "-oversample", "-twotheta_axis", "-sdet_vector", "-detsize_y", "-sourcefile", "-divsteps", "-hdivstep", "-square_div",
                           "-dispsteps", "-samplesize", "-MW", "-molecules", "-flux", "-fluence", "-nopolar",
                           "-polar_vector", "-roi", "-Fmap", "-scale", "-pgmscale", "-nonoise"],
              "noisify": ["-bin", "-header", "-detpixels_x", "-fluence", "-gain", "-adc", "-readnoise", "-flicker",
                          "-calibration", "-calib_seed", "-psf", "-psf_radius", "-bits", "-Xbeam", "-osc",
                          "-nonoise"],
              "float_add": ["-header", "-scale1", "-scale2", "-outscale", "-offset", "-outoffset", "-ignore",
                            "-normalize", "-histogram", "-bin", "-reject"]}
    for program, flags in wanted.items():
        for flag in flags:
            assert (program, flag) in seen, (program, flag)
    for c in combos:
        if c.program != "float_add":
            assert c.args[c.args.index("-seed") + 1].isdigit()
        # never a flag that takes a value last (the references read past argv)
        if c.program == "float_add":
            assert c.args[-1] not in ("-scale1", "-scale2", "-outscale", "-offset", "-outoffset", "-ignore",
                                      "-bin", "-header", "-outfile"), c
        else:
            assert c.args[-1].endswith((".img", ".pgm")), c


@needs_reference
def test_random_combinations_match_the_reference():
    goldenlib.assert_differential_match(draw, compare)


def main(argv=None) -> int:
    return goldenlib.differential_main(argv, __doc__, draw, compare, _reference_ok,
                                       "NANOBRAGG_COMPANIONS_REFERENCE must name a folder of reference nonBragg, noisify and float_add")


if __name__ == "__main__":
    raise SystemExit(main())
