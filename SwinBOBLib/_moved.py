"""The module names SwinBOBLib had before its packages (0.1), kept for one release.

``import SwinBOBLib.model`` (or ``from SwinBOBLib.etta import adapt``) still works: the old name
is a module that warns (``DeprecationWarning``) and hands out each name from the module that
holds it now. Nothing inside SwinBOBLib uses these names; docs/architecture.md has the table.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

_P = "SwinBOBLib."

#: Old module -> the modules that hold its names now, searched in this order.
MOVED = {
    "model": ("models.loading", "models.metadata", "models.networks", "models.norms", "inference.provenance"),
    "checkpoints": ("models.formats", "models.bundles", "models.loading", "inference.provenance",
                    "inference.preprocess"),
    "networks_legacy": ("models.legacy",),
    "heads": ("models.heads",),
    "etta": ("inference.etta", "models.heads", "models.norms", "inference.entropy", "inference.tta"),
    "metrics": ("evaluation.metrics",),
    "benchmark": ("evaluation.benchmark", "cli.benchmark"),
    "datasets": ("io.datasets",),
    "augment": ("training.augment", "labels.layouts"),
    "synth": ("training.synthesis",),
    "preview": ("outputs.preview",),
    "segment": ("workflows.segment", "outputs.organs", "outputs.folders", "outputs.provenance", "cli.segment"),
    "demo": ("workflows.demo", "cli.demo"),
    "progress": ("runtime.progress", "runtime.stop"),
    "resources": ("runtime.resources",),
    "solf.commands": ("cli.solf", "solf.bounds"),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names (and only those) and loads each as a forwarding module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(_P) and fullname[len(_P):] in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain module

    def exec_module(self, module) -> None:
        homes = [_P + name for name in MOVED[module.__name__[len(_P):]]]
        warnings.warn(f"{module.__name__} is deprecated and goes in the next release; its names now live in "
                      f"{', '.join(homes)} (see docs/architecture.md)", DeprecationWarning, stacklevel=2)
        targets = [importlib.import_module(home) for home in homes]

        def __getattr__(name: str):
            for target in targets:
                if hasattr(target, name):
                    return getattr(target, name)
            raise AttributeError(f"module {module.__name__!r} (deprecated) has no attribute {name!r}; "
                                 f"looked in {', '.join(homes)}")

        module.__getattr__ = __getattr__


def install() -> None:
    """Adds the finder once (re-importing SwinBOBLib does not stack finders)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
