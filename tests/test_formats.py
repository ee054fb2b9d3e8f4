"""Crystallographic inputs (MTZ, SF-mmCIF, atomic models) and image formats (CBF, PNG, SMV pedestal key).

The reflection and model files are made here with gemmi; the expected P1
tables are built independently of nanobragg.structure, with gemmi's own
reciprocal-space ASU mapping (ReciprocalAsu.to_asu) and direct summation
(StructureFactorCalculatorX)."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

# gemmi and fabio are in the test extra: a missing one fails the suite rather than skipping it
import fabio
import fabio.cbfimage
import gemmi

from nanobragg import simulate, structure_factors, read_image
from nanobragg import images, structure

CELL = (31.0, 42.0, 53.0, 90.0, 101.0, 90.0)
DMIN = 6.0
COMMON = dict(N=8, detpixels=96, pixel=0.2, distance=60, misset=(12, 34, 56), wavelength=1.0, nonoise=True)


def _command(args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "nanobragg"] + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ files --

TRIGONAL = (40.0, 40.0, 53.0, 90.0, 90.0, 120.0)


def _asu_table(sg_name, rng, anomalous=False, cell=CELL):
    """Asymmetric-unit reflections of cell in sg_name with F = k/4 (exact in
    float32 and in 6 significant digits, so MTZ, mmCIF and text agree).
    Anomalous: F(-) differs from F(+) except on centric reflections."""
    sg = gemmi.SpaceGroup(sg_name)
    cell = gemmi.UnitCell(*cell)
    hkl = np.asarray(gemmi.make_miller_array(cell, sg, DMIN))
    fp = rng.integers(40, 3996, len(hkl)) / 4.0
    fm = fp
    if anomalous:
        centric = np.asarray(sg.operations().centric_flag_array(hkl)).astype(bool)
        fm = np.where(centric, fp, rng.integers(40, 3996, len(hkl)) / 4.0)
    return sg, cell, hkl, fp, fm


def _write_mtz(path, sg, cell, hkl, columns):
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = sg
    mtz.set_cell_for_all(cell)
    mtz.add_dataset("sim")
    for label, ctype, _ in columns:
        mtz.add_column(label, ctype)
    mtz.set_data(np.column_stack([hkl] + [v for _, _, v in columns]).astype(np.float32))
    mtz.write_to_file(str(path))


def _p1_reference(sg, cell, hkl, fp, fm):
    """{(h,k,l): F} over the whole sphere, by gemmi's ASU mapping: odd ISYM is F(+)."""
    lookup = {tuple(int(x) for x in r): (a, b) for r, a, b in zip(hkl, fp, fm)}
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    half = np.asarray(gemmi.make_miller_array(cell, gemmi.SpaceGroup("P 1"), DMIN))
    out = {}
    for h in np.concatenate([half, -half]):
        a, isym = asu.to_asu([int(x) for x in h], ops)
        key = tuple(int(x) for x in a)
        if key in lookup:
            out[tuple(int(x) for x in h)] = lookup[key][0] if isym % 2 == 1 else lookup[key][1]
    return out


def _write_text(path, table):
    with open(path, "w") as f:
        for (h, k, l), F in sorted(table.items()):
            f.write(f"{h} {k} {l} {float(F)!r}\n")


def _as_dict(rows):
    return {tuple(int(x) for x in r[:3]): float(r[3]) for r in rows}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(20261202)
    out = {"dir": d}
    # P2_1 amplitudes, and the same reflections as intensities and as an anomalous pair
    sg, cell, hkl, fp, _ = _asu_table("P 1 21 1", rng)
    _write_mtz(d / "p21.mtz", sg, cell, hkl, [("FP", "F", fp), ("SIGFP", "Q", fp / 10)])
    _write_text(d / "p21_as_p1.hkl", _p1_reference(sg, cell, hkl, fp, fp))
    cif = gemmi.MtzToCif().write_cif_to_string(gemmi.read_mtz_file(str(d / "p21.mtz")))
    (d / "p21-sf.cif").write_text(cif)
    out["p21"] = (sg, cell, hkl, fp)

    sg, cell, hkl, fp, fm = _asu_table("P 31 2 1", rng, anomalous=True, cell=TRIGONAL)
    _write_mtz(d / "anom.mtz", sg, cell, hkl, [("F", "F", (fp + fm) / 2), ("SIGF", "Q", fp / 10),
                                               ("F(+)", "G", fp), ("SIGF(+)", "L", fp / 10),
                                               ("F(-)", "G", fm), ("SIGF(-)", "L", fm / 10)])
    _write_text(d / "anom_as_p1.hkl", _p1_reference(sg, cell, hkl, fp, fm))
    out["anom"] = (sg, cell, hkl, fp, fm)

    sg, cell, hkl, fp, _ = _asu_table("C 1 2 1", rng)
    inten = fp ** 2
    inten[:5] = -np.arange(1, 6)              # a few negative intensities
    _write_mtz(d / "ionly.mtz", sg, cell, hkl, [("IMEAN", "J", inten), ("SIGIMEAN", "Q", inten * 0 + 1)])
    out["ionly"] = (sg, cell, hkl, inten)

    # a small model in P2_1: a few dozen atoms, B-factors and partial occupancies
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(24, 27, 30, 90, 97, 90)
    st.spacegroup_hm = "P 1 21 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    elements = ["C", "N", "O", "S", "C", "C", "O", "N", "Fe", "H"]
    for i in range(48):
        res = gemmi.Residue()
        res.name, res.seqid = "UNK", gemmi.SeqId(i + 1, " ")
        atom = gemmi.Atom()
        atom.name = f"A{i % 10}"
        atom.element = gemmi.Element(elements[i % len(elements)])
        atom.pos = gemmi.Position(*(rng.uniform(0, 1, 3) * np.array([11, 12, 13]) + 4))
        atom.b_iso = float(rng.uniform(8, 40))
        atom.occ = float(rng.choice([1.0, 1.0, 0.5]))
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    st.write_pdb(str(d / "model.pdb"))
    st.make_mmcif_document().write_file(str(d / "model.cif"))
    return out


# ------------------------------------------------------- reflection files --

def test_content_sniffing(files):
    d = files["dir"]
    assert structure.sniff((d / "p21.mtz").read_bytes()) == "mtz"
    assert structure.sniff((d / "p21-sf.cif").read_bytes()) == "sf-cif"
    assert structure.sniff((d / "model.cif").read_bytes()) == "model-cif"
    assert structure.sniff((d / "model.pdb").read_bytes()) == "pdb"
    assert structure.sniff((d / "p21_as_p1.hkl").read_bytes()) == "text"


@pytest.mark.parametrize("name", ["p21.mtz", "p21-sf.cif"])
def test_p21_file_expands_to_the_p1_table(files, name):
    d = files["dir"]
    rows = structure_factors(d / name)
    assert rows.dtype == np.float64 and rows.shape[1] == 4
    got = _as_dict(rows)
    assert len(got) == len(rows)               # every index once
    expected = _as_dict(np.loadtxt(d / "p21_as_p1.hkl", ndmin=2))
    assert got == expected


@pytest.mark.parametrize("name", ["p21.mtz", "p21-sf.cif"])
def test_p21_file_gives_the_image_of_the_p1_text_file(files, name):
    d = files["dir"]
    ref = simulate(hkl=str(d / "p21_as_p1.hkl"), cell=CELL, **COMMON)
    r = simulate(hkl=str(d / name), cell=CELL, **COMMON)
    assert ref.stats["max_I"] > 0 and np.count_nonzero(ref.float_image) > 100
    assert np.array_equal(r.float_image, ref.float_image)
    # without -cell the file's cell is used: the same image
    r2 = simulate(hkl=str(d / name), **COMMON)
    assert np.array_equal(r2.float_image, ref.float_image)


def test_command_mtz_equals_text(files, tmp_path):
    d = files["dir"]
    common = ["-N", 6, "-detpixels", 64, "-pixel", 0.2, "-distance", 60, "-misset", 12, 34, 56, "-nonoise", "-nopgm"]
    a = _command(["-hkl", d / "p21_as_p1.hkl", "-cell", *CELL, "-floatfile", "a.bin"] + common, tmp_path)
    b = _command(["-hkl", d / "p21.mtz", "-floatfile", "b.bin", "-dump", "b.dump"] + common, tmp_path)
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert "reading amplitude column FP" in b.stdout and "P 1 21 1" in b.stdout
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert (tmp_path / "b.dump").is_file()      # -hkl files are cached like text ones


@pytest.mark.parametrize("sg_name, cell", [
    ("P 1 21 1", CELL), ("C 1 2 1", CELL), ("P 21 21 21", (31, 42, 53, 90, 90, 90)), ("P 43 21 2", (40, 40, 53, 90, 90, 90)),
    ("P 31 2 1", TRIGONAL), ("P 61 2 2", TRIGONAL), ("I 2 3", (50, 50, 50, 90, 90, 90)), ("P -1", (31, 42, 53, 80, 101, 95)),
    ("P 1 21/c 1", CELL), ("R 3 :H", (40, 40, 90, 90, 90, 120))])
def test_p1_expansion_agrees_with_gemmi_asu_mapping(sg_name, cell):
    rng = np.random.default_rng(7)
    sg, gcell, hkl, fp, fm = _asu_table(sg_name, rng, anomalous=True, cell=cell)
    rows = structure._expand_p1(gemmi, sg, hkl, fp, fm)
    got = _as_dict(rows)
    assert len(got) == len(rows)
    assert got == _p1_reference(sg, gcell, hkl, fp, fm)


def test_anomalous_pair_is_kept(files):
    d = files["dir"]
    expected = _as_dict(np.loadtxt(d / "anom_as_p1.hkl", ndmin=2))
    for column in ("F(+)", "F(-)"):             # either label names the pair
        sf = structure.read_structure_factors(d / "anom.mtz", column=column)
        assert _as_dict(sf.rows) == expected
        assert any("F(+) on h k l" in m for m in sf.messages)
    # Bijvoet mates differ where the file says so
    sg, cell, hkl, fp, fm = files["anom"]
    got = _as_dict(structure_factors(d / "anom.mtz", column="F(+)"))
    i = int(np.argmax(np.abs(fp - fm)))
    h = tuple(int(x) for x in hkl[i])
    assert got[h] == fp[i] and got[tuple(-x for x in h)] == fm[i]
    # the default is the first amplitude column, the mean F: Friedel mates equal
    mean = _as_dict(structure_factors(d / "anom.mtz"))
    assert mean[h] == mean[tuple(-x for x in h)] == (fp[i] + fm[i]) / 2
    # and the image of the pair is that of the P1 table
    a = simulate(hkl=str(d / "anom.mtz"), hkl_column="F(+)", **COMMON)
    b = simulate(hkl=str(d / "anom_as_p1.hkl"), cell=TRIGONAL, **COMMON)
    assert np.array_equal(a.float_image, b.float_image)


def test_anomalous_pair_from_mmcif(files, tmp_path):
    cif = gemmi.MtzToCif().write_cif_to_string(gemmi.read_mtz_file(str(files["dir"] / "anom.mtz")))
    p = tmp_path / "anom-sf.cif"
    p.write_text(cif)
    assert "pdbx_F_plus" in cif
    got = _as_dict(structure_factors(p, column="pdbx_F_plus"))
    assert got == _as_dict(np.loadtxt(files["dir"] / "anom_as_p1.hkl", ndmin=2))


def test_intensities_only(files):
    sf = structure.read_structure_factors(files["dir"] / "ionly.mtz")
    assert sf.column == "IMEAN"
    assert any("F = sqrt(I), 5 negative I taken as 0" in m for m in sf.messages)
    sg, cell, hkl, inten = files["ionly"]
    got = _as_dict(sf.rows)
    for h, i in zip(hkl[:12], inten[:12]):
        assert got[tuple(int(x) for x in h)] == pytest.approx(math.sqrt(max(float(np.float32(i)), 0.0)))


def test_column_errors(files):
    d = files["dir"]
    with pytest.raises(ValueError, match=r"no amplitude or intensity column 'FOO' \(the file has: FP\)"):
        structure_factors(d / "p21.mtz", column="FOO")
    with pytest.raises(ValueError, match="hkl_column: .* text h k l F file"):
        simulate(hkl=str(d / "p21_as_p1.hkl"), hkl_column="F", cell=CELL, **COMMON)
    with pytest.raises(ValueError, match="an atomic model, not structure factors"):
        simulate(hkl=str(d / "model.pdb"), cell=CELL, **COMMON)
    with pytest.raises(ValueError, match="k_sol: the bulk solvent applies"):
        simulate(hkl=str(d / "p21.mtz"), k_sol=0.3, **COMMON)
    with pytest.raises(ValueError, match="one source of structure factors"):
        simulate(hkl=str(d / "p21.mtz"), pdb=str(d / "model.pdb"), **COMMON)


def test_bad_files_are_one_line_errors(files, tmp_path):
    bad = tmp_path / "bad.mtz"
    bad.write_bytes(b"MTZ " + b"\0" * 40)
    r = _command(["-hkl", bad, "-N", 2, "-detpixels", 16, "-nonoise", "-nopgm"], tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("nanoBragg: error: -hkl ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "floatimage.bin").exists()
    nocell = tmp_path / "nocell.pdb"
    nocell.write_text("ATOM      1  CA  ALA A   1       1.000   2.000   3.000  1.00 20.00           C\nEND\n")
    r = _command(["-pdb", nocell, "-N", 2, "-detpixels", 16, "-nonoise", "-nopgm"], tmp_path)
    assert r.returncode == 1 and "no unit cell" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_pdb_that_is_not_a_model(files, tmp_path):
    p = tmp_path / "numbers.pdb"
    p.write_text("1 2 3 4.5\n")
    with pytest.raises(ValueError, match="no atoms"):
        simulate(pdb=str(p), N=2, detpixels=16)
    with pytest.raises(ValueError, match="a reflection file, not a model: give it to -hkl|give it to hkl"):
        simulate(pdb=str(files["dir"] / "p21.mtz"), N=2, detpixels=16)


# ------------------------------------------------------------------ models --

def _direct(path, hkl):
    st = gemmi.read_structure(str(path))
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    return np.array([abs(calc.calculate_sf_from_model(st[0], [int(x) for x in h])) for h in hkl])


@pytest.mark.parametrize("name", ["model.pdb", "model.cif"])
def test_model_amplitudes_match_gemmi_direct_summation(files, name):
    path = files["dir"] / name
    rows = structure_factors(path, dmin_A=2.5)
    st = gemmi.read_structure(str(path))
    # every P1 reflection to 2.5 A, each once, with its Friedel mate and F000
    expected = {tuple(int(x) for x in h) for h in gemmi.make_miller_array(st.cell, gemmi.SpaceGroup("P 1"), 2.5)}
    expected |= {tuple(-x for x in h) for h in expected} | {(0, 0, 0)}
    assert set(_as_dict(rows)) == expected and len(rows) == len(expected)
    rng = np.random.default_rng(5)
    sample = rows[np.r_[rng.choice(len(rows) - 1, 400, replace=False), len(rows) - 1]]
    direct = _direct(path, sample[:, :3])
    rel_rms = math.sqrt(np.mean((sample[:, 3] - direct) ** 2) / np.mean(direct ** 2))
    assert rel_rms < 0.01, rel_rms
    f000 = rows[np.all(rows[:, :3] == 0, axis=1), 3][0]
    electrons = sum(cra.atom.occ * cra.atom.element.atomic_number for cra in st[0].all()) * len(st.find_spacegroup().operations())
    assert f000 == pytest.approx(electrons, rel=0.01)      # F000: the electrons in the cell


def test_bulk_solvent(files):
    path = files["dir"] / "model.pdb"
    plain = _as_dict(structure_factors(path, dmin_A=3.0))
    sf = structure.read_structure_factors(path, dmin_A=3.0, k_sol=0.35, b_sol=200.0)
    solv = _as_dict(sf.rows)
    assert set(plain) == set(solv)
    assert any("flat bulk solvent: k_sol = 0.35" in m for m in sf.messages)
    assert solv[(0, 0, 0)] > plain[(0, 0, 0)] + 0.35 * 100.0   # solvent electrons add to F000
    low = [h for h in plain if h != (0, 0, 0) and sum(abs(x) for x in h) == 1]
    high = [h for h in plain if sum(abs(x) for x in h) >= 12]
    def change(keys):
        return np.mean([abs(solv[h] - plain[h]) / max(plain[h], 1e-9) for h in keys])
    assert change(low) > 10 * change(high)      # exp(-B s^2/4): a low-resolution effect


def test_corner_resolution():
    r = simulate(cell=(50, 50, 50, 90, 90, 90), default_F=1, N=1, detpixels=100, pixel=0.1, distance=50,
                 wavelength=1.2, nonoise=True)
    # the farthest corner from the direct beam (Fbeam, Sbeam from the first pixel's corner), 50 mm away
    g = r.geometry
    df = max(g["Fbeam_m"], 0.01 - g["Fbeam_m"]) * 1e3
    ds = max(g["Sbeam_m"], 0.01 - g["Sbeam_m"]) * 1e3
    two_theta = math.atan(math.hypot(df, ds) / 50.0)
    expected = 1.2 / (2 * math.sin(two_theta / 2))
    assert structure.corner_resolution_A(r.geometry) == pytest.approx(expected, rel=1e-3)


def test_pdb_image_reaches_the_corner(files):
    path = files["dir"] / "model.pdb"
    r = simulate(pdb=str(path), N=3, detpixels=64, pixel=0.2, distance=50, nonoise=True, misset=(5, 10, 15))
    assert np.isfinite(r.float_image).all() and r.stats["max_I"] > 0
    # every pixel has its h k l in the table: the image does not change with default_F
    r2 = simulate(pdb=str(path), N=3, detpixels=64, pixel=0.2, distance=50, nonoise=True, misset=(5, 10, 15),
                  default_F=1e6)
    assert np.array_equal(r.float_image, r2.float_image)


def test_saxs_image_with_f000(files):
    path = files["dir"] / "model.pdb"
    kw = dict(N=1, detpixels=41, pixel=0.5, distance=500, wavelength=1.0, nonoise=True)
    r = simulate(pdb=str(path), **kw)
    img = r.float_image
    assert np.isfinite(img).all()
    # the forward (F000) scattering is the brightest, at the direct beam in the centre
    s, f = np.unravel_index(np.argmax(img), img.shape)
    g = r.geometry
    assert (s, f) == (int(g["Sbeam_m"] / g["pixel_m"]), int(g["Fbeam_m"] / g["pixel_m"]))
    # without F000 the centre is much weaker
    rows = structure_factors(path, dmin_A=structure.corner_resolution_A(r.geometry) / 2)
    no000 = rows[~np.all(rows[:, :3] == 0, axis=1)]
    cell = gemmi.read_structure(str(path)).cell
    r0 = simulate(hkl=no000, cell=(cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma), **kw)
    assert img[s, f] > 10 * r0.float_image[s, f]


def test_command_pdb_to_cbf(files, tmp_path):
    r = _command(["-pdb", files["dir"] / "model.cif", "-N", 3, "-detpixels", 48, "-pixel", 0.2, "-distance", 60,
                  "-cbffile", "m.cbf", "-pngfile", "m.png", "-k_sol", 0.35, "-seed", 7], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "computing structure factors of" in r.stdout and "flat bulk solvent" in r.stdout
    data, header = read_image(tmp_path / "m.cbf")
    noise, _ = read_image(tmp_path / "noiseimage.img")
    assert np.array_equal(data, np.clip(noise.astype(np.int32) - 40, 0, None))
    assert (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# ------------------------------------------------------------------ images --

GEOM = dict(cell=(60, 60, 60, 90, 90, 90), default_F=50, N=4, detpixels_f=48, detpixels_s=40, pixel=0.172,
            distance=150, wavelength=1.3, Xbeam=3.1, Ybeam=4.2, phi=10, osc=0.5, exposure=2,
            detector_thick=450, adc=25, seed=3)


@pytest.fixture(scope="module")
def result():
    return simulate(**GEOM)


def test_cbf_header_read_by_fabio(result, tmp_path):
    p = tmp_path / "x.cbf"
    result.write_cbf(p)
    img = fabio.open(str(p))
    assert img.data.shape == (40, 48)
    counts, cutoff = result.cbf_counts()
    assert np.array_equal(img.data, counts) and cutoff == 65535 - 25
    assert np.array_equal(counts, np.clip(result.noise_image().astype(np.int32) - 25, 0, None))
    assert img.header["_array_data.header_convention"] == "GENERIC_MINI"
    assert "x-CBF_BYTE_OFFSET" in p.read_bytes()[:4096].decode("latin-1")
    h = fabio.cbfimage.PilatusHeader(img.header["_array_data.header_contents"])._dict
    assert h["Pixel_size"] == pytest.approx((172e-6, 172e-6))
    assert h["Wavelength"] == pytest.approx(1.3)
    assert h["Detector_distance"] == pytest.approx(0.150)
    assert h["Start_angle"] == pytest.approx(10.0) and h["Angle_increment"] == pytest.approx(0.5)
    assert h["Exposure_time"] == pytest.approx(2.0)
    assert h["sensor"] == ("Silicon", pytest.approx(450e-6))
    assert h["Count_cutoff"] == 65510
    # the beam centre in pixels from the first pixel's corner: the SMV header's ADXV X and DENZO X (mm)
    smv = result.header
    assert h["Beam_xy"][0] * 0.172 == pytest.approx(smv["ADXV_CENTER_X"], abs=1e-3)
    assert h["Beam_xy"][1] * 0.172 == pytest.approx(smv["DENZO_X_BEAM"], abs=1e-3)


def test_read_image_round_trips(result, tmp_path):
    result.write_smv(tmp_path / "a.img")
    data, header = read_image(tmp_path / "a.img")
    assert data.dtype == np.uint16 and np.array_equal(data, result.int_image())
    assert header == result.header
    result.write_smv(tmp_path / "n.img", noise=True)
    assert np.array_equal(read_image(tmp_path / "n.img")[0], result.noise_image())
    result.write_cbf(tmp_path / "a.cbf", noise=False)
    data, header = read_image(tmp_path / "a.cbf")
    assert data.dtype == np.int32 and np.array_equal(data, result.cbf_counts(noise=False)[0])
    assert header["Wavelength"] == pytest.approx(1.3) and header["Beam_xy"][0] > 0
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not an SMV, CBF or NeXus image"):
        read_image(tmp_path / "junk")


def test_smv_adc_offset_key(result, tmp_path):
    plain = result.smv_bytes()
    assert b"ADC_OFFSET" not in plain            # the reference's header, by default
    keyed = result.smv_bytes(adc_header=True)
    assert len(keyed) == len(plain)              # fits the 512-byte header's padding
    assert keyed[512:] == plain[512:]
    result.write_smv(tmp_path / "k.img", adc_header=True)
    data, header = read_image(tmp_path / "k.img")
    assert header["ADC_OFFSET"] == 25 and np.array_equal(data, result.int_image())
    assert {k: v for k, v in header.items() if k != "ADC_OFFSET"} == result.header


def test_smv_adc_offset_key_grows_a_full_header():
    filler = b"".join(b"K%03d=%s;\n" % (i, b"v" * 20) for i in range(18))
    text = b"{\nHEADER_BYTES=512;\n" + filler
    text = text + b"Z=" + b"z" * (510 - len(text) - 4) + b";\n" + b"}\f"
    assert len(text) == 512
    pixels = bytes(range(16))
    out = images.smv_header_with_adc_offset(text, 40) + pixels
    assert out.startswith(b"{\nHEADER_BYTES=1024;") and len(out) == 1024 + 16 and out.endswith(pixels)
    assert b"ADC_OFFSET=40;\n}\f" in out[:1024]


def test_command_adc_header(tmp_path):
    args = ["-cell", 50, 50, 50, 90, 90, 90, "-default_F", 10, "-N", 2, "-detpixels", 16, "-nopgm", "-seed", 1]
    r = _command(args + ["-adc_header"], tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("intimage.img", "noiseimage.img"):
        _, h = read_image(tmp_path / name)
        assert h["ADC_OFFSET"] == 40
    r = _command(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"ADC_OFFSET" not in (tmp_path / "intimage.img").read_bytes()[:512]


def _decode_png(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.setdefault(kind, b"")
        chunks[kind] += body
        pos += 12 + n
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 0)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(h, w + 1)
    assert not raw[:, 0].any()
    return raw[:, 1:]


def test_png_preview_shows_spots(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.poisson(20, size=(60, 80)).astype(np.float32)
    spots = [(10, 10, 5000.0), (30, 40, 300.0), (50, 70, 80.0)]
    for s, f, v in spots:
        img[s, f] = v
    p = tmp_path / "x.png"
    images.write_png(p, img)
    px = _decode_png(p.read_bytes())
    assert px.shape == (60, 80)
    assert np.array_equal(px, images.preview_8bit(img))
    spot_mask = np.zeros(img.shape, bool)
    for s, f, v in spots:
        spot_mask[s, f] = True
    assert np.median(px[~spot_mask]) == 255                  # background white
    assert all(px[s, f] < 200 for s, f, _ in spots)          # even the weak spot shows
    assert px[10, 10] < px[30, 40] < px[50, 70]              # stronger is darker
    assert px[10, 10] == 0


def test_result_png(result, tmp_path):
    result.write_png(tmp_path / "r.png")
    px = _decode_png((tmp_path / "r.png").read_bytes())
    assert px.shape == result.float_image.shape and px.min() < 128 and px.max() == 255


def test_cbf_header_has_what_a_generic_minicbf_reader_needs(result, tmp_path):
    """DIALS's generic miniCBF reader keys each '# Name value' line by its
    second word (':' and '=' dropped) and takes the numbers from the rest;
    the MIME lines give the size.  Check the lines it needs parse that way."""
    p = tmp_path / "d.cbf"
    result.write_cbf(p)
    raw = p.read_bytes()
    assert raw.startswith(b"###CBF")
    text = raw[:raw.index(b"--CIF-BINARY-FORMAT-SECTION--")].decode("ascii")
    assert "_array_data.header_convention" in text and "GENERIC_MINI" in text
    assert "_diffrn.id" not in text
    items, stamps = {}, []
    for line in text.split("\n"):
        if not line.startswith("#"):
            continue
        if len(line[1:].split()) <= 2 and line.count(":") == 2:
            stamps.append(line[1:].strip())
            continue
        words = line.replace("=", "").replace(":", "").split()
        items[words[1]] = " ".join(words[2:])
    assert len(stamps) == 1
    assert float(items["Detector_distance"].split()[0]) == pytest.approx(0.15)
    assert float(items["Wavelength"].split()[0]) == pytest.approx(1.3)
    bx, by = (float(v) for v in items["Beam_xy"].replace("(", "").replace(")", "").replace(",", "").split()[:2])
    g = result.geometry
    assert (bx, by) == pytest.approx((g["Fbeam_m"] / 172e-6, g["Sbeam_m"] / 172e-6), abs=0.01)
    assert [float(v) for v in items["Pixel_size"].replace("m", "").replace("x", "").split()] == pytest.approx([172e-6] * 2)
    assert float(items["Silicon"].split()[2]) == pytest.approx(450e-6)
    assert int(items["Count_cutoff"].split()[0]) == 65510
    for key in ("Exposure_period", "Start_angle", "Angle_increment"):
        float(items[key].split()[0])
    section = raw[raw.index(b"--CIF-BINARY-FORMAT-SECTION--"):raw.index(b"\x0c\x1a\x04\xd5")].decode("latin-1")
    sizes = dict(line.strip().split(":") for line in section.splitlines() if line.startswith("X"))
    assert int(sizes["X-Binary-Size-Fastest-Dimension"]) == 48 and int(sizes["X-Binary-Size-Second-Dimension"]) == 40
