"""Two mismatches with the reference that a differential test found.

Each is also pinned by reference-rendered golden cases (golden/extra_cases.json:
custom_twotheta_default_axis, custom_twotheta_beam_pivot,
xtalsize_exact_multiple, xtal_xyz_exact_multiples); these tests name the cause.
"""
import math

import pytest

from nanobragg import simulate

SMALL = dict(cell=(50, 50, 50, 90, 90, 90), default_F=10, detpixels=8, oversample=1)


@pytest.mark.parametrize("vector", ["fdet_vector", "sdet_vector", "odet_vector", "beam_vector",
                                    "polar_vector", "spindle_axis"])
def test_custom_convention_keeps_the_starting_twotheta_axis(vector):
    # the reference starts with (0,1,0); only the named conventions replace it
    default = {"fdet_vector": (0, 0, 1), "sdet_vector": (0, -1, 0), "odet_vector": (1, 0, 0),
               "beam_vector": (1, 0, 0), "polar_vector": (0, 0, 1), "spindle_axis": (0, 0, 1)}[vector]
    g = simulate(**SMALL, **{vector: default}, twotheta=10).geometry
    assert g["convention"] == "custom"
    assert g["twotheta_axis"] == pytest.approx((0, 1, 0))
    # two-theta about +y swings the MOSFLM-like normal (1,0,0) towards -z
    t = math.radians(10)
    assert g["odet"] == pytest.approx((math.cos(t), 0, -math.sin(t)), abs=1e-12)


@pytest.mark.parametrize("flags, axis", [({}, (0, 0, -1)), ({"xds": True}, (1, 0, 0)), ({"dials": True}, (0, 1, 0)),
                                         ({"adxv": True}, (-1, 0, 0)),
                                         ({"spindle_axis": (0, 0, 1), "twotheta_axis": (1, 0, 0)}, (1, 0, 0))])
def test_named_conventions_and_an_explicit_axis_win(flags, axis):
    assert simulate(**SMALL, **flags, twotheta=5).geometry["twotheta_axis"] == pytest.approx(axis)


@pytest.mark.parametrize("misset", [(10, 20, 30), (0, 0, 0), (33, -71, 5), (1, 2, 3)])
@pytest.mark.parametrize("size_mm", [0.0005, 0.00185, 0.0006, 100 * 50e-7])
def test_xtalsize_rounds_as_the_reference(misset, size_mm):
    # the reference: N = ceil((mm / 1000) / |edge vector in metres|); the
    # vector's length in A times 1e-10 differs in the last bit and turned
    # 100 x 100 x 100 cells into 100 x 101 x 100 for misset 10 20 30
    g = simulate(**SMALL, misset=misset, xtalsize=size_mm).geometry
    want = tuple(float(max(1, math.ceil((size_mm / 1000) / math.sqrt(sum(x * x for x in g[v])))))
                 for v in ("a0", "b0", "c0"))
    assert (g["Na"], g["Nb"], g["Nc"]) == want


def test_xtalsize_the_issue_case_is_100_cells_each_way():
    g = simulate(**SMALL, misset=(10, 20, 30), xtalsize=0.0005).geometry
    assert (g["Na"], g["Nb"], g["Nc"]) == (100, 100, 100)


def test_misset_rotation_rounds_as_the_reference():
    # found by the differential test: the reference builds 1x1x6 cells here;
    # a multiply-subtract fused by the compiler's vectorizer made it 1x1x7
    g = simulate(**{**SMALL, "cell": (50, 50, 50, 96.9101, 82.3258, 82.8159)}, misset=(-173.514, -74.8912, -110.807),
                 xtal_z=3e-05).geometry
    assert (g["Na"], g["Nb"], g["Nc"]) == (1, 1, 6)
