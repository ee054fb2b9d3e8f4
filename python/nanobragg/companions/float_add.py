"""The float_add command: add two raw float images with scale factors and
offsets, and print statistics of the result, as the reference float_add.c.

    float_add file1.bin file2.bin [output.bin] -scale1 1 -scale2 -1 -offset 40

Arguments longer than 4 characters ending in .bin or .map are files: the
first is input 1, the second input 2, any later one the output (default
output.bin; -outfile names it too).  The arithmetic and the statistics are
nb_float_add() of csrc/float_stats.c.
"""

from __future__ import annotations

import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _command as C
from ..params import UsageError

PROG = "float_add"

F, P, S = "float", "path", "switch"
FLAGS = C.table([
    ("-scale1", F, 1, "", "scale factor of the first file (default 1)", "scale1"),
    ("-scale2", F, 1, "", "scale factor of the second file (default 1)", "scale2"),
    ("-outscale", F, 1, "", "scale factor of the output (default 1)", "outscale"),
    ("-offset", F, 1, "", "subtracted from both files before scaling; also sets -outoffset", "offset"),
    ("-outoffset", F, 1, "", "added to the output after scaling", "outoffset"),
    ("-header", F, 1, "bytes", "header size: the first file's header is copied to the output", "header"),
    ("-ignore", F, 1, "", "a value marking bad pixels (kept in the output, left out of the statistics); repeatable", "ignore"),
    ("-normalize", S, 0, "", "output the relative difference instead of the sum", "normalize"),
    ("-histogram", S, 0, "", "print a histogram of the output values", "histogram"),
    (("-bin", "-binsize"), F, 1, "", "histogram bin size (default 1; <= 0: rmsd/3)", "binsize"),
    ("-reject", S, 0, "", "reject outliers from the printed statistics", "reject"),
    ("-epsilon", F, 1, "", "accepted (unused, as in the reference)", "epsilon"),
    (("-outfile", "-output"), P, 1, "", "output file (default output.bin)", "outfile"),
])


def _is_file_arg(arg: str) -> bool:
    return len(arg) > 4 and (arg.endswith(".bin") or arg.endswith(".map"))


def settings_from_args(argv: Sequence[str]) -> Tuple[Dict[str, Any], List[Tuple[str, str]]]:
    """(settings, [(file, role)]) from the command line, roles input1,
    input2, output in order of appearance."""
    files: List[Tuple[str, str]] = []

    def positional(arg: str, out) -> bool:
        if not _is_file_arg(arg):
            return False
        role = "input1" if len(files) == 0 else "input2" if len(files) == 1 else "output"
        files.append((arg, role))
        out.append(("file", (arg, role)))
        return True

    s: Dict[str, Any] = {"ignore": []}
    for key, v in C.parse(argv, FLAGS, positional):
        if key == "file":
            if v[1] == "output":
                s.pop("outfile", None)
                s["outfile"] = v[0]
            continue
        if key == "ignore":
            s["ignore"].append(C.float32(v))
            continue
        if key == "offset":
            s.pop("outoffset", None)
            s["outoffset"] = v
        s.pop(key, None)
        s[key] = v
    return s, files


def _run(argv: List[str]) -> int:
    from .. import _core, _io
    s, files = settings_from_args(argv)
    inputs = [f for f, role in files if role in ("input1", "input2")]
    if not inputs:
        raise UsageError("no input: give file1.bin [file2.bin] [output.bin] (names ending in .bin or .map)")
    outname = s.get("outfile", "output.bin")
    C.check_distinct({"output": outname})
    header = s.get("header", 0.0)
    if not 0 <= header < 2**31:
        raise UsageError(f"-header expects a size in bytes, got {header:g}")
    header = int(header)
    for name, role in files:
        C.say(f"filename: {name}  {role}")
    _io.check_writable([outname])
    a = C.read_file(inputs[0], "input1", "floatfile")
    if header > len(a):
        raise ValueError(f"-header {header} is larger than '{inputs[0]}' ({len(a)} bytes)")
    b = C.read_file(inputs[1], "input2", "floatfile")[:len(a)] if len(inputs) > 1 else None
    offset = C.float32(s.get("offset", 0.0))
    outoffset = C.float32(s.get("outoffset", 0.0))
    C.say("header = %d bytes pixel zero offset = %g (%g in output)" % (header, offset, outoffset))
    for v in s["ignore"]:
        C.say("ignoring value %g in both files" % v)
    p = {"scale1": s.get("scale1", 1.0), "scale2": s.get("scale2", 1.0), "outscale": s.get("outscale", 1.0),
         "offset": offset, "outoffset": outoffset, "normalize": bool(s.get("normalize")),
         "histogram": bool(s.get("histogram")), "reject": bool(s.get("reject")),
         "binsize": s.get("binsize", 1.0), "ignore": s["ignore"], "header": header}
    r = _core.float_add(a, b, p)
    del a, b
    C.say("xy lsq scale= %g offset= %g" % (r["xy_scale"], r["xy_offset"]))
    C.say("yx lsq scale= %g offset= %g" % (r["yx_scale"], r["yx_offset"]))
    if p["histogram"] and r["histogram"] is None:
        # on stderr, as the reference's perror: stdout stays the reference's
        C.flush()
        sys.stderr.write("float_add: warning: no histogram: %g-wide bins from %g to %g cannot be counted\n"
                         % (r["hist_binsize"], r["min"], r["max"]))
    elif p["histogram"]:
        if r["hist_dropped"]:
            C.say("WARNING: %d values beyond the last of 100000 histogram bins are not counted" % r["hist_dropped"])
        C.say("histogram:")
        for x, count in r["histogram"]:
            C.say("%g %d" % (x + r["min"], count))
    pixels, valid = r["pixels"], r["valid"]
    line = ""
    if s["ignore"] or p["reject"]:
        line += "%d invalid of " % (pixels - valid)
    line += "%d pixels " % pixels
    if s["ignore"] or p["reject"]:
        line += "( %d left)" % valid
    C.say(line)
    C.say("%d overflows, %d underflows" % (r["overflows"], r["underflows"]))
    C.say("max = %g min = %g" % (r["max"], r["min"]))
    C.say("mean = %g rms = %g rmsd = %g skewness = %g kurtosis = %g"
          % (r["mean"], r["rms"], r["rmsd"], r["skewness"], r["kurtosis"]))
    if p["reject"]:
        C.say("median = %g mad = %g" % (r["median"], r["mad"]))
        C.say("%d pixels rejected after median-mad filter, new max= %g min= %g"
              % (valid - r["n_median"], r["median_max"], r["median_min"]))
        C.say("%d pixels rejected after mean-rmsd filter, new max= %g min= %g"
              % (valid - r["n_mean"], r["rej_max"], r["rej_min"]))
        C.say("after outlier rejection: mean= %g rms= %g rmsd= %g skewness= %g kurtosis= %g ( %d points)"
              % (r["rej_mean"], r["rej_rms"], r["rej_rmsd"], r["rej_skewness"], r["rej_kurtosis"], r["n_mean"]))
    C.say("CC = %.12g" % r["CC"])
    C.say("writing %s as a %d-byte header with %d 4-byte floats" % (outname, header, pixels))
    _io.atomic_write(outname, [r["output"]])
    return 0


def help_text() -> str:
    return C.help_text(PROG, "Add two raw float images (file1.bin file2.bin [output.bin]) and print statistics.",
                       FLAGS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return C.run_command(PROG, _run, argv, help_text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
