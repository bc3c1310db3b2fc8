"""Whole jobs on files, shared by the command line and the Slicer module: segmenting scans into
result folders, the demo. Cohort runs belong here too. Imports everything below; only
:mod:`SwinBOBLib.cli` imports it.
"""
