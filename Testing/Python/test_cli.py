"""The ``swinbob`` command: help, label listing, info, convert, remap, and clear errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from SwinBOBLib import io
from SwinBOBLib.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, "-m", "SwinBOBLib", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("labels", "info", "convert", "remap", "phantom", "demo"):
        assert command in result.stdout


def test_labels_ukbob_prints_index_tab_name():
    result = run("labels", "ukbob")
    assert result.returncode == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    table = [line.split("\t") for line in
             (REPO / "SwinBOBLib" / "labels" / "data" / "schemes" / "ukbob.tsv").read_text().splitlines()[1:]]
    expected = [(i, n) for i, n in table if i != "0" and n != "unused"]
    assert [(r[0], r[1]) for r in rows] == expected and len(rows) == 71


def test_labels_lists_schemes_and_finds_names(capsys):
    assert main(["labels"]) == 0
    assert "mrsegmentator" in capsys.readouterr().out
    assert main(["labels", "ukbob", "--find", "Kidney L"]) == 0
    assert capsys.readouterr().out.startswith("3\tkidney_left")


def test_unknown_structure_is_a_clean_error(capsys):
    assert main(["labels", "ukbob", "--find", "kidnee"]) == 1
    assert "close matches: kidney" in capsys.readouterr().err.lower()


def test_info_convert_and_remap(samples, tmp_path, capsys):
    assert main(["info", str(samples / "example_mr_sm.nii.gz")]) == 0
    assert "orientation\tLPS" in capsys.readouterr().out
    out = tmp_path / "mr_ras.nrrd"
    assert main(["convert", str(samples / "example_mr_sm.nii.gz"), str(out), "--reorient", "RAS"]) == 0
    assert io.load_image(out).orientation == "RAS"
    remapped = tmp_path / "ukbob.nii.gz"
    assert main(["remap", str(samples / "example_seg_mr.nii.gz"), str(remapped), "--from", "total_mr"]) == 0
    source, target = io.load_image(samples / "example_seg_mr.nii.gz"), io.load_labelmap(remapped, "ukbob")
    assert np.array_equal(source.affine, target.affine)
    assert np.count_nonzero(target.array == 5) == np.count_nonzero(source.array == 5)


def test_bad_input_exits_1_with_the_file_named(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    result = run("info", bad)
    assert result.returncode == 1
    assert "broken.nii.gz" in result.stderr and "Traceback" not in result.stderr
