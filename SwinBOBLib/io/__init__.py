"""Images and files: reading and writing scans and label maps with their geometry, DICOM series,
reorientation, atomic writes, staging folders, datasets of cases.

* :mod:`.image`: the :class:`Image` (array + voxel -> RAS affine) and its checks;
* :mod:`.readers` / :mod:`.writers`: NIfTI, NRRD (``.seg.nrrd`` with segment names), MHA, DICOM;
* :mod:`.dicom`: DICOM series in and out; :mod:`.dicom_channels`: a folder's Dixon series as
  channels; :mod:`.itk`: SimpleITK <-> RAS conversion;
* :mod:`.geometry`: exact reorientation and grid comparison; :mod:`.memory`: size checks;
* :mod:`.files`: atomic text/CSV writes, staging folders, safe names, the one rule for ``-o`` folders;
* :mod:`.datasets`: Decathlon ``dataset.json``, CSV and label-folder datasets.

Imports only :mod:`SwinBOBLib.labels` and :mod:`SwinBOBLib.runtime`. ``from SwinBOBLib import io``
gives every public name of the modules above but ``datasets``.
"""

from SwinBOBLib.io.dicom import (  # noqa: F401
    SLICE_SPACING_TOLERANCE,
    check_slice_spacing,
    read_dicom_series,
    write_dicom_series,
)
from SwinBOBLib.io.dicom_channels import (  # noqa: F401
    canonical_contrast,
    identify_contrasts,
    read_dicom_channels,
)
from SwinBOBLib.io.files import (  # noqa: F401
    LOCK_PREFIX,
    OUTPUT_MARKER,
    STAGING_PREFIX,
    apply_umask,
    check_not_input,
    check_output_path,
    check_writable,
    claim_output_folder,
    clean_stale_staging,
    current_umask,
    inside,
    safe_name,
    staged_files,
    staged_folder,
    write_csv_atomic,
    write_text_atomic,
)
from SwinBOBLib.io.geometry import (  # noqa: F401
    Reorientation,
    grid_difference,
    reorient,
    undo_reorientation,
)
from SwinBOBLib.io.image import (  # noqa: F401
    DIXON_CHANNELS,
    IMAGE_SUFFIXES,
    ITK_SUFFIXES,
    MIN_SPACING_MM,
    NIFTI_SUFFIXES,
    PLAUSIBLE_SPACING_MM,
    GeometryWarning,
    Image,
    ImageFormatError,
    as_label_array,
    check_array,
    check_geometry,
    image_stem,
    image_suffix,
    select_channels,
    source_name,
)
from SwinBOBLib.io.memory import (  # noqa: F401
    InsufficientMemoryError,
    check_declared_size,
    format_mm,
    out_of_memory_error,
    physical_memory_bytes,
)
from SwinBOBLib.io.readers import (  # noqa: F401
    load_image,
    load_labelmap,
)
from SwinBOBLib.io.writers import (  # noqa: F401
    output_format,
    save_image,
    save_labelmap,
)

__all__ = [
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "IMAGE_SUFFIXES",
    "PLAUSIBLE_SPACING_MM",
    "MIN_SPACING_MM",
    "DIXON_CHANNELS",
    "ImageFormatError",
    "GeometryWarning",
    "Image",
    "source_name",
    "check_array",
    "check_geometry",
    "image_suffix",
    "image_stem",
    "as_label_array",
    "select_channels",
    "InsufficientMemoryError",
    "format_mm",
    "physical_memory_bytes",
    "check_declared_size",
    "out_of_memory_error",
    "load_image",
    "load_labelmap",
    "output_format",
    "save_image",
    "save_labelmap",
    "read_dicom_series",
    "SLICE_SPACING_TOLERANCE",
    "check_slice_spacing",
    "write_dicom_series",
    "read_dicom_channels",
    "identify_contrasts",
    "canonical_contrast",
    "current_umask",
    "apply_umask",
    "write_text_atomic",
    "write_csv_atomic",
    "STAGING_PREFIX",
    "safe_name",
    "inside",
    "check_writable",
    "clean_stale_staging",
    "OUTPUT_MARKER",
    "LOCK_PREFIX",
    "check_output_path",
    "check_not_input",
    "claim_output_folder",
    "staged_folder",
    "staged_files",
    "grid_difference",
    "Reorientation",
    "reorient",
    "undo_reorientation",
]
