"""Dixon contrasts of a DICOM folder as the channels of a multi-channel model: each series (or each
echo of a multi-echo series) is told apart by its DICOM attributes, the ones the model wants are
stacked in its order on one grid, and what is missing or ambiguous is refused naming the series.

How a series is identified, the first rule that applies:

1. **Image Type** values (whole values, any case, spaces and hyphens read as underscores):
   ``WATER``/``W``, ``FAT``/``F``, ``IN_PHASE``/``IP``, ``OPP_PHASE``/``OUT_PHASE``/``OP``
   (Siemens ``DERIVED\\PRIMARY\\DIXON\\WATER``, Philips mDixon ``...\\W\\...``). A series whose files
   carry different contrasts (all four in one series) is split by them.
2. **Echo times** of a series holding several echoes at each position (a GRE Dixon's echoes
   exported as one series): an echo ``TE`` ms at ``B0`` tesla (Magnetic Field Strength) is
   ``TE x 3.4 ppm x 42.58 MHz/T x B0`` cycles of the fat-water shift; near a whole cycle it is in
   phase, near a half cycle opposed phase (at 1.5 T: 2.3 ms opposed, 4.6 ms in phase; at 3 T:
   1.15 and 2.3 ms). Without the field strength the shorter of two echoes is taken as opposed phase
   (the usual two-point order), with a warning.
3. **Series Description** words: ``W``/``water``, ``F``/``fat``, ``in``/``IP``/``in phase``,
   ``opp``/``OP``/``out phase``/``opposed`` (UK Biobank's ``Dixon_BH_17s_W``, ``_F``, ``_in``,
   ``_opp``, Siemens' own suffixes; GE's ``WATER: Ax LAVA-Flex``, ``InPhase: ...``). A description
   naming a fraction or relaxation map (``fat fraction``, ``FF``, ``PDFF``, ``R2*``) or several
   contrasts identifies none.

Echo times alone never identify a single-echo series: Siemens' water and fat images carry one of
the echo times they were computed from.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SwinBOBLib.io.dicom import read_series_files
from SwinBOBLib.io.dicom_scan import DicomFile, Series, check_volume, scan_dicom_folder
from SwinBOBLib.io.geometry import grid_difference
from SwinBOBLib.io.image import DIXON_CHANNELS, Image, ImageFormatError

#: The names a checkpoint may give each Dixon contrast (lower case, spaces and hyphens as "_").
CONTRAST_ALIASES = {
    "water": ("water", "w", "wat"),
    "fat": ("fat", "f"),
    "in_phase": ("in_phase", "inphase", "in", "ip"),
    "opposed_phase": ("opposed_phase", "opposed", "opp_phase", "opp", "op", "out_phase", "outphase",
                      "out_of_phase", "oop"),
}


#: Image Type values that name a Dixon contrast (upper case, spaces and hyphens as "_").
IMAGE_TYPE_VALUES = {
    "WATER": "water", "W": "water", "FAT": "fat", "F": "fat",
    "IN_PHASE": "in_phase", "INPHASE": "in_phase", "IP": "in_phase",
    "OPP_PHASE": "opposed_phase", "OPPOSED_PHASE": "opposed_phase", "OUT_PHASE": "opposed_phase",
    "OUTPHASE": "opposed_phase", "OUT_OF_PHASE": "opposed_phase", "OP": "opposed_phase",
}


#: Series Description words that name a Dixon contrast (after "in phase" -> "inphase", "out of
#: phase" / "opposed phase" -> "outphase").
DESCRIPTION_WORDS = {
    "w": "water", "water": "water", "f": "fat", "fat": "fat",
    "in": "in_phase", "ip": "in_phase", "inphase": "in_phase",
    "opp": "opposed_phase", "op": "opposed_phase", "oop": "opposed_phase", "opposed": "opposed_phase",
    "outphase": "opposed_phase",
}


#: Description words of maps computed from the contrasts, which are not contrasts themselves.
NOT_CONTRAST_WORDS = {"fraction", "frac", "ff", "pdff", "fatfrac", "r2", "r2star", "t2star"}


#: Chemical shift of the main fat peak from water (ppm), and the proton's gyromagnetic ratio (MHz/T).
FAT_WATER_SHIFT_PPM = 3.4


PROTON_MHZ_PER_T = 42.577


#: An echo within this many cycles of a whole (half) cycle of the fat-water shift counts as in
#: (opposed) phase; scanners round their echo times, and the fat peak is 3.4 to 3.5 ppm.
ECHO_PHASE_TOLERANCE = 0.15


@dataclass
class ContrastSeries:
    """A Dixon contrast found in a folder: the files holding it and how it was told apart.

    Attributes:
        contrast: one of :data:`~SwinBOBLib.io.image.DIXON_CHANNELS`.
        series: its files (a part of the DICOM series when that holds several contrasts or echoes).
        matched_by: the attribute and value that identified it, e.g. ``Image Type DERIVED\\PRIMARY\\DIXON\\WATER``.
        part: which part of the DICOM series, e.g. ``echo 1 (2.39 ms)``; empty for a whole series.
        warning: an assumption made in identifying it, warned about when it is used.
    """

    contrast: str
    series: Series
    matched_by: str
    part: str = ""
    warning: str | None = None

    def describe(self) -> str:
        """``series UID 'description'`` and the part, for messages."""
        text = f"series {self.series.uid} '{self.series.headers[0].description}'"
        return f"{text} {self.part}" if self.part else text


def canonical_contrast(name: str, source: str = "model") -> str:
    """The Dixon contrast a channel name means (``"W"``, ``"in-phase"``, ``"opp"`` ...).

    Raises:
        ValueError: a name that is no Dixon contrast (naming it and the known names).
    """
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    for contrast, aliases in CONTRAST_ALIASES.items():
        if key in aliases:
            return contrast
    aliases = ", ".join(alias for names in CONTRAST_ALIASES.values() for alias in names[1:])
    raise ValueError(f"{source}: channel '{name}' is not a Dixon contrast SwinBOB can find by its DICOM attributes; "
                     f"known: {', '.join(DIXON_CHANNELS)} (or {aliases}). Give such channels as files instead "
                     "(io.load_image([file, ...]))")


def image_type_contrast(values: Sequence[str]) -> str | None:
    """The contrast Image Type values name, or None (none, or several different ones)."""
    named = {IMAGE_TYPE_VALUES.get(re.sub(r"[\s\-]+", "_", v.strip().upper())) for v in values} - {None}
    return named.pop() if len(named) == 1 else None


def description_contrast(description: str) -> str | None:
    """The contrast a Series Description names by its words, or None (none, several, or a map)."""
    text = re.sub(r"(?<![a-z])in[\s_\-]*phase", "inphase", description.lower())
    text = re.sub(r"(?<![a-z])(?:opp(?:osed)?|out)[\s_\-]*(?:of[\s_\-]*)?phase", "outphase", text)
    words = set(re.split(r"[^a-z0-9*]+", text.replace("r2*", "r2star").replace("t2*", "t2star")))
    named = {DESCRIPTION_WORDS[w] for w in words if w in DESCRIPTION_WORDS}
    return named.pop() if len(named) == 1 and not words & NOT_CONTRAST_WORDS else None


def echo_phase(echo_time_ms: float, field_strength_t: float) -> tuple[str | None, float]:
    """``(contrast, cycles)`` of an echo: ``in_phase`` or ``opposed_phase`` when its cycles of the
    fat-water shift are within :data:`ECHO_PHASE_TOLERANCE` of a whole or a half, else None."""
    cycles = echo_time_ms * 1e-3 * FAT_WATER_SHIFT_PPM * PROTON_MHZ_PER_T * field_strength_t
    fraction = cycles % 1.0
    if min(fraction, 1.0 - fraction) <= ECHO_PHASE_TOLERANCE:
        return "in_phase", cycles
    if abs(fraction - 0.5) <= ECHO_PHASE_TOLERANCE:
        return "opposed_phase", cycles
    return None, cycles


def _split(series: Series, key) -> dict:
    """``{key: Series}``: the files of ``series`` grouped by ``key(header)``, in file order."""
    parts: dict = {}
    for header in series.headers:
        part = parts.setdefault(key(header), Series(series.uid, series.study_uid))
        part.headers.append(header)
        part.files.append(header.path)
    return parts


def _echo_key(header: DicomFile) -> tuple:
    return (round(header.echo_time, 3) if header.echo_time is not None else None, header.echo_number)


def _echo_contrasts(series: Series) -> tuple[list[ContrastSeries], str | None]:
    """In- and opposed-phase echoes of a multi-echo series, or ``([], why not)``."""
    echoes = _split(series, _echo_key)
    if len(echoes) < 2:
        return [], None
    ordered = sorted(echoes.items(), key=lambda item: (item[0][0] is None, item[0][0] or 0.0, item[0][1] or 0))
    times = ", ".join(f"{te:g}" if te is not None else "?" for (te, _), _ in ordered)
    field = series.headers[0].field_strength
    if not field or any(te is None for (te, _), _ in ordered):
        return _echoes_in_order(series, ordered, times)
    found: dict[str, ContrastSeries] = {}
    phases = []
    for number, (key, part) in enumerate(ordered, start=1):
        contrast, cycles = echo_phase(key[0], field)
        phases.append(f"{key[0]:g} ms: {cycles:.2f} cycles")
        if contrast and contrast not in found:  # the shortest echo of each phase: the least T2* decay
            found[contrast] = ContrastSeries(contrast, part, f"Echo Time {key[0]:g} ms at {field:g} T ({cycles:.2f} "
                                             "cycles of the fat-water shift)", _echo_name(key, number))
    if not found:
        return [], (f"its echoes are neither in nor opposed phase at {field:g} T ({'; '.join(phases)}, "
                    f"tolerance {ECHO_PHASE_TOLERANCE} cycles)")
    return list(found.values()), None


def _echoes_in_order(series: Series, ordered: list, times: str) -> tuple[list[ContrastSeries], str | None]:
    """Two echoes without a field strength (or echo times): the shorter is opposed phase, with a warning."""
    if len(ordered) != 2:
        return [], (f"{len(ordered)} echoes ({times} ms) and no Magnetic Field Strength or Echo Time to tell "
                    "in-phase from opposed-phase echoes")
    warning = (f"series {series.uid} '{series.headers[0].description}': no Magnetic Field Strength or Echo Time; "
               "its shorter echo is taken as opposed phase and the longer as in phase (the usual two-point "
               "Dixon order), check the result")
    by_order = zip(("opposed_phase", "in_phase"), ordered)
    return [ContrastSeries(contrast, part, f"echo order ({times} ms, no field strength)", _echo_name(key, number),
                           warning) for number, (contrast, (key, part)) in enumerate(by_order, start=1)], None


def _echo_name(key: tuple, number: int) -> str:
    """``echo 2 (4.77 ms)``: the Echo Numbers value (else the echo's rank) and its Echo Time."""
    name = f"echo {key[1] if key[1] is not None else number}"
    return f"{name} ({key[0]:g} ms)" if key[0] is not None else name


def _joined(values: Sequence[str]) -> str:
    """Multi-valued attribute values as DICOM writes them, ``DERIVED\\PRIMARY\\DIXON\\WATER``."""
    return "\\".join(values)


def _series_contrasts(series: Series) -> tuple[list[ContrastSeries], str | None]:
    """The contrasts one DICOM series holds, or ``([], why none)``."""
    if not all(h.image for h in series.headers):
        return [], "not an image series"
    by_type = _split(series, lambda h: image_type_contrast(h.image_type))
    found, why = [], None
    for contrast, part in by_type.items():
        first = part.headers[0]
        if contrast is not None:
            label = f"(its {len(part.headers)} {contrast} files)" if len(by_type) > 1 else ""
            source = ContrastSeries(contrast, part, f"Image Type {_joined(first.image_type)}", label)
            named = description_contrast(first.description)
            if named and named != contrast:
                source.warning = (f"{source.describe()}: Image Type says {contrast} but the Series Description "
                                  f"'{first.description}' says {named}; taken as {contrast}")
            found.append(source)
            continue
        echoes, why = _echo_contrasts(part)
        named = description_contrast(first.description)
        if echoes:
            found += echoes
        elif named and why is None:
            found.append(ContrastSeries(named, part, f"Series Description '{first.description}'"))
        elif why is None:
            why = (f"neither Image Type ({_joined(first.image_type) or 'none'}) nor Series Description names a "
                   "Dixon contrast")
    return found, (None if found else why)


def identify_contrasts(found: dict[str, Series]) -> tuple[list[ContrastSeries], dict[str, str]]:
    """The Dixon contrasts in a folder's series (:func:`~SwinBOBLib.io.dicom_scan.scan_dicom_folder`).

    Returns:
        ``(contrasts, notes)``: every contrast found, in series order, and ``{series UID: why no
        contrast was found}`` for the series that hold none.
    """
    contrasts, notes = [], {}
    for uid, series in found.items():
        held, why = _series_contrasts(series)
        contrasts += held
        if why:
            notes[uid] = why
    return contrasts, notes


def _listing(found: dict[str, Series], contrasts: list[ContrastSeries], notes: dict[str, str]) -> str:
    """Each series of the folder with what it was identified as, for messages."""
    lines = []
    for uid, series in found.items():
        held = [f"{c.contrast}{' ' + c.part if c.part else ''} by {c.matched_by}" for c in contrasts
                if c.series.uid == uid]
        lines.append(f"{series.describe()} -> {', '.join(held) or notes.get(uid, 'no Dixon contrast')}")
    return "; ".join(lines)


def _grid_key(series: Series) -> tuple:
    """What must agree for two series to lie on one grid: slice size, orientation, slice positions."""
    first = series.headers[0]
    orientation = tuple(np.round(first.orientation, 3)) if first.orientation is not None else None
    positions = sorted(tuple(np.round(h.position, 2)) for h in series.headers if h.position is not None)
    return first.size, orientation, tuple(positions)


def choose_channels(contrasts: list[ContrastSeries], wanted: Sequence[str], found: dict[str, Series],
                    notes: dict[str, str], folder: Path, series_uid: str | None = None) -> list[ContrastSeries]:
    """One source per wanted contrast, in the wanted order.

    Args:
        contrasts, notes: from :func:`identify_contrasts`.
        wanted: canonical contrast names (:func:`canonical_contrast`).
        series_uid: a series that picks the grid when a contrast is found more than once (one
            station of a multi-station exam): its own contrasts, and the others from series on its grid.

    Raises:
        ImageFormatError: a wanted contrast missing, or found more than once and not settled by
            ``series_uid``; an unknown ``series_uid``, or one holding no Dixon contrast.
    """
    candidates = {c: [s for s in contrasts if s.contrast == c] for c in wanted}
    where = ""
    if series_uid is not None:
        candidates, where = _on_grid_of(candidates, contrasts, found, notes, folder, series_uid)
    missing = [c for c in wanted if not candidates[c]]
    if missing:
        present = [f"{c} ({candidates[c][0].describe()}, by {candidates[c][0].matched_by})" for c in wanted
                   if candidates[c]]
        raise ImageFormatError(
            f"DICOM folder {folder}: the model wants {', '.join(wanted)}; found {', '.join(present) or 'none'}{where}; "
            f"missing {', '.join(missing)}. Series present: {_listing(found, contrasts, notes)}. SwinBOB tells Dixon "
            "contrasts apart by Image Type (WATER, FAT, IN_PHASE, OPP_PHASE; W, F, IP, OP), by the echo times of a "
            "multi-echo series, or by Series Description words (..._W, _F, _in, _opp); see docs/dicom.md")
    for contrast in wanted:
        if len(candidates[contrast]) > 1:
            both = " and ".join(f"series {s.series.describe()}{' ' + s.part if s.part else ''} (by {s.matched_by})"
                                for s in candidates[contrast])
            raise ImageFormatError(
                f"DICOM folder {folder}: {len(candidates[contrast])} series hold {contrast}{where}: {both}. Choose one "
                "with --series UID (series_uid=...): the other contrasts are then taken from the series on its grid")
    return [candidates[c][0] for c in wanted]


def _on_grid_of(candidates: dict, contrasts: list[ContrastSeries], found: dict[str, Series], notes: dict[str, str],
                folder: Path, series_uid: str) -> tuple[dict, str]:
    """The candidates narrowed to ``series_uid`` itself and the series on its grid."""
    if series_uid not in found:
        raise ImageFormatError(f"{folder}: no DICOM series {series_uid}; found {_listing(found, contrasts, notes)}")
    picked = [s for s in contrasts if s.series.uid == series_uid]
    if not picked:
        raise ImageFormatError(f"{folder}: series {found[series_uid].describe()} holds no Dixon contrast: "
                               f"{notes.get(series_uid, 'not identified')}")
    grid = _grid_key(picked[0].series)
    narrowed = {c: [s for s in options if s.series.uid == series_uid] or
                [s for s in options if _grid_key(s.series) == grid] for c, options in candidates.items()}
    return narrowed, f" on the grid of series {series_uid}"


def _check_one_study_and_grid(chosen: list[ContrastSeries], images: list[Image], folder: Path) -> None:
    """Refuse channels from different studies or on different grids, naming both series."""
    first, image = chosen[0], images[0]
    for other, other_image in zip(chosen[1:], images[1:]):
        if other.series.study_uid != first.series.study_uid:
            raise ImageFormatError(
                f"DICOM folder {folder}: {first.contrast} ({first.describe()}) and {other.contrast} "
                f"({other.describe()}) belong to different studies ({first.series.study_uid} and "
                f"{other.series.study_uid}); the channels must come from one examination")
        difference = grid_difference(image, other_image)
        if difference:
            raise ImageFormatError(
                f"DICOM folder {folder}: {first.contrast} ({first.describe()}) and {other.contrast} "
                f"({other.describe()}) are not on one grid ({difference}); the channels are stacked voxel for "
                "voxel and are not resampled: export the contrasts on one grid, or give them as files on one grid")


def read_dicom_channels(folder: Path, contrasts: Sequence[str], series_uid: str | None = None) -> Image:
    """The Dixon contrasts a model wants, read from the series of a DICOM folder and stacked as channels.

    Each series is identified by its attributes (see this module's docstring); each wanted contrast
    must be found exactly once (``series_uid`` settles a contrast found on several grids), the
    series are checked as :func:`~SwinBOBLib.io.dicom.read_dicom_series` checks one, and all
    must share one study and one grid.

    Args:
        folder: a folder of DICOM files (subfolders are not read).
        contrasts: the channels in the model's order, by name or alias (``water``, ``F``,
            ``in-phase``, ``opp`` ...; :data:`CONTRAST_ALIASES`).
        series_uid: see :func:`choose_channels`.

    Returns:
        :class:`Image` ``(X, Y, Z, C)`` (``(X, Y, Z)`` for one contrast) with ``channel_names`` the
        names as given; ``metadata``: ``dicom_files`` and ``series_uid`` of the first channel (the
        source instances a DICOM SEG references), ``study_uid``, ``dicom_channels`` (per channel its
        name, contrast, series UID, description, part and the attribute that matched it) and
        ``dicom_channel_files`` (per channel its files in slice order).

    Raises:
        ValueError: a name that is no Dixon contrast.
        ImageFormatError: a contrast missing or ambiguous (naming the series present), channels
            on different grids or from different studies (naming both), or a series that is not
            one volume.
    """
    folder = Path(folder)
    wanted = [canonical_contrast(name, str(folder)) for name in contrasts]
    found = scan_dicom_folder(folder)
    identified, notes = identify_contrasts(found)
    chosen = choose_channels(identified, wanted, found, notes, folder, series_uid)
    images = []
    for source in chosen:
        check_volume(source.series, folder)
        images.append(read_series_files(source.series, folder))
        if source.warning:
            warnings.warn(f"{folder}: {source.warning}", stacklevel=2)
    _check_one_study_and_grid(chosen, images, folder)
    records = [{"channel": str(name), "contrast": s.contrast, "series_uid": s.series.uid,
                "series_description": s.series.headers[0].description, "part": s.part, "matched_by": s.matched_by}
               for name, s in zip(contrasts, chosen)]
    metadata = {**images[0].metadata, "dicom_channels": records,
                "dicom_channel_files": [image.metadata["dicom_files"] for image in images]}
    if len(images) == 1:
        return Image(images[0].array, images[0].affine, folder, None, metadata)
    array = np.stack([image.array for image in images], axis=-1)
    return Image(array, images[0].affine, folder, tuple(str(n) for n in contrasts), metadata)
