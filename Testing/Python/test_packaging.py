"""The Slicer extension's CMake files list every file an installed extension needs, and nothing else.

A forgotten file is the classic way a Slicer extension breaks after install: it works from the source
tree and fails in the installed extension.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_CMAKE = REPO / "SwinBOB" / "CMakeLists.txt"


def _cmake_set(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\b(.*?)\)", text, re.S)
    assert match, f"SwinBOB/CMakeLists.txt has no set({variable} ...)"
    return [entry.replace("${MODULE_NAME}", "SwinBOB") for entry in match.group(1).split()]


def _tracked(folder: str, pattern: str) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob(pattern)
            if "__pycache__" not in p.parts and p.is_file()}


def test_every_library_file_is_listed_and_every_listed_file_exists():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    listed = set(_cmake_set(text, "SWINBOBLIB_FILES"))
    on_disk = _tracked("SwinBOBLib", "*.py") | _tracked("SwinBOBLib", "*.tsv") | _tracked("SwinBOBLib", "*.json")
    assert not on_disk - listed, f"not listed in SwinBOB/CMakeLists.txt: {sorted(on_disk - listed)}"
    assert not listed - on_disk, f"listed but missing: {sorted(listed - on_disk)}"


def test_every_module_script_and_resource_is_listed():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    scripts = {f"SwinBOB/{s}" for s in _cmake_set(text, "MODULE_PYTHON_SCRIPTS")}
    assert scripts == _tracked("SwinBOB", "*.py"), "SwinBOB/*.py and MODULE_PYTHON_SCRIPTS differ"
    resources = set(_cmake_set(text, "SWINBOB_SHARED_RESOURCES"))
    on_disk = {p for p in _tracked("Resources", "*") if not p.endswith(".md")}
    assert resources == on_disk, f"Resources/ and SWINBOB_SHARED_RESOURCES differ: {sorted(resources ^ on_disk)}"


def test_top_level_cmake_is_a_slicer_extension():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"set\(EXTENSION_DEPENDS\s+\"?PyTorch\"?\)", text)
    assert "add_subdirectory(SwinBOB)" in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    assert "slicerMacroBuildScriptedModule" in MODULE_CMAKE.read_text(encoding="utf-8")


def test_module_file_has_the_scripted_module_classes():
    tree = ast.parse((REPO / "SwinBOB" / "SwinBOB.py").read_text(encoding="utf-8"))
    classes = {node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
               for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes["SwinBOB"] == ["ScriptedLoadableModule"]
    assert classes["SwinBOBWidget"] == ["ScriptedLoadableModuleWidget"]
    assert classes["SwinBOBLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["SwinBOBTest"] == ["ScriptedLoadableModuleTest"]
    compile((REPO / "SwinBOB" / "SwinBOB.py").read_text(encoding="utf-8"), "SwinBOB.py", "exec")


def test_library_never_imports_slicer_qt_or_vtk():
    forbidden = {"slicer", "qt", "ctk", "vtk", "PySide6", "PyQt5"}
    for path in (REPO / "SwinBOBLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.relative_to(REPO)} imports {name}"


def test_library_imports_without_slicer_installed():
    code = ("import sys; sys.modules.update({m: None for m in ('slicer', 'qt', 'vtk', 'ctk')}); "
            "import SwinBOBLib, SwinBOBLib.labels, SwinBOBLib.io, SwinBOBLib.cli; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_colour_table_loads_into_a_real_slicer_color_node(repo_root):
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLColorTableNode()
    scene.AddNode(node)
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(repo_root / "Resources" / "ColorTables" / "SwinBOB_UKBOB.ctbl"))
    assert storage.ReadData(node) == 1
    from SwinBOBLib import labels

    scheme = labels.get_scheme("ukbob")
    assert node.GetNumberOfColors() == 73
    for index in (1, 3, 5, 72):
        rgba = [0.0] * 4
        node.GetColor(index, rgba)
        assert [round(c * 255) for c in rgba[:3]] == list(scheme[index].color)
        assert node.GetColorName(index).replace(" ", "_") == scheme[index].name
