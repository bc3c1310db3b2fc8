"""SwinBOBLib's Python dependencies in Slicer's Python, installed on first use after asking.

torch is installed through the PyTorch extension's logic (``PyTorchUtils``), which picks the build
that matches the computer's GPU driver, as other Slicer AI extensions do; the rest with
``slicer.util.pip_install``. Everything that talks to the user or the network is injected, so the
decisions are tested without Slicer and without installing anything.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Sequence

#: torch requirement handed to PyTorchUtils.
TORCH_REQUIREMENT = ">=2.3"
#: (import name, pip requirement): SwinBOBLib's dependencies (pyproject.toml) that Slicer does not
#: bundle. numpy and SimpleITK come with Slicer; torch comes through the PyTorch extension.
PIP_REQUIREMENTS = (
    ("monai", "monai>=1.4"),
    ("einops", "einops>=0.7"),  # MONAI's Swin-UNETR imports it at its first forward pass
    ("scipy", "scipy>=1.10"),
    ("nibabel", "nibabel>=5.0"),
    ("numba", "numba>=0.59"),
    ("tqdm", "tqdm>=4.60"),
    ("yaml", "pyyaml>=6.0"),
    ("matplotlib", "matplotlib>=3.7"),
)


class DependencyError(RuntimeError):
    """Dependencies are missing and were not installed; the message says what to do."""


def _pyTorchUtilsLogic():
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def _slicerPipInstall(requirements: str) -> None:
    import slicer

    slicer.util.pip_install(requirements)


class DependencyInstaller:
    """Checks for and installs what SwinBOBLib needs.

    Args:
        confirm: ``confirm(question) -> bool``; the widget passes ``slicer.util.confirmOkCancelDisplay``.
        pipInstall: ``pipInstall("pkg>=1 other>=2")`` (default ``slicer.util.pip_install``).
        torchLogicFactory: returns a ``PyTorchUtilsLogic`` or None when the PyTorch extension is absent.
        isImportable: ``name -> bool`` (default: ``importlib.util.find_spec``).
        log: progress messages.
    """

    def __init__(self, confirm: Callable[[str], bool], pipInstall: Callable[[str], None] | None = None,
                 torchLogicFactory: Callable[[], object] | None = None,
                 isImportable: Callable[[str], bool] | None = None, log: Callable[[str], None] = print):
        self.confirm = confirm
        self.pipInstall = pipInstall or _slicerPipInstall
        self.torchLogicFactory = torchLogicFactory or _pyTorchUtilsLogic
        self.isImportable = isImportable or (lambda name: importlib.util.find_spec(name) is not None)
        self.log = log

    def missingPackages(self) -> list[str]:
        """pip requirements of the packages that cannot be imported (torch not included)."""
        return [requirement for name, requirement in PIP_REQUIREMENTS if not self.isImportable(name)]

    def ready(self) -> bool:
        return self.isImportable("torch") and not self.missingPackages()

    def ensure(self) -> bool:
        """Install what is missing, after asking once. Returns True when everything is importable.

        Raises:
            DependencyError: the user declined, the PyTorch extension is missing, or torch failed to install.
        """
        missing = self.missingPackages()
        needTorch = not self.isImportable("torch")
        if not missing and not needTorch:
            return True
        torchLogic = self.torchLogicFactory() if needTorch else None
        if needTorch and torchLogic is None:
            raise DependencyError("SwinBOB needs PyTorch. Install the 'PyTorch' extension from the Extensions "
                                  "Manager, restart Slicer, and try again.")
        listed = (["torch (through the PyTorch extension)"] if needTorch else []) + missing
        if not self.confirm("SwinBOB needs these Python packages, which are not installed in Slicer yet:\n\n  "
                            + "\n  ".join(listed) + "\n\nInstall them now? This can take several minutes."):
            raise DependencyError(f"Not installed (declined): {', '.join(listed)}")
        if needTorch:
            self.installTorch(torchLogic)
        if missing:
            self.log(f"Installing {' '.join(missing)} ...")
            self.pipInstall(" ".join(missing))
        importlib.invalidate_caches()
        still = self.missingPackages() + ([] if self.isImportable("torch") else ["torch"])
        if still:
            raise DependencyError(f"Installation finished but these are still missing: {', '.join(still)}")
        self.log("SwinBOB dependencies are installed.")
        return True

    def installTorch(self, torchLogic) -> None:
        self.log("Installing PyTorch through the PyTorch extension (this can take several minutes) ...")
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise DependencyError("PyTorch could not be installed; see the PyTorch extension's module for details.")


def requirementNames(requirements: Sequence[str]) -> set[str]:
    """Project names of pip requirement strings (``"monai>=1.4"`` -> ``"monai"``), lower case."""
    import re

    return {re.split(r"[<>=!~\[; ]", r.strip(), maxsplit=1)[0].lower() for r in requirements if r.strip()}
