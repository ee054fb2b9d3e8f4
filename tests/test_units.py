"""The C library's parameter -> SI function (nb_setup_init, through the
binding) owns every unit conversion: these tests pin the two patched
behaviours there, so every front end inherits them."""
import pytest

_core = pytest.importorskip("nanobragg._core")

CELL = {"cell": (90, 90, 90, 90, 90, 90), "default_F": 1.0, "fpixels": 64, "spixels": 64}


def geometry(**fields):
    setup = _core.Setup(dict(CELL, **fields))
    return setup, setup.geometry


@pytest.mark.parametrize("pixel_mm", [0.05, 0.1, 0.172, 0.2])
@pytest.mark.parametrize("convention", ["mosflm", "xds", "adxv", "denzo", "dials", "custom"])
def test_beam_centre_mm_becomes_metres_once(pixel_mm, convention):
    _, g = geometry(pixel_mm=pixel_mm, Xbeam_mm=6.47, Ybeam_mm=4.71, convention=convention)
    # never scaled by the pixel size: exactly millimetres / 1000
    assert g["Xbeam_m"] == 6.47 / 1000.0
    assert g["Ybeam_m"] == 4.71 / 1000.0


@pytest.mark.parametrize("pixel_mm", [0.1, 0.172])
def test_mosflm_beam_centre_maps_to_pixel_centres(pixel_mm):
    # MOSFLM measures the beam centre to pixel centres: half a pixel shift, X on the slow axis
    _, g = geometry(pixel_mm=pixel_mm, Xbeam_mm=6.47, Ybeam_mm=4.71)
    assert g["Fbeam_m"] == pytest.approx(4.71e-3 + 0.5 * pixel_mm * 1e-3, abs=1e-15)
    assert g["Sbeam_m"] == pytest.approx(6.47e-3 + 0.5 * pixel_mm * 1e-3, abs=1e-15)


def test_pix0_millimetres_and_metres_place_the_same_first_pixel():
    _, mm = geometry(pix0_units="mm", pix0=(100.0, 6.52, -4.76), convention="custom")
    _, m = geometry(pix0_units="m", pix0=(0.1, 0.00652, -0.00476), convention="custom")
    assert mm["pix0_m"] == pytest.approx((0.1, 0.00652, -0.00476), abs=1e-15)
    assert m["pix0_m"] == pytest.approx((0.1, 0.00652, -0.00476), abs=1e-15)


def test_pix0_equals_the_equivalent_beam_centre():
    # the golden pix0_override_mm case: this pix0 is where MOSFLM's Xbeam 6.47, Ybeam 4.71 puts it
    _, placed = geometry(pix0_units="mm", pix0=(100.0, 6.52, -4.76), convention="custom", pixel_mm=0.1)
    _, beam = geometry(Xbeam_mm=6.47, Ybeam_mm=4.71, pixel_mm=0.1)
    for key in ("pix0_m", "fdet", "sdet", "odet"):
        assert placed[key] == pytest.approx(beam[key], abs=1e-12)
    for key in ("Fbeam_m", "Sbeam_m", "Fclose_m", "Sclose_m", "distance_m", "close_distance_m", "ORGX_px", "ORGY_px"):
        assert placed[key] == pytest.approx(beam[key], rel=1e-12, abs=1e-15)


def test_pix0_with_custom_basis_is_ignored_with_a_warning():
    basis = dict(fdet=(0, 0, 1), sdet=(0, -1, 0), odet=(1, 0, 0), custom_basis=1, convention="custom")
    setup, g = geometry(pix0_units="mm", pix0=(50.0, 1.0, 1.0), **basis)
    plain, h = geometry(**basis)
    assert setup.warn_pix0_ignored
    assert not plain.warn_pix0_ignored
    assert "pix0" in setup.log and "ignored" in setup.log
    assert g["pix0_m"] == pytest.approx(h["pix0_m"], abs=0)


def test_other_units_convert_in_the_library():
    _, g = geometry(lambda_A=1.5, distance_mm=120.0, pixel_mm=0.1, phi_deg=30.0, water_um=5.0, dmin_A=2.0)
    assert g["lambda0_m"] == pytest.approx(1.5e-10, rel=1e-15)
    assert g["distance_m"] == pytest.approx(0.12, rel=1e-15)
    assert g["pixel_m"] == pytest.approx(1e-4, rel=1e-15)
    assert g["phi0_rad"] == pytest.approx(0.5235987755982988, rel=1e-15)
    assert g["dmin_m"] == pytest.approx(2e-10, rel=1e-15)
