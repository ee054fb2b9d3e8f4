"""The reference's "N% done" progress lines, and simulate(progress=...)'s adapter.

The expected text is the reference's own stdout stored with every golden case
(golden/<case>/stdout.txt, single-threaded reference runs).
"""
import random

import pytest

import goldenlib
from nanobragg import _progress

CASES = [c for c in goldenlib.load_cases() if (goldenlib.GOLDEN / c["id"] / "stdout.txt").exists()]


def _meter_text(stdout):
    # the progress lines and the interpolation warnings they interleave with
    keep = ("% done", "WARNING: out of range", "WARNING: further")
    return [l for l in stdout.splitlines() if any(k in l for k in keep)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_progress_lines_are_the_reference_text(case, tmp_path):
    # the command (one process, the job layer)
    p = goldenlib.run_case(case, tmp_path, env={"OMP_NUM_THREADS": "2"})
    want = (goldenlib.GOLDEN / case["id"] / "stdout.txt").read_text()
    assert _meter_text(p.stdout.decode()) == _meter_text(want)


@pytest.mark.parametrize("flags, lines", [([], True), (["-noprogress"], False), (["-noprogress", "-progress"], True),
                                          (["-progress", "-noprogress"], False), (["-printout_pixel", "3", "3"], False)])
def test_noprogress_progress_and_printout(tmp_path, flags, lines):
    case = {"id": "x", "args": "-cell 50 50 50 90 90 90 -default_F 10 -detpixels 20 -seed 1".split() + flags}
    p = goldenlib.run_case(case, tmp_path)
    assert ("0% done" in p.stdout.decode()) is lines


def _all_at_once(meter_args):
    out = []
    m = _progress.ReferenceMeter(*meter_args, write=out.append)
    m.finish()
    return out


@pytest.mark.parametrize("seed", range(5))
def test_text_does_not_depend_on_when_updates_come(seed):
    rng = random.Random(seed)
    F, S = rng.randint(10, 70), rng.randint(10, 70)
    roi = (rng.randint(0, 5), rng.randint(F // 2, F), rng.randint(0, 5), rng.randint(S // 2, S))
    once = _all_at_once((F, S, roi))
    out = []
    m = _progress.ReferenceMeter(F, S, roi, write=out.append)
    done = 0
    while done < F * S:
        done = min(F * S, done + rng.randint(0, 3 * F))
        m.update(done)
        m.update(rng.randint(0, done))           # a late, smaller count changes nothing
    m.finish()
    m.finish()
    assert out == once and len(once) > 0


def test_milestones_follow_the_reference_rule():
    # P = 101 * 101 (the reference counts one row and column more than the detector)
    marks = _progress.milestones(101 * 101, 100 * 100)
    P = 101 * 101
    assert marks == [p for p in range(100 * 100)
                     if p % (P // 20) == 0 or ((10 * p < P or 10 * p > 9 * P) and p % (P // 100) == 0)]
    assert _progress.milestones(99, 81) == []       # fewer than 100: no meter


def test_masked_pixels_are_not_counted():
    import numpy as np
    mask = np.ones((30, 30), dtype=np.uint16)
    mask[:, ::2] = 0
    m = _progress.ReferenceMeter(30, 30, (0, 30, 0, 30), write=lambda l: None, mask=mask)
    assert m.total == 450 and m.rendered_before(30) == 15
    no_mask = _progress.ReferenceMeter(30, 30, (2, 9, 3, 30), write=lambda l: None)
    assert no_mask.total == 8 * 27 and no_mask.rendered_before(4 * 30 + 5) == 8 + 3


def test_callback_adapter():
    assert _progress.callback(None) is None and _progress.callback(False) is None
    seen = []
    cb = _progress.callback(lambda done, total: seen.append((done, total)))
    cb(5, 10)
    cb(10, 10)
    assert seen == [(5, 10), (10, 10)]

    class Bar:                       # what the adapter needs of a tqdm bar
        def __init__(self):
            self.n, self.total = 0, None

        def update(self, k):
            self.n += k
    bar = Bar()
    cb = _progress.callback(bar)
    cb(3, 8)
    cb(3, 8)
    cb(8, 8)
    assert (bar.n, bar.total) == (8, 8)
    with pytest.raises(TypeError):
        _progress.callback(42)


def test_callback_true_is_a_tqdm_bar_or_says_what_to_install():
    try:
        import tqdm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tqdm"):
            _progress.callback(True)
        return
    cb = _progress.callback(True)
    cb(1, 2)
    cb(2, 2)
