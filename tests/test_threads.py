"""The result must not depend on the thread count: render a few cases with
OMP_NUM_THREADS=1 and =2 and require byte-identical output files.

NANOBRAGG_EXACT_THREADS=1 makes the engine use the requested threads even
for these small images (it would otherwise render them on one thread, and
the comparison could not fail)."""
import numpy as np
import pytest

import goldenlib

# interpolation fallback order, mosaic domains (RNG), noise, Fdump writing
THREAD_CASES = ["interpolate_auto", "mosaic_domains", "high_fluence_noise", "triclinic_misset_hkl",
                "interp_fallback_midimage", "div_disp_mosaic_phi_oversample"]


@pytest.mark.parametrize("isa", goldenlib.kernel_levels())
@pytest.mark.parametrize("case_id", THREAD_CASES)
def test_thread_count_does_not_change_outputs(case_id, isa, tmp_path):
    """Within one kernel level (NANOBRAGG_ISA) the files are byte-identical."""
    case = goldenlib.case_by_id(case_id)
    runs = {}
    for n in (1, 2):
        d = tmp_path / f"threads{n}"
        goldenlib.run_case(case, d, env={"OMP_NUM_THREADS": str(n), "NANOBRAGG_EXACT_THREADS": "1",
                                         "NANOBRAGG_ISA": isa})
        runs[n] = d
    names = goldenlib.OUTPUTS + case.get("keep", [])
    problems = []
    for name in names:
        a, b = runs[1] / name, runs[2] / name
        if not a.exists() or not b.exists():
            problems.append(f"{name}: not written with OMP_NUM_THREADS={1 if not a.exists() else 2}")
            continue
        problems += goldenlib.compare_exact(b.read_bytes(), a.read_bytes(), f"{name} (2 threads vs 1)")
    assert not problems, f"{case_id}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("extra", [
    {"interpolate": False},                                     # every row drawn during the render
    {},                                                         # N=2 interpolates, falls back: rows are redone
    {"interpolate": False, "roi": (3, 50, 5, 40), "adc": 7},    # rows outside the ROI, an offset
])
def test_noise_drawn_during_the_render_is_the_noise_drawn_after(extra, monkeypatch):
    """The command draws its noise image while the image renders (the
    calling thread between its rows); it must be the image noise_image()
    draws from the finished render, whatever the thread count."""
    from nanobragg import _job
    # interp_fallback_midimage's crystal and grid
    params = dict(cell=(60, 60, 60, 90, 90, 90), hkl=str(goldenlib.INPUTS / "small.hkl"), N=2,
                  wavelength=1, distance=100, detpixels=64, pixel=0.2, seed=5, misset=(5, 10, 15), **extra)
    monkeypatch.setenv("NANOBRAGG_EXACT_THREADS", "1")
    after = None
    for threads in (1, 2, 3):
        job = _job.Job(dict(params, threads=threads))
        images = job.render(noise=True)
        drawn = images.noise_image()
        again = _job.Images(job.setup, images.float_image, images.stats).noise_image()
        assert images.stats["interpolation_fell_back"] == ("interpolate" not in extra)
        np.testing.assert_array_equal(np.asarray(drawn[0]), np.asarray(again[0]))
        assert drawn[1:] == again[1:] and drawn[1] > 0
        if after is None:
            after = drawn
        np.testing.assert_array_equal(np.asarray(drawn[0]), np.asarray(after[0]))
