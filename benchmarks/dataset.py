#!/usr/bin/env python3
"""Benchmark of nanobragg-dataset: a 100-frame 512x512 rotation series rendered
on a dask LocalCluster of 1 worker and of 2 workers, alternately.

    python benchmarks/dataset.py [--frames 100] [--repeat 2] [--json out.json]

Each run is the whole command path, run() of nanobragg.dataset into a fresh
folder: cluster start, rendering (each frame on one thread), NeXus files,
master.  The speed-up is median(1 worker) / median(2 workers); the per-frame
cost is also measured serially (in this process, no dask) for docs/scaling.md.
Frames are checked byte for byte between the runs.  Before and after, a
control: the same frames rendered by one plain process and by two (no dask, no
files), which says how much a second core this machine gives at the time.  A
measuring tool, not a test: it asserts no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SPEC = """
args = "-cell 78 78 38 90 90 90 -default_F 100 -N 10 -distance 100 -detpixels 512 -pixel 0.1 -phisteps 10 -oversample 2 -mosaic 0.3 -mosaic_domains 3"
frames = {frames}
seed = 1
[rotation]
phi_start = 0
osc = 0.5
"""


CONTROL = """
import sys
from nanobragg import dataset
spec = dataset.load_spec(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    dataset.render_frame(spec, i)
"""


def control(spec_text: str, n: int) -> float:
    """What this machine gives two processes right now, without dask or files:
    n frames rendered by one plain process / by two processes of n/2 each."""
    def timed(ranges):
        t = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CONTROL, spec_text, str(a), str(b)]) for a, b in ranges]
        for p in procs:
            p.wait()
        return time.perf_counter() - t
    one = timed([(0, n)])
    two = timed([(0, n // 2), (n // 2, n)])
    print(f"control (no dask, no files): {n} frames in 1 process {one:.2f} s, in 2 processes {two:.2f} s, "
          f"ratio {one / two:.2f}x", flush=True)
    return one / two


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each worker count (alternating)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    from nanobragg import dataset
    spec = dataset.load_spec(SPEC.format(frames=a.frames))
    tmp = tempfile.mkdtemp(prefix="nbds-bench-")
    times = {1: [], 2: []}
    ref = None
    try:
        # serial per-frame cost (10 frames), no dask
        t = time.perf_counter()
        s = dataset.run(spec, os.path.join(tmp, "serial"), workers=0, frames=range(10))
        per_frame = (time.perf_counter() - t) / 10
        print(f"serial: {per_frame:.3f} s per frame (render + noise + NeXus file), 1 thread", flush=True)
        ctrl = [control(SPEC.format(frames=a.frames), 40)]
        for r in range(a.repeat):
            for w in (1, 2):
                out = os.path.join(tmp, f"w{w}-{r}")
                t = time.perf_counter()
                s = dataset.run(spec, out, workers=w)
                dt = time.perf_counter() - t
                assert s.ok and len(s.rendered) == a.frames, s.line()
                frames = [open(os.path.join(out, dataset.frame_name(spec, i)), "rb").read()
                          for i in range(a.frames)]
                if ref is None:
                    ref = frames
                elif frames != ref:
                    bad = [i + 1 for i in range(a.frames) if frames[i] != ref[i]]
                    print(f"frames {bad[:10]} differ between runs", file=sys.stderr)
                    keep = os.environ.get("NBDS_KEEP")
                    if keep:
                        shutil.copytree(out, os.path.join(keep, os.path.basename(out)))
                        with open(os.path.join(keep, "ref_frame.h5"), "wb") as fh:
                            fh.write(ref[bad[0] - 1])
                    return 1
                times[w].append(dt)
                print(f"{w} worker(s): {dt:.2f} s ({a.frames / dt:.2f} frames/s)", flush=True)
                shutil.rmtree(out)
        ctrl.append(control(SPEC.format(frames=a.frames), 40))
        m1, m2 = statistics.median(times[1]), statistics.median(times[2])
        print(f"median: 1 worker {m1:.2f} s, 2 workers {m2:.2f} s, speed-up {m1 / m2:.2f}x "
              f"(load average now {os.getloadavg()[0]:.2f})")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"frames": a.frames, "per_frame_serial_s": per_frame, "times_s": times,
                       "control_ratio_before_after": ctrl,
                           "speedup": m1 / m2, "cpus": os.cpu_count()}, fh, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
