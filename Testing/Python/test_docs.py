"""README and docs stay true to the code: the README's Python snippet runs unchanged, every
SwinBOBLib name and file they show exists at the place they show (no deprecated module names), and
every command the README lists is one ``swinbob`` has."""

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEXTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SAMPLE_MR = REPO / "Testing" / "Data" / "totalsegmentator-samples" / "example_mr_sm.nii.gz"
sys.path.insert(0, str(REPO / "SwinBOB"))  # SwinBOBModule.selftests: the tiny seeded test model


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_snippet_runs_unchanged(tmp_path, monkeypatch):
    """The README's snippet, as printed, on a copy of the real sample MR and a tiny seeded model."""
    from SwinBOBModule.selftests import make_tiny_checkpoint

    (snippet,) = _python_blocks(REPO / "README.md")
    shutil.copy(SAMPLE_MR, tmp_path / "scan.nii.gz")
    make_tiny_checkpoint(tmp_path / "swinbob.pt")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the README shows the current names
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert (tmp_path / "labels.seg.nrrd").is_file()
    result, image = namespace["result"], namespace["image"]
    assert result.labels.array.shape == image.array.shape[:3]
    assert namespace["features"] is not None


def _shown_imports():
    for path in TEXTS:
        for match in re.finditer(r"^\s*from (SwinBOBLib[\w.]*) import ([\w, ()]+)", path.read_text(encoding="utf-8"),
                                 flags=re.M):
            names = [n.strip() for n in match.group(2).strip("()").split(",") if n.strip()]
            yield path.name, match.group(1), names


def _shown_dotted_names():
    for path in TEXTS:
        for name in set(re.findall(r"(?<![\w/])SwinBOBLib(?:\.\w+)+", path.read_text(encoding="utf-8"))):
            yield path.name, name


@pytest.mark.parametrize("text, module, names", list(_shown_imports()))
def test_every_import_the_docs_show_works_without_a_deprecation(text, module, names):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), \
                f"{text}: from {module} import {name}"


@pytest.mark.parametrize("text, dotted", sorted(_shown_dotted_names()))
def test_every_dotted_name_the_docs_show_exists(text, dotted):
    import importlib

    parts = dotted.split(".")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                assert hasattr(target, attribute), f"{text}: {dotted} ({attribute} missing)"
                target = getattr(target, attribute)
            return
    pytest.fail(f"{text}: {dotted} does not import")


def test_every_library_file_the_docs_name_exists():
    missing = [f"{path.name}: {name}" for path in TEXTS
               for name in re.findall(r"SwinBOBLib/[\w/]+\.(?:py|tsv)", path.read_text(encoding="utf-8"))
               if not (REPO / name).is_file()]
    assert not missing, missing


def test_every_command_of_the_readme_is_a_swinbob_command():
    listed = set(re.findall(r"^\| `swinbob (\w+)", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.M))
    done = subprocess.run([sys.executable, "-m", "SwinBOBLib", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    commands = set(re.findall(r"^    (\w+)", done.stdout, flags=re.M))
    assert listed and listed <= commands, listed - commands
