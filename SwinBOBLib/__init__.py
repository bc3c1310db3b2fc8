"""SwinBOBLib: the computing library of SwinBOB (importable without 3D Slicer).

Modules: ``labels`` (label schemes, remapping, channel layouts), ``io`` (images with exact
geometry), ``phantom`` (synthetic neck-to-knee phantoms), ``solf`` (the SOLF label filter),
``cli`` (the ``swinbob`` command).
"""

__version__ = "0.1.0"
