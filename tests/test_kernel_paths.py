"""The vector path (polynomial sin/cos/exp, gathers, tricubic 4-vectors,
vectorised sub-pixel geometry) against the step-by-step path (the
reference's order, libm), forced with NANOBRAGG_KERNEL_PATH=steps, on
configurations the golden suite does not have: huge N, strong and weak
spots side by side, mosaic spread with dispersion, every spot shape, the
interpolation fall-back, oblique and curved detectors with the per-step
corrections oversampled.  Each under every kernel level the CPU has; the
float images must agree by the golden rule."""
import numpy as np
import pytest

import goldenlib
from nanobragg import simulate

BASE = dict(cell=(40, 50, 60, 90, 95, 100), misset=(10, 20, 30), wavelength=1.2, distance=80,
            detpixels=24, pixel=0.6, default_F=10, oversample=1)


def strong_weak_hkl():
    """F alternating between 1e4 and 1e-2 on neighbouring nodes."""
    rows = []
    for h in range(-12, 13):
        for k in range(-12, 13):
            for l in range(-12, 13):
                rows.append((h, k, l, 1e4 if (h + k + l) % 2 == 0 else 1e-2))
    return np.array(rows, dtype=float)


def smooth_hkl(n):
    """A smooth F on a small grid, so that tricubic stencils leave it mid-image."""
    rows = []
    for h in range(-n, n + 1):
        for k in range(-n, n + 1):
            for l in range(-n, n + 1):
                rows.append((h, k, l, 50.0 + 30.0 * np.cos(0.4 * h) * np.cos(0.3 * k) * np.cos(0.2 * l)))
    return np.array(rows, dtype=float)


CONFIGS = {
    "square_huge_N": dict(N=1000),
    "square_strong_weak_mosaic_dispersion": dict(N=15, mosaic=0.5, mosaic_domains=6, mosaic_seed=7,
                                                 dispersion=4, dispsteps=3, hkl=strong_weak_hkl()),
    "round_huge_N": dict(N=300, round_xtal=True),
    "round_fudge_divergence": dict(N=8, round_xtal=True, fudge=3, divergence=0.3, divsteps=3),
    "gauss_far_tails": dict(N=10, gauss_xtal=True, fudge=1, mosaic=1, mosaic_domains=4, mosaic_seed=3),
    "tophat_edges_oversample": dict(N=10, tophat_spots=True, fudge=0.005, oversample=3),
    # the beam at the first pixel: low resolution there, the stencil leaves the grid further on
    "interpolation_fallback": dict(N=2, interpolate=True, hkl=smooth_hkl(6), oversample=2, Xbeam=0, Ybeam=0),
    "interpolation_inside": dict(N=1, hkl=smooth_hkl(9), distance=400, dispersion=2, dispsteps=3),
    "curved_oversampled_corrections": dict(N=6, curved_det=True, twotheta=20, oversample=2,
                                           oversample_polar=True, oversample_omega=True,
                                           detector_thick=0.2, detector_abs=100, thicksteps=2,
                                           oversample_thick=True, dmin=2.5),
}


def render(params, path, isa, monkeypatch):
    monkeypatch.setenv("NANOBRAGG_ISA", isa)
    monkeypatch.setenv("NANOBRAGG_KERNEL_PATH", path)
    return simulate(**params)


@pytest.mark.parametrize("isa", goldenlib.kernel_levels())
@pytest.mark.parametrize("name", list(CONFIGS))
def test_vector_path_matches_step_path(name, isa, monkeypatch):
    params = dict(BASE, **CONFIGS[name])
    vec = render(params, "vector", isa, monkeypatch)
    ref = render(params, "steps", isa, monkeypatch)
    r = ref.float_image.astype(np.float64)
    v = vec.float_image.astype(np.float64)
    assert r.max() > 0, "the step path rendered nothing: the case tests nothing"
    problems = goldenlib.compare_float(vec.float_image.astype("<f4").tobytes(),
                                       ref.float_image.astype("<f4").tobytes(), width=r.shape[1])
    assert not problems, f"{name} [{isa}]: " + "; ".join(problems)
    assert vec.stats["interpolation_fell_back"] == ref.stats["interpolation_fell_back"]
    assert vec.stats["fallback_pixel"] == ref.stats["fallback_pixel"]
    assert np.count_nonzero(v) == np.count_nonzero(r)


def test_interpolation_case_falls_back_mid_image(monkeypatch):
    """The fall-back case above really falls back, after the first pixel."""
    monkeypatch.delenv("NANOBRAGG_KERNEL_PATH", raising=False)
    r = simulate(**dict(BASE, **CONFIGS["interpolation_fallback"]))
    assert r.stats["interpolation_fell_back"] and r.stats["fallback_pixel"] > 0


def test_huge_round_spots_take_the_step_path(monkeypatch):
    """Round spots whose sphere argument exceeds the polynomial reduction's
    range render step by step even on the vector path: same image."""
    params = dict(BASE, N=400000, round_xtal=True, detpixels=8)
    a = render(params, "vector", goldenlib.kernel_levels()[-1], monkeypatch).float_image
    b = render(params, "steps", goldenlib.kernel_levels()[-1], monkeypatch).float_image
    assert np.array_equal(a, b)


def test_round_spot_at_a_node_is_the_reference_form(tmp_path):
    """A sub-pixel exactly on the direct beam (odd pixel count, odd
    oversampling, centred beam) puts the sphere transform next to x = 0,
    where the reference's direct form 3(sin x - x cos x)/x^3 has lost its
    digits: that pixel is summed step by step with the reference's form, so
    that both paths give the same value there."""
    import numpy as np
    from nanobragg import simulate
    kw = dict(cell=(40, 40, 40, 90, 90, 90), default_F=30, N=5, detpixels=35, pixel=0.08, distance=80,
              oversample=3, round_xtal=True, point_pixel=True, seed=1)
    vec = simulate(**kw).float_image
    import os
    old = os.environ.get("NANOBRAGG_KERNEL_PATH")
    os.environ["NANOBRAGG_KERNEL_PATH"] = "steps"
    try:
        steps = simulate(**kw).float_image
    finally:
        if old is None:
            del os.environ["NANOBRAGG_KERNEL_PATH"]
        else:
            os.environ["NANOBRAGG_KERNEL_PATH"] = old
    assert np.array_equal(vec[17, 17], steps[17, 17])
    np.testing.assert_allclose(vec, steps, rtol=1e-6, atol=1e-9 * float(steps.max()))
