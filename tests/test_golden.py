"""Golden-image regression tests: one test per case of golden/cases.json.

Each case runs the installed `nanoBragg` command in a fresh folder holding
copies of its inputs and compares every output with what the reference
nanoBragg.c wrote, under the rules of golden/README.md.
"""
import pytest

import goldenlib

CASES = goldenlib.load_cases()


@pytest.mark.parametrize("isa", goldenlib.kernel_levels())
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden(case, isa, tmp_path):
    """Every case under every kernel level the CPU runs (NANOBRAGG_ISA)."""
    goldenlib.run_case(case, tmp_path, env={"NANOBRAGG_ISA": isa})
    problems = goldenlib.compare_case(case, tmp_path)
    assert not problems, f"{case['id']} [{isa}] ({case['covers']}):\n  " + "\n  ".join(problems)


def test_cases_are_complete():
    """Every case names its inputs and outputs that exist in golden/."""
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for c in CASES:
        for name in c.get("inputs", []):
            p = goldenlib.INPUTS / name
            assert p.exists() or p.with_name(name + ".gz").exists(), f"{c['id']}: input {name} missing"
        for name in goldenlib.OUTPUTS + c.get("keep", []):
            d = goldenlib.GOLDEN / c["id"]
            assert (d / (name + ".gz")).exists() or (d / name).exists(), f"{c['id']}: golden {name} missing"
