"""File helpers of the job layer: bounded input reads, text tables, MOSFLM
matrices, and outputs written safely (atomically, or through to a device)."""

from __future__ import annotations

import errno
import math
import os
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - annotations only: the command does not load typing
    from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

# No NumPy: the nanoBragg command uses everything here without it.


class _Patterns:
    """The readers' regular expressions, compiled on first use: most runs of
    the nanoBragg command read no text table, and `re` costs its start-up
    several milliseconds."""

    def __getattr__(self, name: str):
        import re
        table = {
            # the reference's read_text_file(): tokens separated by any of these characters
            "DELIMS": (r"[ \t,;:!\r\n\f\v]+", 0),
            # C atof(): the longest leading decimal number of a token (0 when there is none)
            "ATOF": (r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)", re.IGNORECASE),
            # a decimal number as C's scanf("%lg") reads it (no inf/nan: a matrix must be finite)
            "SCAN_NUMBER": (r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", 0),
            "SCAN_BLANK": (r"\s*", 0),
            "STRICT_NUMBER": (r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", 0),
        }
        if name not in table:
            raise AttributeError(name)
        pattern, flags = table[name]
        compiled = re.compile(pattern, flags)
        setattr(self, name, compiled)          # later look-ups skip __getattr__
        return compiled


_RX = _Patterns()


def c_atof(token: str) -> float:
    m = _RX.ATOF.match(token)
    return float(m.group(0)) if m else 0.0


def read_text_rows(text: str, ncols: int) -> List[List[float]]:
    """A text table as the reference's read_text_file(): one row per
    non-blank line, up to ncols numbers per row split on " \\t,;:!", read as
    atof() reads them; missing columns NaN."""
    rows: List[List[float]] = []
    for line in text.splitlines():
        toks = [t for t in _RX.DELIMS.split(line) if t]
        if not toks:
            continue
        vals = [c_atof(t) for t in toks[:ncols]]
        vals += [float("nan")] * (ncols - len(vals))
        rows.append(vals)
    return rows


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _token_at(text: str, pos: int) -> str:
    tok = text[pos:].split(None, 1)[0] if text[pos:].strip() else ""
    return tok if len(tok) <= 20 else tok[:20] + "..."


def parse_mat_values(text: str) -> List[float]:
    """The first 9 numbers of a MOSFLM matrix file (3 lines of a*, b*, c*
    components, times the wavelength), in file order.

    Read as the reference's fscanf("%lg") does: any white space between
    numbers, and numbers that run into each other ("-0.01-0.02", as Fortran
    writes them) are two numbers.  Later lines (the U matrix, the cell) are
    ignored.  Raises ValueError naming the line of anything else."""
    nums: List[float] = []
    pos = 0
    while len(nums) < 9:
        pos = _RX.SCAN_BLANK.match(text, pos).end()
        if pos >= len(text):
            raise ValueError(f"expected 9 numbers (3 lines of 3), found {len(nums)}")
        m = _RX.SCAN_NUMBER.match(text, pos)
        if m is None:
            raise ValueError(f"line {_line_of(text, pos)}: '{_token_at(text, pos)}' is not a number "
                             f"(expected 9 numbers, 3 lines of 3; found {len(nums)})")
        v = float(m.group(0))
        if not math.isfinite(v):
            raise ValueError(f"line {_line_of(text, pos)}: {m.group(0)} is not a finite number")
        nums.append(v)
        pos = m.end()
    return nums


def read_number_rows(text: str, columns: Sequence[str]) -> "tuple[List[List[float]], List[int]]":
    """A table of numbers, one row per non-blank line, columns separated as
    the reference separates them (" \t,;:!"); '#' starts a comment line;
    missing columns are NaN (the defaults), further columns are ignored, as
    the reference does.  Unlike the reference (which reads a word as 0)
    every one of the named columns must be a finite number.  Returns (the
    rows, the line number of each row).  Raises ValueError naming the line
    and the column."""
    rows: List[List[float]] = []
    lines: List[int] = []
    n = len(columns)
    for lineno, line in enumerate(text.split("\n"), 1):
        toks = [t for t in _RX.DELIMS.split(line) if t]
        if not toks or toks[0].startswith("#"):
            continue
        vals = []
        for col, tok in zip(columns, toks[:n]):
            if not _RX.STRICT_NUMBER.match(tok):
                shown = tok if len(tok) <= 20 else tok[:20] + "..."
                raise ValueError(f"line {lineno}: {col} '{shown}' is not a number")
            vals.append(float(tok))
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"line {lineno}: numbers must be finite")
        vals += [float("nan")] * (n - len(vals))
        rows.append(vals)
        lines.append(lineno)
    return rows, lines


def read_source_rows(text: str) -> "tuple[List[List[float]], List[int]]":
    """A -sourcefile: one source per row of X Y Z weight lambda(m) (see read_number_rows)."""
    return read_number_rows(text, ("X", "Y", "Z", "weight", "lambda"))


def read_source_file(path: str, label: str) -> "tuple[List[List[float]], List[int]]":
    """A -sourcefile read and parsed (read_input, read_source_rows); errors
    name the flag (label), the file and the line; a file with no source is
    an error."""
    text = read_input(path, label, "sourcefile", text=True).decode("latin-1")
    try:
        rows, lines = read_source_rows(text)
    except ValueError as e:
        raise ValueError(f"{label} {path}: {e}") from None
    if not rows:
        raise ValueError(f"{label} {path}: no sources in the file")
    return rows, lines


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


# Size bounds of the inputs, by flag (bytes).  Each is far above any real
# file of its kind and keeps a wrong path (/dev/zero, a disk image) from
# filling memory; the engine's own limits (csrc/stages.h) apply after.
GIB = 1 << 30
INPUT_LIMITS = {
    "hkl": 2 * GIB,          # text h k l F: ~70 M reflections
    "dump": 9 * GIB,         # Fdump.bin: the engine's 2^30-cell grid of doubles
    "mat": 1 << 20,
    "sourcefile": 256 << 20,
    "mask": 2 * GIB,         # SMV: header + 2^28 16-bit pixels and then some
    "img": 2 * GIB,
    "stol": 256 << 20,
    "floatfile": GIB,        # a raw float32 image of the engine's largest detector (2^28 pixels)
    "header": 2 * GIB,       # noisify -header: an SMV file
}
MAX_THREADS = 1024            # threads= above this is refused (the engine caps at 4 per processor)
_CHUNK = 1 << 20


def size_text(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def read_input(path: str, label: str, key: str, text: bool = False) -> bytearray:
    """The content of an input file, bounded by INPUT_LIMITS[key].

    A regular file is read into one buffer of its size (no growth, no copy);
    anything else (a pipe, a device) in chunks until the bound.  text=True
    refuses binary data (a NUL byte) as soon as it is seen, so /dev/zero
    fails at once.  Errors name the flag (label) and the file."""
    import stat
    limit = INPUT_LIMITS[key]
    try:
        f = open(path, "rb")
    except OSError as e:
        raise type(e)(e.errno, f"cannot read {label} file '{path}': {e.strerror or e}") from None
    with f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"cannot read {label} file '{path}': it is a directory")
        too_big = f"{label} {path}: the file is larger than the {size_text(limit)} limit for {label}"
        try:
            if stat.S_ISREG(st.st_mode):
                if st.st_size > limit:
                    raise ValueError(f"{label} {path}: the file is {st.st_size} bytes, more than the "
                                     f"{size_text(limit)} limit for {label}")
                buf = bytearray(st.st_size)
                view = memoryview(buf)
                n = 0
                while n < len(buf):
                    k = f.readinto(view[n:])
                    if not k:
                        break
                    n += k
                view.release()
                if n < len(buf):          # the file shrank while we read it
                    del buf[n:]
            else:
                buf = bytearray()
                while True:
                    chunk = f.read(_CHUNK)
                    if not chunk:
                        break
                    if len(buf) + len(chunk) > limit:
                        raise ValueError(too_big)
                    buf += chunk
                    if text and b"\0" in chunk:
                        break             # refused below, without reading on
        except OSError as e:
            raise type(e)(e.errno, f"cannot read {label} file '{path}': {e.strerror or e}") from None
    if text:
        nul = buf.find(b"\0")
        if nul >= 0:
            raise ValueError(f"{label} {path}: binary data (a NUL byte at offset {nul}), not a text file")
    return buf


def _temp_name(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")


def _write_error(path: str, e: OSError) -> OSError:
    return type(e)(e.errno, f"cannot write '{path}': {e.strerror or e}")


def _write_chunks(f, chunks: Iterable) -> None:
    for chunk in chunks:
        f.write(chunk)          # bytes or any buffer (engine images): written without a copy


def is_regular_target(path: str) -> bool:
    """True when an output at path is written as a regular file (replaced
    atomically); False for what must be written through: an existing
    device, FIFO or socket (/dev/null, /dev/stdout, a named pipe)."""
    import stat
    try:
        st = os.stat(path)            # follows symlinks
    except OSError:
        return not (path.startswith("/dev/") or path.startswith("/proc/"))
    return stat.S_ISREG(st.st_mode)


def _atomic_target(path: str) -> str:
    """The file a regular output replaces: a symlink is written through to its target."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _write_temp(path: str, chunks: Iterable = (), write: Optional[Callable[[str], None]] = None) -> str:
    """Write chunks (or call write(temporary path), for writers that open
    files themselves, such as HDF5) to a new temporary file next to path;
    returns its name.  The new file keeps an existing file's mode (and
    owner, where allowed).  On any failure (or interruption) the temporary
    file is removed."""
    tmp = _temp_name(path)
    try:
        old = os.stat(path)
    except OSError:
        old = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the umask applies, as fopen()
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                os.fchmod(f.fileno(), old.st_mode & 0o7777)
                if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                    try:
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
                    except OSError:
                        pass          # not permitted: the file becomes ours, as a rewrite would
            _write_chunks(f, chunks)
        if write is not None:
            write(tmp)
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    return tmp


def _write_direct(path: str, chunks: Iterable) -> None:
    try:
        with open(path, "wb") as f:
            _write_chunks(f, chunks)
    except OSError as e:
        raise _write_error(path, e) from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: Union[str, os.PathLike], chunks: Iterable = (),
                 write: Optional[Callable[[str], None]] = None) -> None:
    """Write a file so that readers see either the old file or the whole new
    one (a temporary file in the same folder, then os.replace()); a device
    or FIFO is written through.  write(temporary path): see OutputSet.stage_with."""
    with OutputSet() as out:
        if write is None:
            out.stage(path, chunks)
        else:
            out.stage_with(path, write)
        out.commit()


class OutputSet:
    """Several output files published together.

    stage() writes each regular file to a temporary file next to its
    destination (a symlink's target); commit() renames them all into place
    once every one is complete.  Used as a context manager, an exception (or
    an interruption) before commit() removes the temporary files and leaves
    every existing file untouched.  Devices, FIFOs and /dev/stdout cannot be
    replaced: they are written through when staged, as the reference does
    (before_direct_write, e.g. flushing stdout, runs first)."""

    def __init__(self, before_direct_write: Optional[Callable[[], None]] = None) -> None:
        self._staged: List[Tuple[str, str]] = []
        self._before_direct = before_direct_write

    def stage(self, path: Union[str, os.PathLike], chunks: Iterable) -> None:
        path = os.fspath(path)
        if not is_regular_target(path):
            if self._before_direct is not None:
                self._before_direct()
            _write_direct(path, chunks)
            return
        target = _atomic_target(path)
        self._staged.append((_write_temp(target, chunks), target))

    def stage_with(self, path: Union[str, os.PathLike], write: Callable[[str], None]) -> None:
        """stage() for a writer that opens the file itself (HDF5): write(name)
        fills the temporary file called name."""
        path = os.fspath(path)
        if not is_regular_target(path):
            write(path)
            return
        target = _atomic_target(path)
        self._staged.append((_write_temp(target, write=write), target))

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


def check_distinct_outputs(outputs: "Dict[str, str]") -> "Dict[str, str]":
    """Refuse two outputs (flag -> path) naming one regular file, compared
    by real path (one would be lost; /dev/null and other devices or FIFOs
    may be named twice).  Returns real path -> flag."""
    from .params import UsageError
    seen: "Dict[str, str]" = {}
    for flag, path in outputs.items():
        if not is_regular_target(path):
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{seen[real]} and {flag} both name '{path}': one output would overwrite the other")
        seen[real] = flag
    return seen


def check_writable(paths: Sequence[str]) -> None:
    """Raise OSError (one line) unless every path can be written: its
    directory exists and takes a new file (tried, so that permissions, ACLs
    and read-only mounts all count), and the path is not a directory."""
    probed = set()
    for p in paths:
        if os.path.isdir(p):
            raise IsADirectoryError(errno.EISDIR, f"cannot write '{p}': it is a directory")
        if not is_regular_target(p):
            if not os.access(p, os.W_OK):
                raise PermissionError(errno.EACCES, f"cannot write '{p}': permission denied")
            continue
        p = _atomic_target(p)
        d = os.path.dirname(os.path.abspath(p))
        if d in probed:
            continue
        probed.add(d)
        if not os.path.isdir(d):
            raise FileNotFoundError(errno.ENOENT, f"cannot write '{p}': directory '{d}' does not exist")
        try:
            _unlink_quietly(_write_temp(os.path.join(d, "probe"), []))
        except OSError as e:
            raise type(e)(e.errno, f"cannot write '{p}': directory '{d}': {e.strerror or e}") from None


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
