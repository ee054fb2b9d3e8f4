"""Structure factors from crystallographic files, as the (n, 4) h k l F table nanoBragg renders.

* MTZ and structure-factor mmCIF (``*-sf.cif``) files are read with gemmi and
  expanded from their space group to P1 with Friedel mates (nanoBragg
  imposes no symmetry).  An anomalous pair F(+)/F(-) keeps F(+) on the
  symmetry mates of h k l and F(-) on those of -h -k -l.
* Atomic models (PDB or mmCIF coordinates) give F computed by gemmi: the
  model's electron density (IT92 form factors, B-factors, anisotropic ADPs
  and occupancies) on an FFT grid in the model's cell and space group,
  F000 by direct summation, and optionally a flat bulk solvent
  F = F_atoms + k_sol exp(-B_sol s^2/4) F_mask (s = 1/d).
* Anything else is the reference's text table of h k l F.

Files are recognised by their content, not their name.  gemmi and NumPy are
imported only when a file needs them: the job layer imports this module for
every -hkl file to sniff it.
"""

from __future__ import annotations

import math
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
    import numpy as np

__all__ = ["structure_factors", "read_structure_factors", "StructureFactors", "sniff",
           "corner_resolution_A", "ModelInput", "read_model", "run_input", "run_rows", "DEFAULT_B_SOL",
           ]

DEFAULT_B_SOL = 46.0              # A^2: a typical refined flat-bulk-solvent B (phenix, refmac)
MAX_GRID_POINTS = 1 << 28         # FFT grid for -pdb: about 1 GiB of float32
_SNIFF_BYTES = 1 << 16


# ---------------------------------------------------------------------------
# what a file is
# ---------------------------------------------------------------------------

def sniff(data: bytes) -> str:
    """The kind of a file from its first bytes: "mtz", "sf-cif" (reflections),
    "model-cif" (coordinates), "pdb" (coordinates) or "text" (h k l F)."""
    if data[:4] == b"MTZ ":
        return "mtz"
    head = data[:_SNIFF_BYTES].decode("latin-1")
    first = ""
    for line in head.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            first = s
            break
    if first.lower().startswith("data_"):
        if "_refln." in head or "_refln_" in head or "_diffrn_refln" in head:
            return "sf-cif"
        if "_atom_site" in head:
            return "model-cif"
        # a long header may push the loops past the first bytes: decide on the category names later
        return "cif"
    for line in head.splitlines():
        if line[:6].upper().ljust(6) in _PDB_RECORDS:
            return "pdb"
        if line.strip():
            break
    return "text"


# PDB records that open a coordinate file (a text h k l F line starts with a number)
_PDB_RECORDS = {r.ljust(6) for r in (
    "HEADER", "OBSLTE", "TITLE", "SPLIT", "CAVEAT", "COMPND", "SOURCE", "KEYWDS", "EXPDTA", "NUMMDL", "MDLTYP",
    "AUTHOR", "REVDAT", "SPRSDE", "JRNL", "REMARK", "DBREF", "DBREF1", "SEQADV", "SEQRES", "MODRES", "HET",
    "HETNAM", "HETSYN", "FORMUL", "HELIX", "SHEET", "SSBOND", "LINK", "CISPEP", "SITE", "CRYST1", "ORIGX1",
    "SCALE1", "MTRIX1", "MODEL", "ATOM", "ANISOU", "HETATM", "TER")}


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(_SNIFF_BYTES)


def _check_size(path: str, what: str) -> None:
    """The job layer's bound for reflection and model files (gemmi reads them by path)."""
    from ._io import INPUT_LIMITS, size_text
    size = os.path.getsize(path)
    limit = INPUT_LIMITS["hkl"]
    if size > limit:
        raise ValueError(f"{what} {path}: the file is {size} bytes, more than the {size_text(limit)} limit for {what}")


# ---------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------

class StructureFactors:
    """Structure factors read or computed from a file.

    ``rows``: float64 (n, 4) h k l F in P1 with Friedel mates; ``cell``
    (a, b, c, alpha, beta, gamma) in A and degrees, or None for a text file;
    ``spacegroup`` (Hermann-Mauguin) of the file; ``kind`` (see :func:`sniff`);
    ``column`` the amplitude or intensity column used; ``messages`` the lines
    to tell the user (what was read and any conversion made)."""

    def __init__(self, rows: "np.ndarray", cell: "Optional[Tuple[float, ...]]", spacegroup: "Optional[str]",
                 kind: str, column: "Optional[str]", messages: "List[str]"):
        self.rows = rows
        self.cell = cell
        self.spacegroup = spacegroup
        self.kind = kind
        self.column = column
        self.messages = messages

    def __repr__(self) -> str:
        return (f"<StructureFactors {self.kind} {len(self.rows)} P1 reflections, column={self.column!r}, "
                f"spacegroup={self.spacegroup!r}>")


def _gemmi():
    try:
        import gemmi
    except ImportError:
        raise ImportError("reading MTZ, mmCIF and PDB files needs gemmi: pip install gemmi "
                          "(or pip install 'nanobragg[formats]')") from None
    return gemmi


def _cell_tuple(cell) -> "Tuple[float, ...]":
    return (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)


# ---------------------------------------------------------------------------
# reflection files: MTZ and SF-mmCIF
# ---------------------------------------------------------------------------

# mmCIF _refln items -> MTZ column types: F amplitude, G anomalous amplitude,
# J intensity, K anomalous intensity (the PDB's SF-mmCIF dictionary names)
_CIF_KIND = {
    "F_meas_au": "F", "F_meas": "F", "F_calc_au": "F", "F_calc": "F", "pdbx_F_calc_with_solvent": "F",
    "pdbx_F_plus": "G", "pdbx_F_minus": "G", "pdbx_anom_F_plus": "G", "pdbx_anom_F_minus": "G",
    "intensity_meas": "J", "F_squared_meas": "J", "intensity_calc": "J", "F_squared_calc": "J",
    "pdbx_I_plus": "K", "pdbx_I_minus": "K",
}
_KIND_WORD = {"F": "amplitude", "G": "anomalous amplitude", "J": "intensity", "K": "anomalous intensity"}


def _partner(label: str, labels: "Sequence[str]") -> "Optional[str]":
    """The (-) column of an anomalous (+) column, or the (+) one of a (-) column."""
    swaps = (("(+)", "(-)"), ("_plus", "_minus"), ("PLUS", "MINUS"), ("plus", "minus"), ("+", "-"))
    for a, b in swaps:
        for x, y in ((a, b), (b, a)):
            if x in label:
                other = label.replace(x, y)
                if other in labels and other != label:
                    return other
    return None


def _is_minus(label: str) -> bool:
    return any(t in label for t in ("(-)", "_minus", "MINUS", "minus")) or (label.endswith("-") and "+" not in label)


class _Table:
    """A merged reflection file: cell, space group, Miller indices and its
    amplitude/intensity columns (label -> (type, values))."""

    def __init__(self, gemmi, cell, spacegroup, hkl, columns: "Dict[str, Tuple[str, Any]]", order: "List[str]"):
        self.gemmi, self.cell, self.spacegroup, self.hkl = gemmi, cell, spacegroup, hkl
        self.columns, self.order = columns, order


def _read_mtz(gemmi, path: str, name: str) -> _Table:
    import numpy as np
    try:
        mtz = gemmi.read_mtz_file(path)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name} {path}: not a readable MTZ file: {e}") from None
    if mtz.batches or mtz.column_with_label("M/ISYM") is not None:
        raise ValueError(f"{name} {path}: an unmerged MTZ (with batches); give merged structure factors")
    if mtz.spacegroup is None:
        raise ValueError(f"{name} {path}: the MTZ file has no space group")
    data = np.array(mtz, copy=True)
    hkl = data[:, :3].astype(np.int64)
    columns, order = {}, []
    for i, col in enumerate(mtz.columns):
        if col.type in "FGJK":
            columns[col.label] = (col.type, data[:, i].astype(np.float64))
            order.append(col.label)
    return _Table(gemmi, mtz.cell, mtz.spacegroup, hkl, columns, order)


def _read_sf_cif(gemmi, path: str, name: str) -> _Table:
    import numpy as np
    try:
        doc = gemmi.cif.read(path)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name} {path}: not a readable mmCIF file: {e}") from None
    blocks = [rb for rb in gemmi.as_refln_blocks(doc) if rb.default_loop is not None]
    if not blocks:
        raise ValueError(f"{name} {path}: no _refln loop (is it a structure-factor mmCIF?)")
    rb = blocks[0]
    if not rb.is_merged():
        raise ValueError(f"{name} {path}: unmerged reflections only; give merged structure factors")
    if rb.spacegroup is None:
        raise ValueError(f"{name} {path}: no space group (_symmetry.space_group_name_H-M) in the file")
    if rb.cell.a <= 1.0 and rb.cell.b <= 1.0:
        raise ValueError(f"{name} {path}: no unit cell (_cell.length_a ...) in the file")
    hkl = np.asarray(rb.make_miller_array(), dtype=np.int64)
    columns, order = {}, []
    for tag in rb.column_labels():
        kind = _CIF_KIND.get(tag)
        if kind is not None:
            columns[tag] = (kind, np.asarray(rb.make_float_array(tag), dtype=np.float64))
            order.append(tag)
    return _Table(gemmi, rb.cell, rb.spacegroup, hkl, columns, order)


def _choose_column(t: _Table, column: "Optional[str]", where: str) -> str:
    if column is not None:
        col = column[len("_refln."):] if column.startswith("_refln.") else column
        if col not in t.columns:
            have = ", ".join(t.order) or "none"
            raise ValueError(f"{where}: no amplitude or intensity column '{column}' (the file has: {have})")
        return col
    for kinds in ("FG", "JK"):          # the first amplitude column, else the first intensity column
        for label in t.order:
            if t.columns[label][0] in kinds:
                return label
    raise ValueError(f"{where}: no amplitude (F) or intensity (I) column in the file")


def _expand_p1(gemmi, spacegroup, hkl, f_plus, f_minus):
    """P1 rows from asymmetric-unit reflections: every symmetry mate of h k l
    gets f_plus and every mate of -h -k -l gets f_minus (gemmi's symmetry
    operators; amplitudes need no phase shifts).  The first value given to an
    index wins, so centric reflections keep F(+)."""
    import numpy as np
    ops = spacegroup.operations()
    rots = [np.array(op.rot, dtype=np.int64) // op.DEN for op in ops.sym_ops]
    if ops.is_centrosymmetric():
        rots += [-r for r in rots]
    parts_hkl, parts_f = [], []
    for sign, f in ((1, f_plus), (-1, f_minus)):
        for r in rots:
            parts_hkl.append(sign * (hkl @ r))   # gemmi's Op.apply_to_hkl: h' = h R
            parts_f.append(f)
    allhkl = np.concatenate(parts_hkl)
    allf = np.concatenate(parts_f)
    _, first = np.unique(allhkl, axis=0, return_index=True)
    first.sort()
    return np.column_stack([allhkl[first].astype(np.float64), allf[first]])


def _reflections(path: str, kind: str, column: "Optional[str]", name: str) -> StructureFactors:
    import numpy as np
    gemmi = _gemmi()
    where = f"{name} {path}"
    t = _read_mtz(gemmi, path, name) if kind == "mtz" else _read_sf_cif(gemmi, path, name)
    label = _choose_column(t, column, where)
    ctype, values = t.columns[label]
    messages = [f"reading {_KIND_WORD[ctype]} column {label} of {path} "
                f"(space group {t.spacegroup.hm}, {len(values)} reflections)"]
    plus, minus = values, values
    if ctype in "GK":
        other = _partner(label, t.order)
        if other is None:
            raise ValueError(f"{where}: the anomalous column {label} has no (+)/(-) partner in the file")
        if _is_minus(label):
            label, other = other, label
        plus, minus = t.columns[label][1], t.columns[other][1]
        # a missing mate takes the other's value
        plus, minus = np.where(np.isnan(plus), minus, plus), np.where(np.isnan(minus), plus, minus)
        messages.append(f"anomalous pair {label}/{other}: F(+) on h k l, F(-) on -h -k -l")
    if ctype in "JK":
        neg = int(np.count_nonzero((plus < 0) | (minus < 0)))
        plus, minus = np.sqrt(np.clip(plus, 0, None)), np.sqrt(np.clip(minus, 0, None))
        messages.append(f"intensities only: F = sqrt(I), {neg} negative I taken as 0")
    keep = ~(np.isnan(plus) & np.isnan(minus))
    missing = int(len(keep) - np.count_nonzero(keep))
    if missing:
        messages.append(f"{missing} reflections without a value are left to -default_F")
    if not np.any(keep):
        raise ValueError(f"{where}: column {label} has no values")
    rows = _expand_p1(gemmi, t.spacegroup, t.hkl[keep], plus[keep], minus[keep])
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{where}: column {label} has non-finite values")
    messages.append(f"{len(rows)} reflections in P1 with Friedel mates")
    return StructureFactors(rows, _cell_tuple(t.cell), t.spacegroup.hm, kind, label, messages)


# ---------------------------------------------------------------------------
# atomic models
# ---------------------------------------------------------------------------

class ModelInput:
    """An atomic model read for -pdb: its cell and space group are known
    before the detector is set up; :meth:`structure_factors` needs the
    resolution, which depends on the detector."""

    def __init__(self, path: str, structure, name: str = "-pdb"):
        self.path = path
        self.structure = structure
        self.name = name
        self.cell: "Tuple[float, ...]" = _cell_tuple(structure.cell)
        sg = structure.find_spacegroup()
        self.spacegroup = sg
        self.spacegroup_name: str = sg.hm if sg is not None else "P 1"

    def reciprocal_step_inv_A(self) -> float:
        """The longest reciprocal axis |a*|, |b*| or |c*| (1/A)."""
        r = self.structure.cell.reciprocal()
        return max(r.a, r.b, r.c)

    def structure_factors(self, dmin_A: float, k_sol: float = 0.0, b_sol: float = DEFAULT_B_SOL) -> StructureFactors:
        return _model_sf(self, dmin_A, k_sol, b_sol)


def read_model(path: str, name: str = "-pdb") -> ModelInput:
    """Read a PDB or mmCIF coordinate file (recognised by content)."""
    gemmi = _gemmi()
    where = f"{name} {path}"
    _check_size(path, name)
    kind = sniff(_head(path))
    try:
        if kind in ("model-cif", "cif"):
            doc = gemmi.cif.read(path)
            st = gemmi.make_structure_from_block(doc.sole_block())
        elif kind in ("mtz", "sf-cif"):
            raise ValueError(f"{where}: a reflection file, not a model: give it to "
                             f"{'-hkl' if name.startswith('-') else 'hkl'}")
        else:   # PDB, or a file that may be one: the atoms decide
            st = gemmi.read_pdb(path)
    except (RuntimeError, ValueError) as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    if len(st) == 0 or not any(True for _ in st[0].all()):
        raise ValueError(f"{where}: no atoms (not a PDB or mmCIF coordinate file?)")
    c = st.cell
    if c.a <= 1.0 or c.b <= 1.0 or c.c <= 1.0 or not c.is_crystal():
        raise ValueError(f"{where}: the model has no unit cell (a CRYST1 record or _cell); "
                         "nanoBragg needs the crystal's cell")
    st.setup_cell_images()
    unknown = [cra for cra in st[0].all() if cra.atom.element.name == "X"]
    if unknown:
        raise ValueError(f"{where}: atoms of unknown element; give element symbols (columns 77-78 in PDB)")
    return ModelInput(path, st, name)


def _model_sf(m: ModelInput, dmin_A: float, k_sol: float, b_sol: float) -> StructureFactors:
    import numpy as np
    gemmi = _gemmi()
    where = f"{m.name} {m.path}"
    if not (dmin_A > 0 and math.isfinite(dmin_A)):
        raise ValueError(f"{where}: the resolution limit must be > 0 A, got {dmin_A:g}")
    st = m.structure
    model = st[0]
    cell = st.cell
    rate = 2.0     # grid spacing dmin/(2*rate): keeps FFT errors well under 1 % of F
    npoints = 1.0
    for length in (cell.a, cell.b, cell.c):
        npoints *= 2 * rate * length / dmin_A
    if npoints > MAX_GRID_POINTS:
        raise ValueError(f"{where}: structure factors to {dmin_A:.3g} A in this cell need a density grid of "
                         f"{npoints:.3g} points (at most {MAX_GRID_POINTS}); give a larger -dmin")
    dc = gemmi.DensityCalculatorX()
    dc.d_min = dmin_A
    dc.rate = rate
    dc.set_refmac_compatible_blur(model)
    dc.grid.setup_from(st)
    dc.put_model_density_on_grid(model)
    fgrid = gemmi.transform_map_to_f_phi(dc.grid)

    hkl = np.asarray(gemmi.make_miller_array(cell, gemmi.SpaceGroup("P 1"), dmin_A), dtype=np.int32)
    F = np.asarray(fgrid.get_value_by_hkl(hkl, unblur=dc.blur), dtype=np.complex128)
    f000 = complex(gemmi.StructureFactorCalculatorX(cell).calculate_sf_from_model(model, [0, 0, 0]))
    messages = [f"computing structure factors of {m.path} to {dmin_A:.4g} A "
                f"(space group {m.spacegroup_name}, {model.count_atom_sites()} atoms, F000 = {f000.real:.6g})"]
    if k_sol != 0.0:
        mask = gemmi.FloatGrid()
        mask.setup_from(st)
        mask.set_size(dc.grid.nu, dc.grid.nv, dc.grid.nw)
        masker = gemmi.SolventMasker(gemmi.AtomicRadiiSet.Refmac)
        masker.put_mask_on_float_grid(mask, model)      # 1 in the solvent, 0 in the molecule
        fmask = gemmi.transform_map_to_f_phi(mask)
        Fm = np.asarray(fmask.get_value_by_hkl(hkl), dtype=np.complex128)
        inv_d2 = np.asarray(cell.calculate_1_d2_array(hkl), dtype=np.float64)
        F = F + k_sol * np.exp(-b_sol * inv_d2 / 4.0) * Fm
        solvent_volume = float(np.mean(np.asarray(mask))) * cell.volume
        f000 = f000 + k_sol * solvent_volume
        messages.append(f"flat bulk solvent: k_sol = {k_sol:g} e/A^3, B_sol = {b_sol:g} A^2, "
                        f"solvent {100.0 * solvent_volume / cell.volume:.1f} % of the cell")
    amp = np.abs(F)
    h = hkl.astype(np.float64)
    rows = np.concatenate([np.column_stack([h, amp]), np.column_stack([-h, amp]),
                           np.array([[0.0, 0.0, 0.0, abs(f000)]])])
    messages.append(f"{len(rows)} reflections in P1 with Friedel mates and F000")
    return StructureFactors(rows, m.cell, m.spacegroup_name, "model", None, messages)


# ---------------------------------------------------------------------------
# resolution the detector reaches
# ---------------------------------------------------------------------------

def corner_resolution_A(geometry: Mapping[str, Any]) -> float:
    """The finest resolution (A) any pixel of the detector records, at the
    shortest wavelength of the beam: d = lambda / (2 sin theta) at the largest
    scattering angle over the detector's edges (a corner for a flat detector).

    ``geometry`` is ``Result.geometry`` / ``_core.Setup.geometry`` (SI units):
    pix0_m, fdet, sdet, fpixels, spixels, pixel_m, beam, lambda0_m,
    source_lambda_m, curved_det, distance_m."""
    import numpy as np
    pix0 = np.asarray(geometry["pix0_m"], dtype=np.float64)
    fdet = np.asarray(geometry["fdet"], dtype=np.float64)
    sdet = np.asarray(geometry["sdet"], dtype=np.float64)
    beam = np.asarray(geometry["beam"], dtype=np.float64)
    beam = beam / np.linalg.norm(beam)
    px = float(geometry["pixel_m"])
    nf, ns = int(geometry["fpixels"]), int(geometry["spixels"])
    lam = float(geometry["lambda0_m"])
    src = geometry.get("source_lambda_m")
    src = None if src is None else np.asarray(src)
    if src is not None and len(src):
        lam = min([lam] + [float(x) for x in np.asarray(src).ravel() if x > 0])
    # points along the four edges of the sensitive area (pix0 is its corner)
    t = np.linspace(0.0, 1.0, 65)
    F, S = nf * px, ns * px
    edges = np.concatenate([np.column_stack([t * F, np.zeros_like(t)]), np.column_stack([t * F, np.full_like(t, S)]),
                            np.column_stack([np.zeros_like(t), t * S]), np.column_stack([np.full_like(t, F), t * S])])
    pos = pix0[None, :] + edges[:, :1] * fdet[None, :] + edges[:, 1:] * sdet[None, :]
    cos2t = (pos @ beam) / np.linalg.norm(pos, axis=1)
    two_theta = float(np.max(np.arccos(np.clip(cos2t, -1.0, 1.0))))
    if int(geometry.get("curved_det", 0)):
        # a curved detector keeps every pixel at the distance: its angles are arc lengths
        dist = float(geometry.get("distance_m") or np.linalg.norm(pix0))
        half_diag = math.hypot(F, S)
        two_theta = max(two_theta, min(math.pi, half_diag / dist))
    s = 2.0 * math.sin(two_theta / 2.0)
    if s <= 0:
        return math.inf
    return lam / s * 1e10


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------

def read_structure_factors(path: "os.PathLike[str] | str", *, column: "Optional[str]" = None,
                           dmin_A: "Optional[float]" = None, k_sol: float = 0.0, b_sol: float = DEFAULT_B_SOL,
                           name: str = "hkl") -> StructureFactors:
    """Read (or compute) structure factors from a file; see :func:`structure_factors`."""
    import numpy as np
    path = os.fspath(path)
    _check_size(path, name)
    kind = sniff(_head(path))
    if kind == "cif":           # a long header: decide on the category names in the whole file
        text = open(path, "rb").read().decode("latin-1")
        kind = "sf-cif" if "_refln." in text else ("model-cif" if "_atom_site." in text else "cif")
    if kind in ("mtz", "sf-cif"):
        return _reflections(path, kind, column, name)
    if kind in ("model-cif", "pdb"):
        if dmin_A is None:
            raise ValueError(f"{name} {path}: an atomic model needs a resolution limit (dmin_A=)")
        return read_model(path, name).structure_factors(dmin_A, k_sol, b_sol)
    if kind == "cif":
        raise ValueError(f"{name} {path}: an mmCIF file with neither _refln (structure factors) "
                         "nor _atom_site (coordinates)")
    if column is not None:
        raise ValueError(f"{name} {path}: a text h k l F file has no named columns (column={column!r})")
    from . import _io
    text = _io.read_bytes(path).decode("latin-1")
    rows = _io.read_text_columns(text, 4)
    rows = rows[~np.isnan(rows).any(axis=1)]
    if rows.shape[0] == 0:
        raise ValueError(f"{name} {path}: no h k l F lines in the file")
    return StructureFactors(rows, None, None, "text", None, [f"reading {path}"])


def structure_factors(path: "os.PathLike[str] | str", *, column: "Optional[str]" = None,
                      dmin_A: "Optional[float]" = None, k_sol: float = 0.0,
                      b_sol: float = DEFAULT_B_SOL) -> "np.ndarray":
    """The (n, 4) float64 array of h k l F that ``simulate(hkl=...)`` takes, from

    * an MTZ or structure-factor mmCIF file: ``column`` names the amplitude
      (or intensity) column, default the first amplitude column, else the
      first intensity column (F = sqrt(I), negative I as 0); expanded to P1
      with Friedel mates, an anomalous F(+)/F(-) pair kept as two reflections;
    * a PDB or mmCIF model: F computed to ``dmin_A`` (A, required) with F000,
      optionally with a flat bulk solvent of ``k_sol`` (e/A^3, 0: none) and
      ``b_sol`` (A^2);
    * a text file of h k l F (as -hkl).
    """
    return read_structure_factors(path, column=column, dmin_A=dmin_A, k_sol=k_sol, b_sol=b_sol).rows


# ---------------------------------------------------------------------------
# the run's hook (api.Run): one call before the setup, one after it
# ---------------------------------------------------------------------------

def run_input(last: "Mapping[str, Any]", name: "Callable[[str], str]") -> "Optional[Any]":
    """What Run needs to read before the detector is set up, from the run's
    keyword values (``last``: keyword -> value): a :class:`StructureFactors`
    for an MTZ/mmCIF ``hkl`` file, a :class:`ModelInput` for ``pdb``, or None
    (text ``hkl``, arrays, no file).  ``name(key)`` spells a keyword in
    messages (-flag or keyword).  Its ``cell`` stands in for a missing cell."""
    pdb, hkl = last.get("pdb"), last.get("hkl")
    if pdb is not None and hkl is not None:
        raise ValueError(f"{name('pdb')} and {name('hkl')}: give one source of structure factors, not both")
    for key in ("k_sol", "b_sol"):
        if last.get(key) is not None and pdb is None:
            raise ValueError(f"{name(key)}: the bulk solvent applies to structure factors from {name('pdb')}")
    if pdb is not None:
        if last.get("hkl_column") is not None:
            raise ValueError(f"{name('hkl_column')}: names a column of an MTZ or mmCIF {name('hkl')} file, "
                             f"not of {name('pdb')}")
        return read_model(os.fspath(pdb), name("pdb"))
    column = last.get("hkl_column")
    if isinstance(hkl, (str, os.PathLike)):
        path = os.fspath(hkl)
        try:
            kind = sniff(_head(path))
        except OSError as e:
            raise type(e)(e.errno, f"cannot read {name('hkl')} file '{path}': {e.strerror or e}") from None
        if kind == "text":
            if column is not None:
                raise ValueError(f"{name('hkl_column')}: {name('hkl')} {path} is a text h k l F file, "
                                 "which has no named columns")
            return None
        if kind in ("pdb", "model-cif"):
            raise ValueError(f"{name('hkl')} {path}: an atomic model, not structure factors: "
                             f"give it to {name('pdb')}")
        return read_structure_factors(path, column=column, name=name("hkl"))
    if column is not None:
        raise ValueError(f"{name('hkl_column')}: needs an MTZ or mmCIF {name('hkl')} file")
    return None


def run_rows(inp: "Any", geometry: "Mapping[str, Any]", dmin_A: "Optional[float]",
             extras: "Mapping[str, Any]") -> StructureFactors:
    """The structure factors of :func:`run_input`'s result once the detector
    is known: a model's F are computed to ``dmin_A`` when it is set (> 0),
    else to the detector corner's resolution, widened by two reciprocal-lattice
    steps (spot shapes and interpolation reach the neighbouring h k l)."""
    if isinstance(inp, StructureFactors):
        return inp
    if dmin_A is not None and dmin_A > 0:
        limit, why = float(dmin_A), f"-dmin {float(dmin_A):g} A"
    else:
        limit = corner_resolution_A(geometry)
        why = f"detector corner {limit:.4g} A"
    d = 1.0 / (1.0 / limit + 2.0 * inp.reciprocal_step_inv_A())
    k_sol = float(extras.get("k_sol") or 0.0)
    b_sol = float(extras.get("b_sol", DEFAULT_B_SOL) if extras.get("b_sol") is not None else DEFAULT_B_SOL)
    sf = inp.structure_factors(d, k_sol, b_sol)
    sf.messages.insert(0, f"resolution limit {d:.4g} A ({why})")
    return sf
