"""Skipping negligible lattice sums (-skip_negligible, docs/skipping.md).

A skipped pixel keeps its background alone; the engine promises that it
then differs from its full sum by at most NB_SKIP_FRACTION (1e-7) of the
image's peak, a tenth of the golden rule's absolute term, and that every
pixel it sums is the pixel the render without skipping gives, bit for bit.
The cases are adversarial for the bound: strong and weak spots side by
side, a huge crystal, mosaic spread, dispersion, sub-pixels, a background
and a ROI, no structure-factor grid.  Each is rendered with skipping off
and on; the cases meant to skip must skip, or the check would be empty.
"""
import os
import subprocess

import numpy as np
import pytest

import goldenlib
from nanobragg import simulate

SKIP_FRACTION = 1e-7


def _random_hkl(seed, span=12):
    """Every h, k, l in -span..span with |F| log-uniform over six decades:
    spots a million times weaker than their neighbours in F^2."""
    rng = np.random.default_rng(seed)
    r = np.arange(-span, span + 1)
    h, k, l = (a.ravel() for a in np.meshgrid(r, r, r, indexing="ij"))
    F = 10.0 ** rng.uniform(-3, 3, h.size)
    return np.column_stack([h, k, l, F])


BASE = dict(cell=(40, 40, 40, 90, 90, 90), misset=(10, 20, 30), wavelength=1, distance=80, detpixels=96, pixel=0.2,
            phi=0, osc=0.02, phisteps=10, N=40, interpolate=False)

CASES = {
    # (extra keywords, whether it must skip)
    "strong_weak_spots": (dict(hkl=_random_hkl(1)), True),
    "huge_N": (dict(hkl=_random_hkl(2), N=400, osc=0.002, oversample=1), True),
    "mosaic": (dict(hkl=_random_hkl(3), mosaic=0.5, mosaic_domains=6, mosaic_seed=4, phisteps=4), None),
    "dispersion": (dict(hkl=_random_hkl(4), dispersion=5, dispsteps=3), True),
    "subpixels": (dict(hkl=_random_hkl(5), oversample=3), True),
    "water_roi": (dict(hkl=_random_hkl(6), water=50, roi=(10, 80, 5, 90)), True),
    "no_grid": (dict(default_F=30, cell=(20, 20, 20, 90, 90, 90), N=80), True),
    "triclinic_na_nb_nc": (dict(hkl=_random_hkl(7), cell=(37, 45, 52, 80, 95, 105), Na=30, Nb=53, Nc=1), True),
    "round_spots": (dict(hkl=_random_hkl(13), round_xtal=True), True),
    "gauss_spots": (dict(hkl=_random_hkl(14), gauss_xtal=True, N=8), True),
    "tophat_spots": (dict(hkl=_random_hkl(15), tophat_spots=True, N=8, cell=(37, 45, 52, 80, 95, 105)), True),
    "gauss_fudge": (dict(hkl=_random_hkl(16), gauss_xtal=True, fudge=0.3, Na=6, Nb=11, Nc=9), True),
    # weak reflections on a small grid inside a strong default_F: a pixel whose
    # h interval straddles the grid's edge at 2.5 rounds to a weak node on one
    # side and to default_F on the other (the ring of default_F in skip.c's
    # pair table)
    "grid_edge_default_F": (dict(hkl=_random_hkl(17, span=2) * [1, 1, 1, 1e-5], default_F=10, N=11, osc=0.5), True),
}


def _render(params, skip, **kw):
    return simulate(**params, skip_negligible="on" if skip else "off", **kw)


def check_skipped(off, on, label):
    """on's pixels are off's, or within SKIP_FRACTION of the peak of it (and
    the float rounding of each: a skipped pixel on a background of -water
    rounds on its own); no more of them than on says it skipped."""
    a32 = np.asarray(off.float_image)
    a = a32.astype(np.float64)
    b = np.asarray(on.float_image, dtype=np.float64)
    peak = a.max()
    diff = np.abs(b - a)
    allowed = SKIP_FRACTION * peak + np.spacing(np.abs(a32)).astype(np.float64)
    worst = np.unravel_index(np.argmax(diff - allowed), diff.shape)
    assert (diff <= allowed).all(), (
        f"{label}: pixel (slow, fast) {worst} moved by {diff[worst]:.3g} = {diff[worst] / peak:.3g} of the peak")
    changed = int(np.count_nonzero(b != a))
    assert changed <= on.stats["pixels_skipped"], f"{label}: {changed} pixels differ, {on.stats['pixels_skipped']} skipped"
    assert off.stats["pixels_skipped"] == 0


@pytest.mark.parametrize("name", CASES)
def test_skipping_stays_within_its_bound(name):
    extra, must_skip = CASES[name]
    params = dict(BASE, **extra)
    off, on = _render(params, False), _render(params, True)
    check_skipped(off, on, name)
    if must_skip:
        assert on.stats["pixels_skipped"] > 0, f"{name}: nothing skipped, the check is empty"


@pytest.mark.parametrize("isa", goldenlib.kernel_levels())
def test_skipping_under_each_kernel_level(isa, monkeypatch):
    """The bound is compiled once per level; each keeps the promise."""
    monkeypatch.setenv("NANOBRAGG_ISA", isa)
    params = dict(BASE, hkl=_random_hkl(8), oversample=2)
    off, on = _render(params, False), _render(params, True)
    check_skipped(off, on, isa)
    assert on.stats["pixels_skipped"] > 0


@pytest.mark.parametrize("name", ["strong_weak_spots", "dispersion"])
def test_skipping_does_not_depend_on_the_thread_count(name, monkeypatch):
    monkeypatch.setenv("NANOBRAGG_EXACT_THREADS", "1")
    params = dict(BASE, **CASES[name][0])
    one, two = _render(params, True, threads=1), _render(params, True, threads=2)
    assert one.stats["pixels_skipped"] == two.stats["pixels_skipped"] > 0
    np.testing.assert_array_equal(np.asarray(one.float_image), np.asarray(two.float_image))


def test_skipping_is_off_where_it_cannot_help_or_must_not_run():
    """auto (the default) is off in simulate(), whose Result may still draw
    noise; interpolation and the step path never skip."""
    params = dict(BASE, hkl=_random_hkl(9))
    plain = simulate(**params)
    assert plain.stats["pixels_skipped"] == 0
    for extra in (dict(interpolate=True, N=2),):
        assert _render(dict(params, **extra), True).stats["pixels_skipped"] == 0, extra
    assert _render(dict(params, phisteps=1), True).stats["pixels_skipped"] == 0   # one step: no gain


def test_step_path_never_skips(monkeypatch):
    monkeypatch.setenv("NANOBRAGG_KERNEL_PATH", "steps")
    params = dict(BASE, hkl=_random_hkl(10), detpixels=32)
    assert _render(params, True).stats["pixels_skipped"] == 0


def _command(tmp_path, args):
    cmd = goldenlib.nanobragg_command() + args
    proc = subprocess.run(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.fromfile(tmp_path / "float.bin", dtype=np.float32)


def test_command_skips_only_without_a_noise_image(tmp_path):
    """-skip_negligible auto: on with -nonoise, off when the noise image is
    written (its Poisson draws must follow the reference's); off and on
    force it."""
    hkl = tmp_path / "P1.hkl"
    np.savetxt(hkl, _random_hkl(11), fmt="%d %d %d %.6g")
    geometry = ["-cell", "40", "40", "40", "90", "90", "90", "-misset", "10", "20", "30", "-hkl", "P1.hkl",
                "-lambda", "1", "-distance", "80", "-detpixels", "96", "-pixel", "0.2", "-osc", "0.5",
                "-phisteps", "10", "-N", "10", "-nointerpolate", "-floatfile", "float.bin"]
    with_noise = _command(tmp_path, geometry)
    forced_off = _command(tmp_path, geometry + ["-nonoise", "-skip_negligible", "off"])
    auto = _command(tmp_path, geometry + ["-nonoise"])
    forced_on = _command(tmp_path, geometry + ["-skip_negligible", "on"])
    np.testing.assert_array_equal(with_noise, forced_off)
    np.testing.assert_array_equal(auto, forced_on)
    assert np.count_nonzero(auto != forced_off) > 0
    assert np.abs(auto - forced_off).max() <= SKIP_FRACTION * forced_off.max() * (1 + 1e-6)


def test_bound_sees_default_F_beyond_the_grid():
    """The grid is one octant of weak reflections; default_F beyond it is
    strong: a bound that read only the grid near its edges would skip the
    strong spots just outside."""
    rng = np.random.default_rng(12)
    r = np.arange(0, 9)
    h, k, l = (a.ravel() for a in np.meshgrid(r, r, r, indexing="ij"))
    rows = np.column_stack([h, k, l, 10.0 ** rng.uniform(-3, 1, h.size)])
    params = dict(BASE, hkl=rows, default_F=1000)
    off, on = _render(params, False), _render(params, True)
    check_skipped(off, on, "grid edges")
    assert on.stats["pixels_skipped"] > 0


REFERENCE = os.environ.get("NANOBRAGG_REFERENCE", "")


def _as_flags(params):
    """The command-line form of a CASES entry (hkl written to P1.hkl)."""
    names = {"wavelength": "-lambda", "interpolate": None, "mosaic_domains": "-mosaic_dom", "mosaic": "-mosaic"}
    flags = ["-nointerpolate"]
    for key, value in params.items():
        if key in ("interpolate", "hkl"):
            continue
        flag = names.get(key, "-" + key)
        if value is True:                  # a switch
            flags.append(flag)
            continue
        values = value if isinstance(value, tuple) else (value,)
        flags += [flag] + [str(v) for v in values]
    if "hkl" in params:
        flags += ["-hkl", "P1.hkl"]
    return flags


@pytest.mark.skipif(not (REFERENCE and os.access(REFERENCE, os.X_OK)),
                    reason="set NANOBRAGG_REFERENCE to a reference nanoBragg binary you built (see golden/README.md) "
                           "to compare skipped renders against it")
@pytest.mark.parametrize("name", [n for n in CASES if n != "huge_N"])
def test_skipped_renders_match_the_reference(name, tmp_path):
    """The command with -nonoise (skipping on) against the reference, by the
    golden rules for the float and int images."""
    extra, must_skip = CASES[name]
    params = dict(BASE, **extra)
    out = {}
    for prog, cmd in (("ours", goldenlib.nanobragg_command()), ("ref", [REFERENCE])):
        d = tmp_path / prog
        d.mkdir()
        if "hkl" in params:
            np.savetxt(d / "P1.hkl", params["hkl"], fmt="%d %d %d %.6g")
        proc = subprocess.run(cmd + _as_flags(params) + ["-nonoise", "-floatfile", "float.bin", "-intfile", "int.img",
                                                         "-nopgm"], cwd=d, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        out[prog] = ((d / "float.bin").read_bytes(), (d / "int.img").read_bytes())
    problems = goldenlib.compare_float(out["ours"][0], out["ref"][0], BASE["detpixels"])
    problems += goldenlib.compare_smv(out["ours"][1], out["ref"][1], "int.img")
    assert not problems, problems
    if must_skip and "water" not in extra:      # skipped pixels are 0 (with water: the background)
        ours = np.frombuffer(out["ours"][0], np.float32)
        assert np.count_nonzero(ours == 0) > np.count_nonzero(np.frombuffer(out["ref"][0], np.float32) == 0)


def _random_case(seed):
    """A random render on which skipping may engage: a sizeable crystal,
    fine phi steps, and a draw of the options that change the samples, the
    weights or the geometry."""
    rng = np.random.default_rng(seed)
    cell = tuple(rng.uniform(20, 80, 3)) + tuple(rng.uniform(70, 110, 3))
    p = dict(cell=cell, misset=tuple(rng.uniform(-180, 180, 3)), wavelength=rng.uniform(0.8, 1.5),
             distance=rng.uniform(50, 200), detpixels=int(rng.integers(32, 80)), pixel=rng.uniform(0.1, 0.4),
             phi=rng.uniform(-10, 10), osc=rng.uniform(0.001, 0.2), phisteps=int(rng.integers(5, 16)),
             interpolate=False, hkl=_random_hkl(int(rng.integers(1 << 30)), span=int(rng.integers(4, 14))))
    for axis in ("Na", "Nb", "Nc"):
        p[axis] = int(rng.choice([1, 5, 20, 60, 150]))
    if rng.random() < 0.3:
        p["default_F"] = float(10 ** rng.uniform(-2, 2))
    if rng.random() < 0.3:
        p.update(mosaic=rng.uniform(0, 0.5), mosaic_domains=int(rng.integers(1, 4)), mosaic_seed=int(rng.integers(1, 99)))
    if rng.random() < 0.3:
        p.update(dispersion=rng.uniform(0, 5), dispsteps=int(rng.integers(1, 4)))
    if rng.random() < 0.3:
        p.update(divergence=rng.uniform(0, 0.2), divsteps=int(rng.integers(1, 3)))
    if rng.random() < 0.4:
        p["oversample"] = int(rng.integers(1, 4))
    shape = rng.choice(["square", "square", "round", "gauss", "tophat"])
    if shape != "square":
        p[f"{shape}_xtal" if shape != "tophat" else "tophat_spots"] = True
        if rng.random() < 0.3:
            p["fudge"] = rng.uniform(0.2, 3)
    if rng.random() < 0.2:
        p["twotheta"] = rng.uniform(-30, 30)
    if rng.random() < 0.15:
        p["curved_det"] = True
    if rng.random() < 0.15:
        p["point_pixel"] = True
    if rng.random() < 0.2:
        p["polar"] = rng.uniform(-1, 1)
    if rng.random() < 0.2:
        p["water"] = rng.uniform(0, 100)
    if rng.random() < 0.2:
        p.update(detector_thick=rng.uniform(0.01, 0.5), detector_thicksteps=int(rng.integers(1, 3)),
                 detector_abs=rng.uniform(50, 500))
    if rng.random() < 0.2:
        n = p["detpixels"]
        p["roi"] = (int(rng.integers(0, n // 2)), int(rng.integers(n // 2, n)), int(rng.integers(0, n // 2)),
                    int(rng.integers(n // 2, n)))
    return p


FUZZ_CASES = int(os.environ.get("NANOBRAGG_SKIP_FUZZ_CASES", "16"))


@pytest.mark.parametrize("seed", range(FUZZ_CASES))
def test_random_renders_keep_the_promise(seed):
    params = _random_case(seed)
    off, on = _render(params, False), _render(params, True)
    check_skipped(off, on, f"seed {seed}: {params}")


def test_random_renders_do_skip():
    """The random draw above must reach skipping, or it checks nothing."""
    skipped = sum(_render(_random_case(seed), True).stats["pixels_skipped"] > 0 for seed in range(FUZZ_CASES))
    assert skipped >= FUZZ_CASES // 4, f"only {skipped} of {FUZZ_CASES} random renders skipped"
