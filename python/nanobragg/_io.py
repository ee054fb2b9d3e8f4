"""Small file helpers of the front ends: text tables, MOSFLM matrices, atomic writes."""

from __future__ import annotations

import errno
import math
import os
import re
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Callable, Iterable, List, Sequence, Tuple, Union

# No NumPy at import time: the nanoBragg command's lean path (cli.py ->
# nanobragg-run) uses the readers here without it.  Functions that return
# arrays import it themselves.

# the reference's read_text_file(): tokens separated by any of these characters
_DELIMS = re.compile(r"[ \t,;:!\r\n\f\v]+")
# C atof(): the longest leading decimal number of a token (0 when there is none)
_ATOF = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)", re.IGNORECASE)


def c_atof(token: str) -> float:
    m = _ATOF.match(token)
    return float(m.group(0)) if m else 0.0


def read_text_columns(text: str, ncols: int) -> "np.ndarray":
    """Parse a text table as the reference's read_text_file(): one row per
    non-blank line, up to ncols numbers per row split on " \\t,;:!", missing
    columns NaN.  Returns float64 (nrows, ncols)."""
    import numpy as np
    rows = read_text_rows(text, ncols)
    return np.array(rows, dtype=np.float64).reshape(len(rows), ncols)


def read_text_rows(text: str, ncols: int) -> List[List[float]]:
    """read_text_columns() as a list of rows (no NumPy)."""
    rows: List[List[float]] = []
    for line in text.splitlines():
        toks = [t for t in _DELIMS.split(line) if t]
        if not toks:
            continue
        vals = [c_atof(t) for t in toks[:ncols]]
        vals += [float("nan")] * (ncols - len(vals))
        rows.append(vals)
    return rows


# a decimal number as C's scanf("%lg") reads it (no inf/nan: a matrix must be finite)
_SCAN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SCAN_BLANK = re.compile(r"\s*")
_STRICT_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _token_at(text: str, pos: int) -> str:
    tok = text[pos:].split(None, 1)[0] if text[pos:].strip() else ""
    return tok if len(tok) <= 20 else tok[:20] + "..."


def parse_mat(text: str) -> "np.ndarray":
    """parse_mat_values() as a 3x3 float64 array."""
    import numpy as np
    return np.array(parse_mat_values(text), dtype=np.float64).reshape(3, 3)


def parse_mat_values(text: str) -> List[float]:
    """The first 9 numbers of a MOSFLM matrix file (3 lines of a*, b*, c*
    components, times the wavelength), as a 3x3 array in file order.

    Read as the reference's fscanf("%lg") does: any white space between
    numbers, and numbers that run into each other ("-0.01-0.02", as Fortran
    writes them) are two numbers.  Later lines (the U matrix, the cell) are
    ignored.  Raises ValueError naming the line of anything else."""
    nums: List[float] = []
    pos = 0
    while len(nums) < 9:
        pos = _SCAN_BLANK.match(text, pos).end()
        if pos >= len(text):
            raise ValueError(f"expected 9 numbers (3 lines of 3), found {len(nums)}")
        m = _SCAN_NUMBER.match(text, pos)
        if m is None:
            raise ValueError(f"line {_line_of(text, pos)}: '{_token_at(text, pos)}' is not a number "
                             f"(expected 9 numbers, 3 lines of 3; found {len(nums)})")
        v = float(m.group(0))
        if not math.isfinite(v):
            raise ValueError(f"line {_line_of(text, pos)}: {m.group(0)} is not a finite number")
        nums.append(v)
        pos = m.end()
    return nums


def read_sources(text: str) -> "tuple[np.ndarray, List[int]]":
    """read_source_rows() with the rows as a float64 (n, 5) array."""
    import numpy as np
    rows, lines = read_source_rows(text)
    return np.array(rows, dtype=np.float64).reshape(len(rows), 5), lines


def read_source_rows(text: str) -> "tuple[List[List[float]], List[int]]":
    """A -sourcefile: one source per non-blank line, up to 5 numbers
    X Y Z weight lambda(m) separated as the reference separates them
    (" \t,;:!"); missing columns are NaN (the defaults), further columns are
    ignored, as the reference does; '#' starts a comment line.  Unlike the
    reference (which reads a word as 0) every one of the 5 columns must be a
    number.  Returns (float64 (n, 5), the line number of each row).  Raises
    ValueError naming the line."""
    rows: List[List[float]] = []
    lines: List[int] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        toks = [t for t in _DELIMS.split(line) if t]
        if not toks or toks[0].startswith("#"):
            continue
        vals = []
        for col, tok in zip(("X", "Y", "Z", "weight", "lambda"), toks[:5]):
            if not _STRICT_NUMBER.match(tok):
                shown = tok if len(tok) <= 20 else tok[:20] + "..."
                raise ValueError(f"line {lineno}: {col} '{shown}' is not a number")
            vals.append(float(tok))
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"line {lineno}: numbers must be finite")
        vals += [float("nan")] * (5 - len(vals))
        rows.append(vals)
        lines.append(lineno)
    return rows, lines


def check_sources(arr: "np.ndarray", where: Callable[[int], str]) -> None:
    """check_source_rows() of an (n, 5) array."""
    check_source_rows(arr.tolist(), where)


def check_source_rows(rows: Sequence[Sequence[float]], where: Callable[[int], str]) -> None:
    """Refuse sources the engine cannot use: a wavelength that is given and
    not positive, a position given as 0 0 0.  where(i) names row i."""
    for i, row in enumerate(rows):
        lam = row[4]
        if not math.isnan(lam) and not lam > 0:
            raise ValueError(f"{where(i)}: the wavelength {lam:g} m must be positive")
    for i, row in enumerate(rows):
        if row[0] == 0 and row[1] == 0 and row[2] == 0:
            raise ValueError(f"{where(i)}: the source position 0 0 0 is at the sample: it gives no direction")


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _temp_name(path: str) -> str:
    import uuid
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")


def _write_error(path: str, e: OSError) -> OSError:
    return type(e)(e.errno, f"cannot write '{path}': {e.strerror or e}")


def _write_temp(path: str, chunks: Iterable[bytes]) -> str:
    """Write chunks to a new temporary file next to path; returns its name.
    On any failure (or interruption) the temporary file is removed."""
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as fopen()
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: Union[str, os.PathLike], chunks: Iterable[bytes]) -> None:
    """Write a file so that readers see either the old file or the whole new
    one: write a temporary file in the same directory, then os.replace()."""
    path = os.fspath(path)
    tmp = _write_temp(path, chunks)
    try:
        os.replace(tmp, path)
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


class OutputSet:
    """Several output files published together.

    stage() writes each file to a temporary file next to its destination;
    commit() renames them all into place once every one is complete.  Used
    as a context manager, an exception (or an interruption) before commit()
    removes the temporary files and leaves every existing file untouched."""

    def __init__(self) -> None:
        self._staged: List[Tuple[str, str]] = []

    def stage(self, path: Union[str, os.PathLike], chunks: Iterable[bytes]) -> None:
        path = os.fspath(path)
        self._staged.append((_write_temp(path, chunks), path))

    def commit(self) -> None:
        try:
            while self._staged:
                tmp, path = self._staged[0]
                try:
                    os.replace(tmp, path)
                except OSError as e:
                    raise _write_error(path, e) from None
                self._staged.pop(0)
        finally:
            self.discard()

    def discard(self) -> None:
        for tmp, _path in self._staged:
            _unlink_quietly(tmp)
        self._staged = []

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def check_writable(paths: Sequence[str]) -> None:
    """Raise OSError (one line) unless every path can be written: its
    directory exists and takes a new file (tried, so that permissions, ACLs
    and read-only mounts all count), and the path is not a directory."""
    probed = set()
    for p in paths:
        d = os.path.dirname(os.path.abspath(p))
        if os.path.isdir(p):
            raise IsADirectoryError(errno.EISDIR, f"cannot write '{p}': it is a directory")
        if d in probed:
            continue
        probed.add(d)
        if not os.path.isdir(d):
            raise FileNotFoundError(errno.ENOENT, f"cannot write '{p}': directory '{d}' does not exist")
        try:
            _unlink_quietly(_write_temp(os.path.join(d, "probe"), []))
        except OSError as e:
            raise type(e)(e.errno, f"cannot write '{p}': directory '{d}': {e.strerror or e}") from None


# ---------------------------------------------------------------------------
# SMV headers without NumPy or the engine (the command's lean path)
# ---------------------------------------------------------------------------

_SMV_MAGIC = b"{\nHEADER_BYTES="
_SMV_MAX_HEADER_BYTES = 1 << 20
_SMV_MAX_DIMENSION = 1000000
# C strtod()/atof(): leading white space, then the longest number (hex too)
_C_STRTOD = re.compile(
    rb"[ \t\n\v\f\r]*([+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    rb"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan))", re.IGNORECASE)


def _c_atof_bytes(text: bytes) -> float:
    m = _C_STRTOD.match(text)
    if not m:
        return 0.0
    tok = m.group(1).decode("ascii")
    if "x" in tok or "X" in tok:
        return float.fromhex(tok)
    return float(tok)


def _smv_value(text: bytes, keyword: bytes) -> float:
    """nb_smv_value() of csrc/smv.c: the number after the '=' that follows
    the last (non-overlapping) occurrence of keyword; NaN if absent, 0 when
    no '=' follows."""
    if not keyword:
        return math.nan
    after, pos = -1, 0
    while True:
        hit = text.find(keyword, pos)
        if hit < 0:
            break
        pos = after = hit + len(keyword)
    if after < 0:
        return math.nan
    eq = text.find(b"=", after)
    if eq < 0:
        return 0.0
    return _c_atof_bytes(text[eq + 1:])


def _count_value(v: float, limit: float):
    return int(v) if 1.0 <= v <= limit else None   # NaN fails both comparisons


class SmvHeader:
    """The header of an SMV file as nb_smv_parse() reads it, without its
    pixels: .width, .height, .header_bytes, .value(keyword) -> float or None."""

    def __init__(self, text: bytes, width: int, height: int, header_bytes: int):
        self.text, self.width, self.height, self.header_bytes = text, width, height, header_bytes

    def value(self, keyword: str):
        v = _smv_value(self.text, keyword.encode("latin-1"))
        return None if math.isnan(v) else v


def read_smv_header(path: str) -> SmvHeader:
    """Check an SMV file as nb_smv_parse() does (the same messages, raised as
    ValueError) reading only its header and its size.  OSError if it cannot
    be read."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not _stat_is_regular(st):
            data = f.read()                 # a pipe: its size is what it holds
            size, head = len(data), data
        else:
            size = st.st_size
            head = f.read(512)
        if len(head) < len(_SMV_MAGIC) or not head.startswith(_SMV_MAGIC):
            raise ValueError('SMV: not an SMV/ADSC image (no "{ HEADER_BYTES=" at the start)')
        probe = head[:512].split(b"\0", 1)[0]
        v = _smv_value(probe, b"HEADER_BYTES")
        nbytes = _count_value(v, _SMV_MAX_HEADER_BYTES)
        if nbytes is None or nbytes < len(_SMV_MAGIC):
            raise ValueError("SMV: invalid HEADER_BYTES (%g)" % v)
        if nbytes > size:
            raise ValueError(f"SMV: file is {size} bytes, shorter than its {nbytes}-byte header")
        if len(head) < nbytes:
            head += f.read(nbytes - len(head))
    text = head[:nbytes].split(b"\0", 1)[0]
    if text.rfind(b"BYTE_ORDER=") < 0:
        raise ValueError("SMV: header has no BYTE_ORDER")
    w, h = _smv_value(text, b"SIZE1"), _smv_value(text, b"SIZE2")
    if math.isnan(w) or 0.0 <= w < 1.0:
        w = h = _smv_value(text, b"DETECTOR_DIMENSIONS")
    width, height = _count_value(w, _SMV_MAX_DIMENSION), _count_value(h, _SMV_MAX_DIMENSION)
    if width is None or height is None:
        raise ValueError("SMV: invalid image size %g x %g (SIZE1/SIZE2)" % (w, h))
    offset = nbytes // 2 * 2
    pixels = width * height
    if (size - offset) // 2 < pixels:
        raise ValueError(f"SMV: {width} x {height} image needs {2 * pixels} data bytes, file has {size - offset}")
    return SmvHeader(text, width, height, nbytes)


def _stat_is_regular(st) -> bool:
    import stat
    return stat.S_ISREG(st.st_mode)


# the SMV header keywords that seed the detector, beam and spindle (-img, -mask)
SMV_SEED_KEYWORDS = ("PIXEL_SIZE", "DISTANCE", "CLOSE_DISTANCE", "WAVELENGTH", "BEAM_CENTER_X", "BEAM_CENTER_Y",
                      "ORGX", "ORGY", "PHI", "OSC_RANGE")


def check_smv_seed_values(smv, label: str) -> None:
    """The seeding header values must make sense: finite, and a positive
    pixel size and wavelength.  ``smv.value(kw)`` is a float or None."""
    import math
    for kw in SMV_SEED_KEYWORDS:
        v = smv.value(kw)
        if v is None:
            continue
        if not math.isfinite(v):
            raise ValueError(f"{label}: header {kw}={v:g} is not a finite number")
        if kw in ("PIXEL_SIZE", "WAVELENGTH") and not v > 0:
            raise ValueError(f"{label}: header {kw}={v:g} must be positive")
