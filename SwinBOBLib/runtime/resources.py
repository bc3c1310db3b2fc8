"""Files SwinBOB ships in ``Resources/``: the demo model and the default SOLF bounds.

``Resources/`` sits beside the ``SwinBOBLib`` folder both in a source checkout (and an editable
install) and in an installed Slicer extension, where the module's CMakeLists copies both into
``qt-scripted-modules/``.
"""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[2] / "Resources"


DEMO_MODEL = RESOURCES / "Models" / "swinbob_demo.pt"


DEFAULT_BOUNDS = RESOURCES / "SOLF" / "default_bounds.json"


def bundled(path: Path, what: str) -> Path:
    """``path`` if it exists, else FileNotFoundError saying what is missing and why."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the bundled {what} is missing (SwinBOB installed without its "
                                "Resources/ folder); pass a file explicitly")
    return path
