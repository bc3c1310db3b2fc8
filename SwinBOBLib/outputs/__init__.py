"""What a segmentation run writes for a scan: the result folder (labels, entropy, organ table,
report, preview), written atomically beside nothing of the user's, and what produced it.
Output formats (DICOM SEG, parametric maps, structured reports) belong here too.

Imports inference, solf, models, io and labels.
"""
