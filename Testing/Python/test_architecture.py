"""The library's layout (docs/architecture.md): packages in layers that import only downward, no
import cycle between modules (imports inside functions counted), nothing of Slicer, Qt or VTK, and
the module names of 0.1 still working for one release with a DeprecationWarning."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "SwinBOBLib"
ROOT = "SwinBOBLib"

#: The layers, lowest first: a package imports packages of lower layers only (docs/architecture.md).
LAYERS = (
    ("runtime", "labels"),
    ("io",),
    ("models", "solf", "phantom"),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("outputs",),
    ("workflows",),
    ("cli",),
)
#: Top-level modules of the package itself (not layers): the version, the old names, ``python -m``.
TOP_MODULES = {"_moved": set(), "__main__": {"cli"}}
#: Top-level names no SwinBOBLib module may import (the Slicer side and its GUI/rendering stacks).
FORBIDDEN = ("slicer", "slicer_core", "qt", "ctk", "vtk", "vtkmodules", "mrml", "PySide2", "PySide6", "PyQt5",
             "PyQt6", "trame", "trame_slicer")


def _modules() -> dict:
    """``{dotted name: path}`` of every module of the library (packages by their ``__init__``)."""
    found = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path):
    """Every import of a module, at any depth: ``(imported module or name, line, inside a function)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in nested
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno, id(node) in nested


def _graph() -> dict:
    return {name: {target for target, _, _ in _imports(name, path) if target in MODULES and target != name}
            for name, path in MODULES.items()}


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_layers_cover_every_package():
    packages = {_package(m) for m in MODULES} - {""}
    layered = {p for layer in LAYERS for p in layer}
    assert packages - set(TOP_MODULES) == layered, "a package without a layer (add it to docs/architecture.md)"


def test_no_import_cycle_between_modules():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_packages_import_only_lower_layers():
    rank = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    wrong = []
    for module, targets in _graph().items():
        source = _package(module)
        if not source:  # the package root: its own test below
            continue
        for target in targets:
            destination = _package(target)
            if not destination or destination == source:  # SwinBOBLib itself (__version__), or within a package
                continue
            if source in TOP_MODULES:
                ok = destination in TOP_MODULES[source]
            else:
                ok = destination in rank and rank[destination] < rank[source]
            if not ok:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that go sideways or up a layer:\n" + "\n".join(sorted(wrong))


def test_the_package_root_imports_only_the_old_names():
    assert _graph()[ROOT] == {f"{ROOT}._moved"}


def test_no_library_import_hides_inside_a_function():
    """Imports of SwinBOBLib's own modules sit at the top of the module: a function-local one is how
    a cycle hides. (Lazy imports of optional heavy dependencies are not SwinBOBLib's own.)"""
    hidden = [f"{path.relative_to(REPO)}:{line}: {target}" for name, path in MODULES.items()
              for target, line, inside in _imports(name, path) if inside and target.split(".")[0] == ROOT]
    assert not hidden, "\n".join(hidden)


def test_no_module_imports_slicer_qt_or_vtk():
    found = [f"{path.relative_to(REPO)}:{line}: {target}" for name, path in MODULES.items()
             for target, line, _ in _imports(name, path)
             if target.split(".")[0] in FORBIDDEN or target.split(".")[0].lower().startswith(("vtk", "qt", "ctk"))]
    assert not found, "\n".join(found)


def test_importing_every_module_loads_no_slicer_qt_or_vtk():
    """The same at run time, with every module imported in a fresh interpreter (dynamic imports too)."""
    code = ("import importlib, pkgutil, sys, SwinBOBLib\n"
            "for m in pkgutil.walk_packages(SwinBOBLib.__path__, 'SwinBOBLib.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
            "print(bad)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("old, name, home", [
    ("SwinBOBLib.model", "load_checkpoint", "SwinBOBLib.models.loading"),
    ("SwinBOBLib.model", "describe_checkpoint", "SwinBOBLib.inference.provenance"),
    ("SwinBOBLib.etta", "adapt", "SwinBOBLib.inference.etta"),
    ("SwinBOBLib.etta", "entropy_map", "SwinBOBLib.models.heads"),
    ("SwinBOBLib.etta", "flip_tta", "SwinBOBLib.inference.tta"),
    ("SwinBOBLib.metrics", "per_class_metrics", "SwinBOBLib.evaluation.metrics"),
    ("SwinBOBLib.checkpoints", "preprocessing_record", "SwinBOBLib.inference.provenance"),
    ("SwinBOBLib.segment", "organ_rows", "SwinBOBLib.outputs.organs"),
    ("SwinBOBLib.progress", "StopFlag", "SwinBOBLib.runtime.stop"),
    ("SwinBOBLib.augment", "lateral_swap_table", "SwinBOBLib.labels.layouts"),
    ("SwinBOBLib.solf.commands", "EXIT_FLAGGED", "SwinBOBLib.cli.solf"),
])
def test_old_module_names_still_work_with_a_deprecation_warning(old, name, home):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=home.rsplit(".", 1)[0].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError, match="deprecated"):
        getattr(module, "no_such_name")


def test_the_public_names_of_the_issue_work_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from SwinBOBLib import io, labels
        from SwinBOBLib.evaluation.metrics import per_class_metrics
        from SwinBOBLib.inference import InferenceConfig, segment_image
        from SwinBOBLib.inference.etta import adapt
        from SwinBOBLib.models import load_checkpoint

    assert callable(io.load_image) and callable(labels.get_scheme) and InferenceConfig().etta is False
    assert all(callable(f) for f in (per_class_metrics, segment_image, adapt, load_checkpoint))


#: Longest function or method, in lines with its docstring (the guideline is "most fit on a screen").
MAX_FUNCTION_LINES = 60


def test_functions_stay_short():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "split these along their seams:\n" + "\n".join(long)
