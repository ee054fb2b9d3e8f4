"""The flag table: spellings, exact matching, last-wins, pivot/convention rules,
SMV header seeding, errors and exit codes.  None of this needs the engine."""
import math
import subprocess
import sys

import pytest

from nanobragg import args_to_params, UsageError
from nanobragg import params as P
from nanobragg.cli import main


def fields(cmdline, headers=()):
    return P.params_to_fields(args_to_params(cmdline.split()), headers).fields


def extras(cmdline):
    return P.params_to_fields(args_to_params(cmdline.split())).extras


# every spelling the reference's argument loop and usage text accept (as real
# users type them; the reference matches substrings, we match these exactly)
REFERENCE_FLAGS = """
-Na -Nb -Nc -N -cell -misset -samplesize -sample_size -sample_thick -sample_x -sample_width -sample_y -width
-sample_height -sample_z -height -xtalsize -xtal_size -xtal_thick -xtal_x -xtal_width -xtal_y -xtal_height -xtal_z
-density -sample_density -MW -molecular_weight -Xbeam -Ybeam -Xclose -Yclose -ORGX -ORGY -pivot -mosflm -xds
-adxv -denzo -dials -fdet_vector -sdet_vector -odet_vector -beam_vector -polar_vector -spindle_axis -twotheta_axis
-pix0_vector -distance -close_distance -detector_abs -detector_absorb -detector_absorption -detector_thick
-detector_thicksteps -thicksteps -twotheta -detector_rotx -detector_roty -detector_rotz -detsize -detsize_f
-detsize_s -detpixels -detpixels_f -detpixels_x -detpixels_s -detpixels_y -curved_det -pixel -point_pixel -polar
-nopolar -oversample_thick -oversample_polar -oversample_omega -oversample -roi -lambda -wave -energy -fluence
-flux -exposure -beamsize -mosaic -mosaic_spread -mosaici -mosaic_dom -mosaic_domains -dispersion -dispsteps
-divergence -hdivrange -vdivrange -hdivstep -hdivsteps -vdivstep -vdivsteps -divsteps -round_div -square_div -adc
-phi -osc -phistep -phisteps -dmin -mat -hkl -default_F -dump -img -mask -stolout -stol -4stol -Q -sourcefile
-floatfile -floatimage -intfile -intimage -pgmfile -pgmimage -noisefile -noiseimage -nonoise -nopgm -scale
-pgmscale -coherent -printout -noprogress -progress -interpolate -nointerpolate -round_xtal -square_xtal
-gauss_xtal -binary_spots -tophat_spots -fudge -printout_pixel -seed -mosaic_seed -misset_seed -water
-matrix -adcoffset -adc_offset -sample_den -molec -heigh -xtal_heigh -sample_heigh -mosaic_spr
""".split()


def sample_tokens(opt):
    """A valid command-line value list for an option."""
    k, n = opt.kind, opt.n
    if k == "switch":
        return []
    if k in ("path", "data"):
        return ["file.txt"]
    if k == "choice":
        return [opt.choices[0]]
    if k == "misset":
        return ["1", "2", "3"]
    if k == "abs":
        return ["300"]
    if opt.names[0] == "-cell":
        return ["70", "80", "90", "75", "85", "95"]
    if k in ("int", "ints"):
        return ["3"] * n
    return ["2.5"] * n


# ------------------------------------------------------------------ table --

def test_every_reference_flag_is_known():
    missing = [f for f in REFERENCE_FLAGS if P.lookup(f) is None]
    assert not missing


@pytest.mark.parametrize("opt", [o for o in P.OPTIONS if o.cli], ids=lambda o: o.names[0])
def test_every_spelling_parses_to_the_canonical_keyword(opt):
    results = []
    for name in opt.flags:
        got = args_to_params([name] + sample_tokens(opt))
        assert list(got) == [opt.key]
        results.append(P.params_to_fields(got))
    # aliases have exactly the same effect
    for st in results[1:]:
        assert st == results[0]


def test_keywords_are_flags_without_dash():
    for opt in P.OPTIONS:
        for name in opt.names:
            assert P.lookup(name.lstrip("-")) is opt
    assert P.lookup("wavelength") is P.lookup("-lambda")
    assert P.lookup("convention") is not None


def test_args_to_params_values_and_order():
    got = args_to_params("-cell 100 100 100 90 90 90 -default_F 100 -N 5 -wave 1 -distance 100 "
                         "-detpixels 128 -pixel 0.1 -seed 11 -xds -hkl x.hkl".split())
    assert list(got) == ["cell", "default_F", "N", "lambda", "distance", "detpixels", "pixel", "seed", "xds", "hkl"]
    assert got["cell"] == (100.0, 100.0, 100.0, 90.0, 90.0, 90.0)
    assert got["N"] == 5 and isinstance(got["N"], int)
    assert got["lambda"] == 1.0 and got["xds"] is True and got["hkl"] == "x.hkl"


def test_negative_values_are_values():
    f = fields("-spindle_axis -1 0 0 -Xbeam -3.5 -roi -1 10 -1 20")
    assert f["spindle"] == [-1.0, 0.0, 0.0]
    assert f["Xbeam_mm"] == -3.5
    assert f["roi"] == [-1, 10, -1, 20]


# ------------------------------------------------------- exact matching --

@pytest.mark.parametrize("cmd, absent", [
    ("-oversample_thick", "oversample"),
    ("-mosaic_seed 5", "seed"),
    ("-misset_seed 5", "misset_mode"),
    ("-twotheta_axis 1 0 0", "twotheta_deg"),
    ("-polar_vector 0 1 0", "polarization"),
    ("-hdivsteps 3", "hdivstep_mrad"),
    ("-detector_thicksteps 3", "detector_thick_um"),
    ("-detpixels_x 30", "spixels"),
    ("-pix0_vector_mm 1 2 3", "custom_basis"),
])
def test_flags_match_exactly_not_by_substring(cmd, absent):
    assert absent not in fields(cmd)


def test_prefixes_are_not_accepted():
    for bad in ("-dist", "-lam", "-mosaic_s", "-detector_abs_x", "-Nab"):
        with pytest.raises(UsageError):
            args_to_params([bad, "1"])


# ---------------------------------------------------------- last wins --

def test_last_one_wins():
    assert fields("-distance 100 -distance 90")["distance_mm"] == 90
    assert fields("-lambda 1 -energy 12398.42")["lambda_A"] == pytest.approx(1.0)
    assert fields("-energy 9000 -lambda 2")["lambda_A"] == 2.0
    f = fields("-N 5 -Na 3")
    assert (f["Na"], f["Nb"], f["Nc"]) == (3, 5, 5)
    f = fields("-Na 3 -N 5")
    assert (f["Na"], f["Nb"], f["Nc"]) == (5, 5, 5)
    f = fields("-Na 3 -N 5 -Na 2")      # a repeated flag counts at its last position
    assert (f["Na"], f["Nb"], f["Nc"]) == (2, 5, 5)


def test_repeated_flag_moves_to_its_last_position():
    assert list(args_to_params("-distance 1 -twotheta 3 -distance 2".split())) == ["twotheta", "distance"]


@pytest.mark.parametrize("cmd, pivot", [
    ("-distance 100", "beam"),
    ("-Xbeam 5", "beam"),
    ("-Ybeam 5", "beam"),
    ("-pivot beam", "beam"),
    ("-close_distance 100", "sample"),
    ("-Xclose 5", "sample"),
    ("-Yclose 5", "sample"),
    ("-ORGX 5", "sample"),
    ("-ORGY 5", "sample"),
    ("-twotheta 5", "sample"),
    ("-pivot sample", "sample"),
    ("-distance 100 -twotheta 5", "sample"),
    ("-twotheta 5 -distance 100", "beam"),
    ("-close_distance 50 -Xbeam 3", "beam"),
    ("-Xbeam 3 -pivot sample", "sample"),
    ("-distance 1 -twotheta 3 -distance 2", "beam"),
    ("-mosflm", "beam"),
    ("-denzo", "beam"),
    ("-adxv", "beam"),
    ("-xds", "sample"),
    ("-dials", "beam"),           # as the reference's parser; the engine forces SAMPLE for DIALS
    ("-ORGX 3 -mosflm", "beam"),
    ("-xds -distance 100", "beam"),   # the engine then forces SAMPLE for XDS
])
def test_pivot_rules(cmd, pivot):
    assert fields(cmd)["pivot"] == pivot


def test_no_pivot_flag_leaves_the_default():
    assert "pivot" not in fields("-pixel 0.1 -N 3")


@pytest.mark.parametrize("flag", ["-mosflm", "-denzo", "-adxv", "-xds", "-dials"])
def test_convention_switches(flag):
    assert fields(flag)["convention"] == flag[1:]


@pytest.mark.parametrize("flag, field, basis", [
    ("-fdet_vector", "fdet", True), ("-sdet_vector", "sdet", True), ("-odet_vector", "odet", True),
    ("-beam_vector", "beam", False), ("-polar_vector", "polar_vec", False), ("-spindle_axis", "spindle", False),
    ("-twotheta_axis", "twotheta_axis", False),
])
def test_custom_vectors_select_custom_convention(flag, field, basis):
    f = fields(f"-xds {flag} 0 0.6 0.8")
    assert f["convention"] == "custom"
    assert f[field] == [0.0, 0.6, 0.8]
    assert f.get("custom_basis", 0) == (1 if basis else 0)
    assert f["pivot"] == "sample"      # the custom convention keeps the flag-chosen pivot


def test_convention_after_vector_wins():
    assert fields("-fdet_vector 1 0 0 -mosflm")["convention"] == "mosflm"


def test_pix0_units():
    f = fields("-pix0_vector 0.1 0.002 -0.003")
    assert (f["pix0"], f["pix0_units"], f["convention"]) == ([0.1, 0.002, -0.003], "m", "custom")
    f = fields("-pix0_vector_mm 100 6.52 -4.76")
    assert (f["pix0"], f["pix0_units"]) == ([100.0, 6.52, -4.76], "mm")
    assert "custom_basis" not in f


# ------------------------------------------------------------ side effects --

def test_group_flags_set_several_fields():
    f = fields("-detpixels 64 -detsize 30 -xtalsize 0.01 -divergence 2 -divsteps 3")
    assert (f["fpixels"], f["spixels"]) == (64, 64)
    assert (f["detsize_f_mm"], f["detsize_s_mm"]) == (30, 30)
    assert f["xtal_size_mm"] == [0.01, 0.01, 0.01]
    assert (f["hdivrange_mrad"], f["vdivrange_mrad"]) == (2, 2)
    assert (f["hdivsteps"], f["vdivsteps"]) == (3, 3)
    f = fields("-xtalsize 0.01 -xtal_y 0.02 -sample_z 0.03")
    assert f["xtal_size_mm"] == [0.01, 0.02, 0.03]
    f = fields("-detpixels_x 140 -detpixels_y 70")
    assert (f["fpixels"], f["spixels"]) == (140, 70)


def test_cell_and_misset():
    f = fields("-cell 70 80 90 75 85 95")
    assert f["has_cell"] == 1 and f["cell"] == [70, 80, 90, 75, 85, 95]
    f = fields("-misset 10 20 30")
    assert f["misset_mode"] == "angles" and f["misset_deg"] == [10, 20, 30]
    assert fields("-misset random")["misset_mode"] == "random"
    assert fields("-misset 1 2 3 -misset random")["misset_mode"] == "random"
    f = fields("-misset_seed 5 -mosaic_seed 6 -seed 7")
    assert (f["misset_seed"], f["has_misset_seed"], f["mosaic_seed"], f["seed"]) == (5, 1, 6, 7)


def test_cell_needs_six_numbers():
    for bad in ("-cell 100 100 100", "-cell 100 100 100 90 90", "-cell 100 100 100 -hkl x"):
        with pytest.raises(UsageError, match="-cell expects 6 numbers"):
            args_to_params(bad.split())
    # the ranges of the cell are the engine's to check (test_errors.py): the parser takes any six numbers
    assert args_to_params("-cell 100 -100 100 90 90 180".split())["cell"] == (100, -100, 100, 90, 90, 180)


def test_detector_abs_inf_or_zero_also_zeroes_thickness():
    f = fields("-detector_thick 450 -detector_abs inf")
    assert math.isinf(f["detector_abs_um"]) and f["detector_thick_um"] == 0
    f = fields("-detector_thick 450 -detector_absorb 0")
    assert math.isinf(f["detector_abs_um"]) and f["detector_thick_um"] == 0
    f = fields("-detector_abs inf -detector_thick 450")
    assert f["detector_thick_um"] == 450
    f = fields("-detector_thick 450 -detector_absorption 320")
    assert (f["detector_abs_um"], f["detector_thick_um"]) == (320, 450)


def test_polarization():
    f = fields("-nopolar -polar 0.9")
    assert (f["polarization"], f["nopolar"]) == (0.9, 0)
    assert fields("-polar 0.9 -nopolar")["nopolar"] == 1


def test_outputs_and_switches():
    assert extras("") == {}
    x = extras("-nopgm -pgmfile a.pgm")
    assert x["write_pgm"] is True and x["pgmfile"] == "a.pgm"
    assert extras("-pgmfile a.pgm -nopgm")["write_pgm"] is False
    assert extras("-nopgm -pgmscale 3")["write_pgm"] is True
    assert fields("-pgmscale 3")["pgm_scale"] == 3
    assert extras("-nonoise -noisefile n.img")["noise"] is True
    assert extras("-noiseimage n.img -nonoise")["noise"] is False
    x = extras("-floatimage f.bin -intimage i.img -dump D.bin -threads 3")
    assert (x["floatfile"], x["intfile"], x["dump"], x["threads"]) == ("f.bin", "i.img", "D.bin", 3)
    assert fields("-interpolate")["interpolate"] == 1
    assert fields("-interpolate -nointerpolate")["interpolate"] == 0
    assert fields("-round_xtal")["xtal_shape"] == "round"
    assert fields("-binary_spots")["xtal_shape"] == "tophat"
    assert fields("-square_div")["round_div"] == 0
    assert fields("-energy 9000")["lambda_A"] == pytest.approx(12398.42 / 9000)


def test_api_switch_false():
    st = P.params_to_fields({"interpolate": False, "curved_det": False, "xds": False})
    assert st.fields == {"interpolate": 0, "curved_det": 0}


def test_api_convention_keyword_equals_switch():
    assert P.params_to_fields({"convention": "xds"}) == P.params_to_fields({"xds": True})
    assert P.params_to_fields({"wavelength": 1.5}) == P.params_to_fields({"lambda": 1.5})


# -------------------------------------------------------- header seeding --

class FakeSmv:
    def __init__(self, width, height, **values):
        self.width, self.height, self.values = width, height, values

    def value(self, key):
        return self.values.get(key)


HDR = dict(PIXEL_SIZE=0.12, DISTANCE=150.0, CLOSE_DISTANCE=149.0, WAVELENGTH=1.3, BEAM_CENTER_X=5.5,
           BEAM_CENTER_Y=4.2, ORGX=36.0, ORGY=46.8, PHI=3.0, OSC_RANGE=0.5, TWOTHETA=20.0)


def test_img_header_seeds_parameters():
    f = fields("", [("img", FakeSmv(100, 80, **HDR))])
    assert (f["fpixels"], f["spixels"], f["pixel_mm"]) == (100, 80, 0.12)
    assert f["detsize_f_mm"] == pytest.approx(12.0) and f["detsize_s_mm"] == pytest.approx(9.6)
    assert (f["distance_mm"], f["close_distance_mm"], f["lambda_A"]) == (150.0, 149.0, 1.3)
    assert (f["Xbeam_mm"], f["Ybeam_mm"]) == (5.5, 4.2)
    assert (f["ORGX_px"], f["ORGY_px"], f["phi_deg"], f["osc_deg"]) == (36.0, 46.8, 3.0, 0.5)
    assert "twotheta_deg" not in f      # the reference reads TWOTHETA into an unused variable
    assert "pivot" not in f             # header values do not move the pivot


def test_mask_header_flips_beam_center_y():
    f = fields("", [("mask", FakeSmv(100, 80, **HDR))])
    assert f["Ybeam_mm"] == pytest.approx(0.12 * 80 - 4.2)
    # without PIXEL_SIZE the reference's default 0.1 mm is used
    f = fields("", [("mask", FakeSmv(100, 80, BEAM_CENTER_Y=4.0))])
    assert f["Ybeam_mm"] == pytest.approx(0.1 * 80 - 4.0)


def test_headers_come_first_and_img_after_mask():
    hdrs = [("mask", FakeSmv(50, 40, DISTANCE=70.0, PIXEL_SIZE=0.2)), ("img", FakeSmv(100, 80, DISTANCE=150.0))]
    f = fields("-img x.img -distance 99 -mask m.img", hdrs)
    assert f["distance_mm"] == 99                     # flags override headers wherever they are
    assert (f["fpixels"], f["spixels"]) == (100, 80)  # the img (read second) wins over the mask
    assert f["pixel_mm"] == 0.2                       # ... except for keywords it lacks
    assert f["pivot"] == "beam"


# ------------------------------------------------------------------ errors --

@pytest.mark.parametrize("argv, message", [
    ("-distnace 100", "unknown option '-distnace' (did you mean '-distance'?)"),
    ("-lamda 1", "did you mean '-lambda'?"),
    ("-oversampel 2", "did you mean '-oversample'?"),
    ("-distance", "-distance expects a number (mm), got none"),
    ("-distance far", "-distance expects a number (mm), got 'far'"),
    ("-distance -pixel 0.1", "-distance expects a number (mm), got '-pixel'"),
    ("-N 2.5", "-N expects an integer"),
    ("-roi 1 2 3", "-roi expects 4 integers"),
    ("-misset 1 2", "-misset expects 3 numbers"),
    ("-pivot middle", "-pivot expects one of beam|sample"),
    ("-hkl", "-hkl expects a value"),
    ("-hkl -mat", "-hkl expects a file name"),
    ("stray", "unexpected argument 'stray'"),
    ("-mosaic -1", "-mosaic: must be >= 0"),
    ("-detpixels 0", "-detpixels: must be > 0"),
    ("-lambda nan", "-lambda expects a number"),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as e:
        args_to_params(argv.split())
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv", [["-distnace", "100"], ["-cell", "1", "2"], ["-N", "x"], ["oops"]])
def test_cli_usage_error_exit_2_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nanoBragg: error: ") and err.count("\n") == 1


def test_cli_missing_structure_factors_or_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-detpixels", "8"]) == 2
    assert "no structure factors" in capsys.readouterr().err
    assert main(["-default_F", "10"]) == 2
    assert "no crystal: give -cell or -mat" in capsys.readouterr().err


def test_cli_error_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "nanobragg", "-detpixel", "10"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == ("nanoBragg: error: unknown option '-detpixel' (did you mean '-detpixels'?); "
                                "nanoBragg -h lists the options")
    assert "Traceback" not in p.stderr


def test_unknown_keyword_suggests():
    with pytest.raises(TypeError, match=r"'distnace' \(did you mean 'distance'\?\)"):
        P.normalize({"distnace": 100})
    with pytest.raises(TypeError, match="wavelenght"):
        P.normalize({"wavelenght": 1})


@pytest.mark.parametrize("kw, message", [
    ({"distance": "far"}, "distance: expected a number"),
    ({"distance": True}, "distance: expected a number"),
    ({"N": 2.5}, "N: expected an integer"),
    ({"cell": (1, 2, 3)}, "cell: expected 6 numbers"),
    ({"cell": "100 100 100 90 90 90"}, "cell: expected 6 numbers"),
    ({"mosaic": -1}, "mosaic: must be >= 0"),
    ({"xds": 1}, "xds: a switch takes True or False"),
    ({"convention": "cbf"}, "convention: expected one of"),
    ({"pivot": "middle"}, "pivot: expected one of"),
    ({"misset": "sideways"}, "misset"),
    ({"roi": (1, 2, 3, 4.5)}, "roi: expected an integer"),
    ({"floatfile": 3}, "floatfile: expected a file name"),
])
def test_keyword_value_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        P.normalize(kw)


def test_keyword_values_are_coerced():
    import numpy as np
    items = P.normalize({"N": np.int64(4), "distance": np.float32(100), "cell": np.array([1, 2, 3, 90, 90, 90]),
                         "misset": "random", "detector_abs": "inf", "Na": 3.0})
    vals = {name: v for _o, name, v in items}
    assert vals["N"] == 4 and type(vals["N"]) is int
    assert vals["cell"] == (1.0, 2.0, 3.0, 90.0, 90.0, 90.0)
    assert vals["misset"] == "random" and math.isinf(vals["detector_abs"]) and vals["Na"] == 3


# -------------------------------------------------------------------- help --

def test_help_lists_every_flag_with_units(capsys):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for opt in P.OPTIONS:
        if not opt.cli:
            continue
        for name in opt.flags:
            assert name in out
        if opt.units:
            assert f"[{opt.units}]" in out
    for f in REFERENCE_FLAGS:
        assert f in out
    assert main(["--help"]) == 0
    assert "-distance MM" in capsys.readouterr().out


def test_help_wins_over_other_flags(capsys):
    assert main(["-distnace", "3", "-h"]) == 0
