"""The result must not depend on the thread count: render a few cases with
OMP_NUM_THREADS=1 and =2 and require byte-identical output files.

NANOBRAGG_EXACT_THREADS=1 makes the engine use the requested threads even
for these small images (it would otherwise render them on one thread, and
the comparison could not fail)."""
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
