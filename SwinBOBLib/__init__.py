"""SwinBOBLib: the computing library of SwinBOB (importable without 3D Slicer).

Packages, lowest layer first (docs/architecture.md; each imports only those before it):

* ``runtime`` (bundled resources, progress, stops), ``labels`` (label schemes, remapping,
  channel layouts);
* ``io`` (images with exact geometry, DICOM series, atomic writes, datasets);
* ``models`` (networks, checkpoint formats, heads and entropy);
* ``inference`` (preprocessing, sliding window, TTA, ETTA, :func:`segment_image`);
* ``solf`` (the SOLF label filter), ``phantom`` (synthetic neck-to-knee phantoms);
* ``evaluation`` (metrics, benchmark), ``training`` (datasets to weights);
* ``outputs`` (what a run writes), ``workflows`` (whole jobs on files);
* ``cli`` (the ``swinbob`` command).
"""

from SwinBOBLib import _moved

__version__ = "0.1.0"

_moved.install()
