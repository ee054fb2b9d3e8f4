"""-printout and -printout_pixel: the reference's per-pixel dump.

The expected text is the reference's own stdout of the golden cases that ask
for it (golden/extra_cases.json: printout_*), compared line by line with
goldenlib.compare_printout (words and integers equal, other numbers by the
float rule).  The rest checks what those cases cannot: that one pixel's
lines are the same whether it is printed alone or among all (a lone pixel
finds the values earlier pixels left by walking back; a full dump carries
them), whatever the thread count, and through Result.printout().
"""
import pytest

import goldenlib
import nanobragg
from nanobragg.params import args_to_params

CASES = [c for c in goldenlib.load_cases() if any(a.startswith("-printout") for a in c["args"])]


def test_there_are_printout_cases():
    assert {c["id"] for c in CASES} >= {"printout_dmin_interp_roi", "printout_interp_fallback",
                                        "printout_pixel_tophat_stale"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_printout_is_the_reference_text(case, tmp_path):
    p = goldenlib.run_case(case, tmp_path, env={"OMP_NUM_THREADS": "2"})
    want = (goldenlib.GOLDEN / case["id"] / "stdout.txt").read_text()
    assert goldenlib.printout_block(want), "the golden stdout has no printout"
    assert goldenlib.compare_printout(p.stdout.decode(), want) == []
    # the lines replace the progress meter
    assert "% done" not in p.stdout.decode()


# a sparse top-hat render: most pixels' steps all miss, so their F_cell is an
# earlier pixel's; a ROI and sub-pixels, sensor layers and mosaic domains
SPARSE = ("-cell 90 90 90 90 90 90 -hkl cubic.hkl -N 6 -tophat_spots -mosaic 0.2 -mosaic_domains 2 -oversample 2 "
          "-detector_thick 100 -detector_thicksteps 2 -lambda 1 -distance 100 -detpixels 40 -pixel 0.3 "
          "-roi 2 37 5 30 -seed 3").split()


def _blocks(stdout):
    """pixel (fast, slow) -> its printout lines"""
    lines = goldenlib.printout_block(stdout)
    out, i = {}, 0
    while i < len(lines):
        f, s = (int(t) for t in lines[i].split(":")[0].split()[-2:])
        out[(f, s)] = lines[i:i + 14]
        i += 14
    return out


def _run(tmp_path, name, extra, threads="1"):
    case = {"id": name, "inputs": ["cubic.hkl"], "args": SPARSE + extra}
    env = {"OMP_NUM_THREADS": threads, "NANOBRAGG_EXACT_THREADS": "1"}
    return goldenlib.run_case(case, tmp_path / name, env=env).stdout.decode()


def test_a_pixel_alone_prints_as_among_all(tmp_path):
    every = _blocks(_run(tmp_path, "all", ["-printout"]))
    assert len(every) == 36 * 26                      # the ROI's pixels, in raster order
    assert list(every) == sorted(every, key=lambda fs: (fs[1], fs[0]))
    # pixels no step of which met a spot (their F_cell is an earlier pixel's), and lit ones
    stale = [fs for fs, b in every.items() if b[3].endswith(" I = 0")]
    lit = [fs for fs, b in every.items() if not b[3].endswith(" I = 0")]
    assert len(stale) > 100 and len(lit) > 100
    picks = stale[::97][:6] + lit[::53][:3] + [(2, 5), (37, 30)]
    for fs in picks:
        alone = _blocks(_run(tmp_path, "one_%d_%d" % fs, ["-printout_pixel", str(fs[0]), str(fs[1])]))
        assert alone == {fs: every[fs]}, fs
    # outside the ROI the reference prints nothing
    assert _blocks(_run(tmp_path, "outside", ["-printout_pixel", "1", "1"])) == {}


def test_printout_does_not_depend_on_threads(tmp_path):
    one = _run(tmp_path, "t1", ["-printout"], threads="1")
    two = _run(tmp_path, "t2", ["-printout"], threads="2")
    assert goldenlib.printout_block(one) == goldenlib.printout_block(two)


def test_result_printout_is_the_command_text(tmp_path):
    every = _blocks(_run(tmp_path, "all", ["-printout"]))
    params = args_to_params([a if a != "cubic.hkl" else str(goldenlib.INPUTS / "cubic.hkl") for a in SPARSE])
    r = nanobragg.simulate(**params)
    assert r.printout(20, 12).splitlines() == every[(20, 12)]
    assert r.printout(0, 0) == ""                      # outside the ROI
    assert _blocks(r.printout()) == every              # no request: every pixel
    asked = nanobragg.simulate(**params, printout_pixel=(9, 7))
    assert asked.printout().splitlines() == every[(9, 7)]
    with pytest.raises(ValueError, match="outside the 40 x 40"):
        r.printout(40, 3)


def test_direct_beam_pixel_values():
    # the pixel on the beam: h = k = l = 0, F_latt = N^3, F_cell = default_F,
    # I = F^2 N^6 (one step), no polarization loss, unrotated axes
    r = nanobragg.simulate(cell=(50, 50, 50, 90, 90, 90), default_F=10, N=3, detpixels=9, pixel=0.1,
                           distance=100, Xbeam=0.4, Ybeam=0.4, oversample=1)   # MOSFLM: + half a pixel
    lines = r.printout(4, 4).splitlines()
    assert lines[0].startswith("   4    4 : stol = 0 or 0")
    assert lines[2] == "hkl= 0.000000 0.000000 0.000000  hkl0= 0 0 0"
    assert lines[3] == " F_cell=10  F_latt=27   I = 72900"
    assert lines[5] == "polar   %15.10g" % 1.0
    assert float(lines[8].split()[1]) == pytest.approx(float(r.float_image[4, 4]), rel=1e-9)
    assert [l.split()[0] for l in lines[11:]] == ["X:", "Y:", "Z:"]
    axes = [[float(v) for v in l.split()[1:]] for l in lines[11:]]
    assert axes == [[50, 0, 0], [0, 50, 0], [0, 0, 50]]     # (-0.00000000 is 0: the cell's rounding)
