"""SwinBOBLib's Python dependencies in Slicer's Python, installed on first use after asking.

torch is installed through the PyTorch extension's logic (``PyTorchUtils``), which picks the build
that matches the computer's GPU driver, as other Slicer AI extensions do; the rest with
``slicer.util.pip_install``. Everything that talks to the user or the network is injected, so the
decisions are tested without Slicer and without installing anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

#: torch requirement handed to PyTorchUtils.
TORCH_REQUIREMENT = ">=2.3"
#: (import name, pip requirement): SwinBOBLib's dependencies (pyproject.toml) that Slicer does not
#: bundle. numpy and SimpleITK come with Slicer; torch comes through the PyTorch extension.
PIP_REQUIREMENTS = (
    ("monai", "monai>=1.4"),
    ("einops", "einops>=0.7"),  # MONAI's Swin-UNETR imports it at its first forward pass
    ("scipy", "scipy>=1.10"),
    ("cc3d", "connected-components-3d>=3.12"),  # the SOLF label checks' connected pieces
    ("nibabel", "nibabel>=5.0"),
    ("isal", "isal>=1.6"),  # python-isal: the .nii.gz outputs' gzip
    ("numba", "numba>=0.59"),
    ("tqdm", "tqdm>=4.60"),
    ("yaml", "pyyaml>=6.0"),
    ("matplotlib", "matplotlib>=3.7"),
    ("PIL", "pillow>=10.1"),  # preview.png (older Pillow: its small bitmap font)
    ("psutil", "psutil>=5.9"),  # Cancel / Stop end the job's whole process tree
)
#: Oldest torch the library works with, as (major, minor); older ones are offered an upgrade.
TORCH_MINIMUM = (2, 3)
#: Oldest Slicer the module runs in: vtkSegment.SetTerminology / vtkMRMLColorNode.SetTerminology
#: appeared in 5.10, and 5.8 ships Python 3.9 while SwinBOBLib needs 3.10.
MINIMUM_SLICER = (5, 10)


def slicerVersionProblem(major: int, minor: int) -> str | None:
    """The message for a Slicer older than :data:`MINIMUM_SLICER`, or None when it is new enough."""
    if (int(major), int(minor)) >= MINIMUM_SLICER:
        return None
    return (f"SwinBOB needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer; this is Slicer "
            f"{major}.{minor}. Install a current Slicer from download.slicer.org.")


class DependencyError(RuntimeError):
    """Dependencies are missing and were not installed; the message says what to do."""


def _pyTorchUtilsLogic():
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def installedTorchVersion() -> str | None:
    """The installed torch's version string (``"2.1.0+cu118"``), or None; read without importing it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def versionTuple(version: str) -> tuple[int, ...]:
    """``"2.1.0+cu118"`` -> ``(2, 1, 0)``: the leading numeric release parts."""
    numbers = []
    for part in re.split(r"[.+]", version):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _slicerPipInstall(arguments: list[str]) -> None:
    import slicer

    # A list, not a string: each item is one pip argument, so a constraints file in a folder whose
    # path holds spaces stays one argument (slicer.util.pip_install quotes list items).
    slicer.util.pip_install(arguments)


def _torchLoaded() -> bool:
    """Whether this process has imported torch (its libraries are then loaded and, on Windows,
    locked: pip cannot replace them until Slicer restarts)."""
    return "torch" in sys.modules


class DependencyInstaller:
    """Checks for and installs what SwinBOBLib needs.

    Args:
        confirm: ``confirm(question) -> bool``; the widget passes ``slicer.util.confirmOkCancelDisplay``.
        pipInstall: ``pipInstall(["pkg>=1", "other>=2", "-c", "constraints.txt"])`` (default
            ``slicer.util.pip_install``, which takes pip's arguments as a list).
        torchLogicFactory: returns a ``PyTorchUtilsLogic`` or None when the PyTorch extension is absent.
        isImportable: ``name -> bool`` (default: ``importlib.util.find_spec``).
        log: progress messages.
        torchVersion: ``() -> version string or None`` of the installed torch (default: its metadata).
        torchLoaded: ``() -> bool``, whether torch is imported in this process (default: ``sys.modules``).
    """

    def __init__(self, confirm: Callable[[str], bool], pipInstall: Callable[[list], None] | None = None,
                 torchLogicFactory: Callable[[], object] | None = None,
                 isImportable: Callable[[str], bool] | None = None, log: Callable[[str], None] = print,
                 torchVersion: Callable[[], str | None] | None = None,
                 torchLoaded: Callable[[], bool] | None = None):
        self.confirm = confirm
        self.pipInstall = pipInstall or _slicerPipInstall
        self.torchLogicFactory = torchLogicFactory or _pyTorchUtilsLogic
        self.isImportable = isImportable or (lambda name: importlib.util.find_spec(name) is not None)
        self.log = log
        self.torchVersion = torchVersion or installedTorchVersion
        self.torchLoaded = torchLoaded or _torchLoaded

    def torchTooOld(self) -> str | None:
        """The installed torch's version when it is older than :data:`TORCH_MINIMUM`, else None.
        Read from the package's metadata: nothing is imported."""
        if not self.isImportable("torch"):
            return None
        version = self.torchVersion()
        return version if version and versionTuple(version)[:2] < TORCH_MINIMUM else None

    def torchUsable(self) -> bool:
        """Whether torch may be imported now: installed and new enough. The panel lists GPUs only
        then, because an imported torch can no longer be upgraded in this Slicer session."""
        return self.isImportable("torch") and not self.torchTooOld()

    def missingPackages(self) -> list[str]:
        """pip requirements of the packages that cannot be imported (torch not included)."""
        return [requirement for name, requirement in PIP_REQUIREMENTS if not self.isImportable(name)]

    def ready(self) -> bool:
        return self.torchUsable() and not self.missingPackages()

    def ensure(self) -> bool:
        """Install what is missing (and upgrade a too old torch that is not loaded yet), after
        asking once. Returns True when everything is importable.

        Raises:
            DependencyError: the user declined, the PyTorch extension is missing, a too old torch is
                already loaded in this process, or an installation failed (the message names what
                failed and what to do; no traceback reaches the user).
        """
        missing = self.missingPackages()
        oldTorch = self.torchTooOld()
        needTorch = not self.isImportable("torch") or oldTorch is not None
        if not missing and not needTorch:
            return True
        if oldTorch and self.torchLoaded():
            raise DependencyError(loadedTorchMessage(oldTorch))
        torchLogic = self.torchLogicFactory() if needTorch else None
        if needTorch and torchLogic is None:
            what = f"PyTorch {TORCH_REQUIREMENT} (installed: {oldTorch})" if oldTorch else "PyTorch"
            raise DependencyError(f"SwinBOB needs {what}. Install the 'PyTorch' extension from the Extensions "
                                  "Manager, restart Slicer, and try again.")
        self._ask(missing, needTorch, oldTorch)
        if needTorch:
            self.installTorch(torchLogic)
        if missing:
            self.installPackages(missing)
        self._check(oldTorch)
        self.log("SwinBOB dependencies are installed.")
        return True

    def _ask(self, missing: list[str], needTorch: bool, oldTorch: str | None) -> None:
        torchLine = (f"torch{TORCH_REQUIREMENT} (upgrade from {oldTorch}, through the PyTorch extension)" if oldTorch
                     else "torch (through the PyTorch extension)")
        listed = ([torchLine] if needTorch else []) + missing
        if not self.confirm("SwinBOB needs these Python packages, which are not installed in Slicer yet:\n\n  "
                            + "\n  ".join(listed) + "\n\nInstall them now? This can take several minutes."
                            + ("\nSlicer must be restarted after a torch upgrade." if oldTorch else "")):
            raise DependencyError(f"Not installed (declined): {', '.join(listed)}")

    def _check(self, oldTorch: str | None) -> None:
        importlib.invalidate_caches()
        still = self.missingPackages() + ([] if self.isImportable("torch") else ["torch"])
        if still:
            raise DependencyError(f"Installation finished but these are still missing: {', '.join(still)}")
        if oldTorch and self.torchTooOld():
            raise DependencyError(f"torch was upgraded from {oldTorch}; restart Slicer to use the new version.")

    @staticmethod
    def _run(install: Callable[[], object], what: str, hint: str = ""):
        """Run one installation; a failed pip (``CalledProcessError``) or a network or disk error
        becomes a DependencyError naming what failed."""
        try:
            return install()
        except subprocess.CalledProcessError as error:
            command = " ".join(map(str, error.cmd)) if isinstance(error.cmd, (list, tuple)) else str(error.cmd)
            raise DependencyError(f"Installing {what} failed (exit status {error.returncode} of `{command}`); "
                                  f"see the Python console for pip's messages. {hint}Check the network connection "
                                  "and the disk space, then try again.") from error
        except OSError as error:
            raise DependencyError(f"Installing {what} failed: {error}") from error

    def installTorch(self, torchLogic) -> None:
        """torch through the PyTorch extension, which imports it at the end of its install: a torch
        that installed but cannot be loaded (a DLL error) is a message, not a console traceback."""
        self.log("Installing PyTorch through the PyTorch extension (this can take several minutes) ...")
        try:
            installed = self._run(lambda: torchLogic.installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT),
                                  f"torch{TORCH_REQUIREMENT}")
        except ImportError as error:
            raise DependencyError(f"PyTorch was installed, but loading it failed: {error}. Restart Slicer and try "
                                  "again; if it still fails, reinstall PyTorch in the PyTorch Utils module.") from error
        if installed is None:
            raise DependencyError("PyTorch could not be installed; see the PyTorch extension's module for details.")

    def installPackages(self, missing: list[str]) -> None:
        """pip-install ``missing`` with torch held at the installed version (a constraints file):
        a package asking for another torch (MONAI 1.5.0 capped torch at 2.6) then fails to install
        instead of replacing the build the PyTorch extension chose for this computer's GPU driver."""
        self.log(f"Installing {' '.join(missing)} ...")
        version = self.torchVersion()
        with tempfile.TemporaryDirectory(prefix="SwinBOB-pip-") as folder:
            arguments = list(missing)
            hint = ""
            if version:
                constraints = Path(folder) / "constraints.txt"
                constraints.write_text(f"torch=={version}\n", encoding="utf-8")
                arguments += ["-c", str(constraints)]
                hint = (f"torch was held at {version} (the PyTorch extension's build), so a package that needs "
                        "another torch is not installed. ")
            self._run(lambda: self.pipInstall(arguments), " ".join(missing), hint)


def loadedTorchMessage(version: str) -> str:
    """Why a too old torch that this Slicer session has already imported is not upgraded now."""
    return (f"SwinBOB needs torch{TORCH_REQUIREMENT}, and PyTorch {version} is installed. It is already loaded in "
            "this Slicer session, so it cannot be replaced now (on Windows its files are in use). Restart Slicer "
            "and press Segment before anything else uses PyTorch (SwinBOB then offers the upgrade), or set the "
            f"version requirement {TORCH_REQUIREMENT} in the PyTorch Utils module right after a restart.")


def requirementNames(requirements: Sequence[str]) -> set[str]:
    """Project names of pip requirement strings (``"monai>=1.4"`` -> ``"monai"``), lower case."""
    return {re.split(r"[<>=!~\[; ]", r.strip(), maxsplit=1)[0].lower() for r in requirements if r.strip()}
