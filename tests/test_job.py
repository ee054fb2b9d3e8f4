"""The job layer's promises: prompt cancel, safe writes, bounded reads.

* SIGINT, SIGTERM and SIGHUP stop a render within the engine's poll
  interval, in the command (exit 130, 143, 129) and in simulate()
  (KeyboardInterrupt, or whatever a handler raises); nothing is written and
  no temporary file is left.
* Outputs: a regular file is replaced atomically and keeps its mode; a
  symlink is written through to its target; a FIFO, a device or
  /dev/stdout is written directly.
* Inputs: bounded in size, /dev/zero refused at once; an input named as an
  output is refused before anything is written.
* Images no detector could record (NaN, infinite, negative) are refused.
"""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nanobragg._core", reason="the compiled engine is not built")

from nanobragg import simulate  # noqa: E402

CLI = [sys.executable, "-m", "nanobragg"]
BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "2", "-detpixels", "16",
        "-seed", "1"]
BASE_KW = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=2, detpixels=16, seed=1)
# about 5e9 pixel-steps: tens of seconds on one thread, so a prompt stop is no accident
LONG = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "1024",
        "-oversample", "10", "-mosaic", "1", "-mosaic_domains", "50", "-threads", "1", "-seed", "1"]
LONG_KW = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5, detpixels=1024, oversample=10, mosaic=1,
               mosaic_domains=50, threads=1, seed=1)
PROMPT_S = 1.0      # the engine polls every 20 ms; the slack is for a loaded machine
OUTPUT_NAMES = ("floatimage.bin", "intimage.img", "noiseimage.img", "image.pgm")


def leftovers(d: Path):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------- signals --

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_command_stops_promptly_on_signal(sig, code, tmp_path):
    for name in OUTPUT_NAMES:
        (tmp_path / name).write_bytes(b"old")
    p = subprocess.Popen(CLI + LONG, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline(), p.stderr.read()      # the log is flushed just before the render
        time.sleep(0.3)
        assert p.poll() is None, "the render ended before the signal"
        t0 = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert elapsed < PROMPT_S, f"stopped {elapsed:.2f} s after {sig.name}"
    assert err.count("\n") == 1 and "nothing written" in err, err
    for name in OUTPUT_NAMES:
        assert (tmp_path / name).read_bytes() == b"old", name
    assert not leftovers(tmp_path)


_SIMULATE_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    from nanobragg import simulate
    kw = {kw!r}
    class Custom(Exception):
        pass
    def custom(signum, frame):
        raise Custom()
    if {install!r}:
        signal.signal(signal.{sig}, custom)
    sent = []
    def fire():
        time.sleep(0.5)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.{sig})
    threading.Thread(target=fire, daemon=True).start()
    try:
        simulate(**kw)
        print("finished")
    except BaseException as e:
        print(type(e).__name__, "%.3f" % (time.monotonic() - sent[0]))
""")


@pytest.mark.parametrize("sig, install, expected", [
    ("SIGINT", False, "KeyboardInterrupt"),      # Python's own handler
    ("SIGTERM", True, "Custom"),                 # a handler of the caller's raises: that propagates
])
def test_simulate_stops_promptly_on_signal(sig, install, expected):
    script = _SIMULATE_SCRIPT.format(kw=LONG_KW, sig=sig, install=install)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    name, elapsed = p.stdout.split()
    assert name == expected
    assert float(elapsed) < PROMPT_S, f"simulate() stopped {elapsed} s after {sig}"


def test_progress_callback_reports_and_can_stop():
    seen = []

    def progress(done, total):
        seen.append((done, total))

    r = simulate(progress=progress, **dict(BASE_KW, detpixels=64))
    assert seen[-1] == (64 * 64, 64 * 64)
    assert all(0 <= d <= t for d, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert r.float_image.shape == (64, 64)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop()

    t0 = time.monotonic()
    with pytest.raises(Stop):
        simulate(progress=stop, **LONG_KW)
    assert time.monotonic() - t0 < 5 * PROMPT_S


# ------------------------------------------------------------------ writes --

def _reference_float(tmp_path: Path) -> bytes:
    d = tmp_path / "plain"
    d.mkdir()
    subprocess.run(CLI + BASE, cwd=d, check=True, capture_output=True)
    return (d / "floatimage.bin").read_bytes()


def test_symlink_is_written_through(tmp_path):
    expected = _reference_float(tmp_path)
    target = tmp_path / "data" / "real.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to(target)
    subprocess.run(CLI + BASE + ["-floatfile", "link.bin"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "link.bin").is_symlink()
    assert target.read_bytes() == expected
    assert not leftovers(tmp_path) and not leftovers(target.parent)


def test_existing_file_keeps_its_mode(tmp_path):
    (tmp_path / "intimage.img").write_bytes(b"old")
    os.chmod(tmp_path / "intimage.img", 0o640)
    subprocess.run(CLI + BASE, cwd=tmp_path, check=True, capture_output=True)
    assert stat.S_IMODE((tmp_path / "intimage.img").stat().st_mode) == 0o640
    assert (tmp_path / "intimage.img").stat().st_size > 512


def test_fifo_is_written_directly(tmp_path):
    expected = _reference_float(tmp_path)
    fifo = tmp_path / "float.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    p = subprocess.run(CLI + BASE + ["-floatfile", str(fifo)], cwd=tmp_path, capture_output=True, timeout=60)
    reader.join(timeout=30)
    assert p.returncode == 0, p.stderr
    assert got == [expected]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert not leftovers(tmp_path)


def test_dev_stdout_takes_the_image(tmp_path):
    """-floatfile /dev/stdout | ...: the floats go down the pipe, after the messages written so far."""
    expected = _reference_float(tmp_path)
    p = subprocess.run(CLI + BASE + ["-floatfile", "/dev/stdout", "-intfile", "/dev/null", "-noisefile", "/dev/null"],
                       cwd=tmp_path, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert expected in p.stdout
    assert p.stdout.index(expected) > p.stdout.index(b"writing /dev/stdout")
    assert not (tmp_path / "floatimage.bin").exists()
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ------------------------------------------------------------------- reads --

def test_dev_zero_is_refused_at_once(tmp_path):
    t0 = time.monotonic()
    p = subprocess.run(CLI + BASE + ["-hkl", "/dev/zero"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 2.0
    assert p.returncode == 1
    assert "-hkl /dev/zero: binary data" in p.stderr
    assert not list(tmp_path.iterdir())


def test_oversized_input_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.hkl"
    with open(big, "wb") as f:
        f.truncate(3 << 30)          # sparse: no disk, no memory, but over the 2 GiB bound
    t0 = time.monotonic()
    p = subprocess.run(CLI + BASE + ["-hkl", "big.hkl"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 2.0
    assert p.returncode == 1
    assert "more than the 2 GiB limit for -hkl" in p.stderr
    with pytest.raises(ValueError, match="more than the 2 GiB limit for hkl"):
        simulate(**dict(BASE_KW, hkl=str(big)))


@pytest.mark.parametrize("args, fragment", [
    (["-hkl", "x.hkl", "-dump", "x.hkl"], "-hkl x.hkl is also the -dump output"),
    (["-mask", "m.img", "-intfile", "m.img"], "-mask m.img is also the -intfile output"),
    (["-img", "m.img", "-noisefile", "./sub/../m.img"], "-img m.img is also the -noisefile output"),
])
def test_input_named_as_output_is_refused(args, fragment, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.hkl").write_text("1 2 3 40\n")
    (tmp_path / "m.img").write_bytes(Path(__file__).resolve().parent.parent.joinpath("golden", "inputs",
                                                                                      "mask.img").read_bytes())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    p = subprocess.run(CLI + BASE + args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert fragment in p.stderr
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before


# ------------------------------------------------------- impossible images --

@pytest.mark.parametrize("args, kw, fragment", [
    (["-pixel", "1e-300"], {"pixel": 1e-300}, "NaN or infinite pixels (likely cause: -pixel 1e-300)"),
    (["-mosaic", "1e300"], {"mosaic": 1e300}, "NaN or infinite pixels (likely cause: -mosaic 1e+300)"),
    (["-flux", "1e300"], {"flux": 1e300}, "NaN or infinite pixels (likely cause: -flux 1e+300)"),
    (["-twotheta", "180"], {"twotheta": 180}, "negative pixels"),
])
def test_impossible_images_are_refused(args, kw, fragment, tmp_path):
    p = subprocess.run(CLI + BASE + args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert fragment in p.stderr and p.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="pixels"):
        simulate(**dict(BASE_KW, **kw))


# ----------------------------------------------------------------- threads --

def test_thread_requests_are_bounded(tmp_path):
    with pytest.raises(ValueError, match="threads: 5000 is more than 1024"):
        simulate(threads=5000, **BASE_KW)
    env = dict(os.environ, OMP_NUM_THREADS="5000", NANOBRAGG_EXACT_THREADS="1")
    p = subprocess.run(CLI + BASE, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    a = simulate(threads=64, **BASE_KW).float_image
    assert np.array_equal(a, simulate(threads=1, **BASE_KW).float_image)


def test_command_does_not_import_numpy():
    code = ("import sys; from nanobragg import cli; rc = cli.main(sys.argv[1:]); "
            "assert 'numpy' not in sys.modules, 'numpy was imported'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code] + BASE + ["-floatfile", "/dev/null", "-intfile", "/dev/null",
                                                              "-noisefile", "/dev/null", "-pgmfile", "/dev/null"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_progress_lines_come_while_the_image_renders(tmp_path):
    """The "% done" lines are printed (and flushed) as the render advances,
    not all at the end."""
    p = subprocess.Popen(CLI + LONG, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stdout:
            if line.endswith("% done\n"):
                seen.append(line)
                if len(seen) == 2:
                    break
        assert len(seen) == 2 and p.poll() is None, "no progress line before the render ended"
    finally:
        p.kill()
        p.communicate()
