"""Slicer-side code of the SwinBOB module, one responsibility per file.

* :mod:`.logic`: :class:`~.logic.SwinBOBLogic`, the public API (no Qt).
* :mod:`.nodes`: MRML nodes <-> SwinBOBLib images, label maps and tables.
* :mod:`.jobs`: background processes (``swinbob segment``, train, benchmark), their JSON-lines
  progress, and Cancel / Stop of their whole process tree.
* :mod:`.parameters`: the parameter node (GUI state) and its mapping onto the library's configs.
* :mod:`.dependencies`: torch (PyTorch extension) and MONAI & co. (pip) in Slicer's Python.
* :mod:`.rendering`: a slice view (background, entropy overlay, labels) to PNG without the GUI.
* :mod:`.review`, :mod:`.correction`, :mod:`.launcher`: QC review, manual correction, training and
  benchmark jobs.
* :mod:`.selftests`: test bodies shared by pytest (slicer-core) and SwinBOBTest (the application).
* :mod:`.widget`, :mod:`.workflowpanels`: the panel, the only Qt code (with ``SwinBOB.py``).
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
