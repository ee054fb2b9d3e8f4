"""The reference's spellings: its README's and usage text's flags run as it runs them.

* an alias the reference acts on (-matrix is -mat, -adcoffset is -adc, ...)
  has the canonical flag's effect;
* a spelling its README/usage shows but it ignores (-hdiv, -detsize_x,
  -xdet_vector, ...) is consumed with a warning naming the flag to use;
* "did you mean" maps x/y to the fast/slow axes;
* a bare nanoBragg prints the reference's usage text (golden/usage_*.txt were
  written by the reference) with its exit status.
"""
import os
import subprocess
import sys

import pytest

from nanobragg import args_to_params, params as P
from nanobragg.cli import main

import goldenlib

BASE = "-cell 50 50 50 90 90 90 -default_F 10".split()

# spelling -> the canonical flag it stands for (the reference's needle is a substring of it)
ALIASES = {
    "-matrix": "-mat", "-adcoffset": "-adc", "-adc_offset": "-adc", "-mosaic_domains": "-mosaic_domains",
    "-mosaic_dom": "-mosaic_domains", "-mosaic_spr": "-mosaic", "-mosaic_spread": "-mosaic", "-mosaicity": "-mosaic",
    "-samplesize": "-xtalsize", "-sample_size": "-xtalsize", "-heigh": "-xtal_height", "-xtal_heigh": "-xtal_height",
    "-sample_heigh": "-xtal_height", "-sample_den": "-density", "-molec": "-MW", "-detector_absorb": "-detector_abs",
    "-wave": "-lambda", "-floatimage": "-floatfile", "-binary_spots": "-tophat_spots",
}


@pytest.mark.parametrize("alias, canonical", sorted(ALIASES.items()))
def test_alias_has_the_canonical_effect(alias, canonical):
    opt = P.lookup(canonical)
    assert P.lookup(alias) is opt
    value = ([] if opt.kind == "switch" else ["A.mat"] if opt.kind in ("data", "path")
             else ["300"] if opt.kind == "abs" else ["3"])
    a = P.params_to_fields(args_to_params(BASE + [alias] + value))
    c = P.params_to_fields(args_to_params(BASE + [canonical] + value))
    assert a == c


def test_aliases_are_listed_under_their_canonical_flag_in_help():
    text = P.help_text()
    line = next(l for l in text.splitlines() if l.lstrip().startswith("-mat,"))
    assert "-matrix" in line
    line = next(l for l in text.splitlines() if l.lstrip().startswith("-adc,"))
    assert "-adcoffset" in line
    for flag in P.IGNORED:
        assert flag in text


@pytest.mark.parametrize("flag, values, instead", [
    ("-hdiv", ["0"], "-hdivrange"), ("-vdiv", ["0"], "-vdivrange"),
    ("-detsize_x", ["50"], "-detsize_f"), ("-detsize_y", ["50"], "-detsize_s"),
    ("-xdet_vector", ["0", "1", "0"], "-fdet_vector"), ("-ydet_vector", ["0", "0", "1"], "-sdet_vector"),
    ("-zdet_vector", ["1", "0", "0"], "-odet_vector"),
])
def test_ignored_spelling_warns_and_changes_nothing(flag, values, instead):
    said = []
    got = args_to_params(BASE + [flag] + values + ["-N", "2"], warn=said.append)
    assert got == args_to_params(BASE + ["-N", "2"])     # values consumed, nothing set
    assert len(said) == 1 and flag in said[0] and instead in said[0] and "no effect" in said[0]
    assert P.suggest(flag) == instead


def test_ignored_spelling_still_needs_its_values():
    with pytest.raises(P.UsageError, match="-xdet_vector expects 3 numbers"):
        args_to_params(["-xdet_vector", "1", "0"], warn=lambda m: None)
    with pytest.raises(P.UsageError, match="-hdiv expects a number"):
        args_to_params(["-hdiv", "wide"], warn=lambda m: None)


def test_the_command_warns_on_stderr_once():
    p = subprocess.run([sys.executable, "-c", "from nanobragg.params import args_to_params as a; a(['-hdiv', '0'])"],
                       capture_output=True, text=True)
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("nanoBragg: warning: -hdiv has no effect")


@pytest.mark.parametrize("typo, hint", [
    ("-detpixels_z", "-detpixels_y"), ("-detsiz_x", "-detsize_f"), ("-detector_absx", "-detector_abs"),
    ("-xdet_vectr", "-fdet_vector"), ("-distnace", "-distance"),
])
def test_did_you_mean(typo, hint):
    assert P.suggest(typo) == hint
    with pytest.raises(P.UsageError, match=f"did you mean '{hint}'"):
        args_to_params([typo, "1"])


def test_substring_accidents_stay_errors():
    # the reference reads a flag that begins with a known one as that one
    # (-lambda_A as -lambda): documented in docs/differences.md
    for bad in ("-detpixel", "-lambda_A", "-distances", "-Nab"):
        with pytest.raises(P.UsageError):
            args_to_params([bad, "1"])


@pytest.mark.parametrize("dump, golden", [(False, "usage_no_arguments.txt"), (True, "usage_no_arguments_with_dump.txt")])
def test_bare_command_prints_the_reference_usage(tmp_path, dump, golden):
    if dump:
        (tmp_path / "Fdump.bin").write_bytes(b"")
    cmd = goldenlib.nanobragg_command()
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True)
    assert p.returncode == 9
    assert p.stderr == b""
    assert p.stdout == (goldenlib.GOLDEN / golden).read_bytes()


def test_bare_main_returns_the_reference_status(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 9
    assert capsys.readouterr().out.startswith(P.BANNER + "\nERROR: no hkl file and no dump file to read.usage:")
