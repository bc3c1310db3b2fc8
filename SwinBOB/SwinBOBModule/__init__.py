"""Slicer-side code of the SwinBOB module, one responsibility per file.

* :mod:`.logic`: :class:`~.logic.SwinBOBLogic`, the public API (no Qt).
* :mod:`.nodes`: MRML nodes <-> SwinBOBLib images, label maps and tables.
* :mod:`.jobs`: the background ``swinbob segment`` process and its JSON-lines progress.
* :mod:`.parameters`: the parameter node (GUI state) and its mapping onto the library's configs.
* :mod:`.dependencies`: torch (PyTorch extension) and MONAI & co. (pip) in Slicer's Python.
* :mod:`.rendering`: a slice view (background, entropy overlay, labels) to PNG without the GUI.
* :mod:`.selftests`: test bodies shared by pytest (slicer-core) and SwinBOBTest (the application).

Nothing here imports ``qt``; the widget in ``SwinBOB.py`` is the only Qt code.
"""

import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
#: Folders that may hold Resources/: the installed extension's scripted-module folder (beside
#: SwinBOB.py), and the repository root in a source checkout.
RESOURCE_ROOTS = (os.path.dirname(_PACKAGE), os.path.dirname(os.path.dirname(_PACKAGE)))


def resource_path(*parts):
    """Path of a file under Resources/ in an installed extension or a source checkout.

    Raises:
        FileNotFoundError: no such file under any Resources/ folder.
    """
    for root in RESOURCE_ROOTS:
        candidate = os.path.join(root, "Resources", *parts)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"SwinBOB resource not found: {os.path.join('Resources', *parts)}")
