"""The engine carries one kernel per x86-64 level (baseline, v3 = AVX2+FMA,
v4 = AVX-512) and picks the best the CPU runs; NANOBRAGG_ISA forces one.
test_golden.py and test_threads.py run under every level found here."""
import platform
import subprocess

import pytest

import goldenlib
from nanobragg import simulate

TINY = dict(cell=(100, 100, 100, 90, 90, 90), default_F=100, N=5, wavelength=1, distance=100,
            detpixels=4, pixel=0.1)

# what GCC's __builtin_cpu_supports("x86-64-vN") asks of the CPU, in /proc/cpuinfo's names
V2_FLAGS = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
V3_FLAGS = V2_FLAGS | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
V4_FLAGS = V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def expected_levels():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["baseline"]
    flags = cpu_flags()
    levels = ["baseline"]
    if V3_FLAGS <= flags:
        levels.append("v3")
        if V4_FLAGS <= flags:
            levels.append("v4")
    return levels


@pytest.mark.skipif(platform.system() != "Linux", reason="reads the CPU's flags from /proc/cpuinfo")
def test_every_level_the_cpu_has_is_built_and_runs():
    assert goldenlib.kernel_levels() == expected_levels()


def test_default_and_auto_pick_the_best_level(monkeypatch):
    best = goldenlib.kernel_levels()[-1]
    monkeypatch.delenv("NANOBRAGG_ISA", raising=False)
    assert simulate(**TINY).stats["kernel_isa"] == best
    monkeypatch.setenv("NANOBRAGG_ISA", "auto")
    assert simulate(**TINY).stats["kernel_isa"] == best


@pytest.mark.parametrize("isa", goldenlib.kernel_levels())
def test_forcing_a_level_uses_it(isa, monkeypatch):
    monkeypatch.setenv("NANOBRAGG_ISA", isa)
    assert simulate(**TINY).stats["kernel_isa"] == isa


def test_unknown_level_is_an_error(monkeypatch):
    monkeypatch.setenv("NANOBRAGG_ISA", "avx9000")
    with pytest.raises(Exception, match="NANOBRAGG_ISA=avx9000"):
        simulate(**TINY)


def test_unknown_level_from_the_command(tmp_path):
    case = goldenlib.case_by_id("cubic_default")
    goldenlib.stage_inputs(case, tmp_path)
    env = dict(__import__("os").environ, NANOBRAGG_ISA="avx9000")
    proc = subprocess.run(goldenlib.nanobragg_command() + list(case["args"]) + ["-floatfile", "float.bin"],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "NANOBRAGG_ISA=avx9000" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr.decode()
    assert not (tmp_path / "float.bin").exists()
