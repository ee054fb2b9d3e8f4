"""Small file helpers of the front ends: text tables, MOSFLM matrices, atomic writes."""

from __future__ import annotations

import os
import re
import uuid
from typing import Iterable, List, Sequence, Union

import numpy as np

# the reference's read_text_file(): tokens separated by any of these characters
_DELIMS = re.compile(r"[ \t,;:!\r\n\f\v]+")
# C atof(): the longest leading decimal number of a token (0 when there is none)
_ATOF = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)", re.IGNORECASE)


def c_atof(token: str) -> float:
    m = _ATOF.match(token)
    return float(m.group(0)) if m else 0.0


def read_text_columns(text: str, ncols: int) -> np.ndarray:
    """Parse a text table as the reference's read_text_file(): one row per
    non-blank line, up to ncols numbers per row split on " \\t,;:!", missing
    columns NaN.  Returns float64 (nrows, ncols)."""
    rows: List[List[float]] = []
    for line in text.splitlines():
        toks = [t for t in _DELIMS.split(line) if t]
        if not toks:
            continue
        vals = [c_atof(t) for t in toks[:ncols]]
        vals += [float("nan")] * (ncols - len(vals))
        rows.append(vals)
    return np.array(rows, dtype=np.float64).reshape(len(rows), ncols)


def parse_mat(text: str) -> np.ndarray:
    """The first 9 numbers of a MOSFLM matrix file (3 lines of a*, b*, c*
    components, times the wavelength), as a 3x3 array in file order.
    Later lines (the U matrix, the cell) are ignored, as the reference does."""
    nums: List[float] = []
    for tok in text.split():
        if len(nums) == 9:
            break
        try:
            nums.append(float(tok))
        except ValueError:
            break
    if len(nums) < 9:
        raise ValueError(f"expected 9 numbers (3 lines of 3), found {len(nums)}")
    return np.array(nums, dtype=np.float64).reshape(3, 3)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def atomic_write(path: Union[str, os.PathLike], chunks: Iterable[bytes]) -> None:
    """Write a file so that readers see either the old file or the whole new
    one: write a temporary file in the same directory, then os.replace()."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as fopen()
    except OSError as e:
        raise type(e)(e.errno, f"cannot write '{path}': {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise type(e)(e.errno, f"cannot write '{path}': {e.strerror or e}") from None
        raise


def check_writable(paths: Sequence[str]) -> None:
    """Raise OSError (one line) unless every path's directory exists and is writable."""
    seen = set()
    for p in paths:
        d = os.path.dirname(os.path.abspath(p))
        if d in seen:
            continue
        seen.add(d)
        if not os.path.isdir(d):
            raise OSError(f"cannot write '{p}': directory '{d}' does not exist")
        if not os.access(d, os.W_OK | os.X_OK):
            raise OSError(f"cannot write '{p}': directory '{d}' is not writable")
        if os.path.isdir(p):
            raise OSError(f"cannot write '{p}': it is a directory")
