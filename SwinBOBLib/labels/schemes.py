"""Label schemes: structures by index and by name, remapping between schemes, model channel layouts.

A *scheme* maps integer label values to anatomical structures. SwinBOB works in the UKBOB scheme
(TotalVibeSegmentator's numbering, 0..72, index 20 unused, 71 structures) and converts to and from
TotalSegmentator ``total`` / ``total_mr``, BTCV, AMOS, MRSegmentator and ``zeroshot10`` (the ten
organs of the UKBOB paper's zero-shot table 5, adrenal glands merged as one ``AG`` class).

Every structure name of every scheme resolves to a *canonical structure*: a normalised token key
("kidney_right", "Right kidney", "left_kidney" and "Kidney L" all normalise predictably), corrected
by a small alias table where schemes spell one structure differently ("autochthonous muscle" is
"autochthon"). A part-of table records which structures one scheme merges (lung lobes into a lung,
colon and small bowel into the intestine, both adrenal glands into ``adrenal_glands``, single
vertebrae into ``vertebrae``). :func:`remap` maps a label to the same structure in the destination,
or to the nearest structure that contains it; structures the destination cannot represent become 0.

Model channel layout (see ``docs/labels.md``): SwinBOB models use the *compact* layout, 72 channels
(background plus the 71 structures, skipping the unused index 20), so no output channel is ever
untrained and entropy is normalised over real classes. Checkpoints with the *full* 73-channel layout
(channel == label value, as part of the public UKBOB code writes them) are converted on load with
:meth:`ChannelLayout.rows_from`.
"""

from __future__ import annotations

import colorsys
import difflib
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SwinBOBLib.labels.names import ancestors, canonical_key, singular

DATA_DIR = Path(__file__).resolve().parent / "data"


SCHEME_DIR = DATA_DIR / "schemes"


#: Scheme name -> (TSV file in data/schemes, one-line description). Adding a scheme is one entry.
SCHEME_FILES: dict[str, tuple[str, str]] = {
    "ukbob": ("ukbob.tsv", "UKBOB / TotalVibeSegmentator, 71 structures (index 20 unused)"),
    "total": ("total.tsv", "TotalSegmentator v2 'total' (CT), 117 structures"),
    "total_mr": ("total_mr.tsv", "TotalSegmentator 'total_mr' (MRI), 50 structures"),
    "btcv": ("btcv.tsv", "BTCV abdomen (CT), 13 organs"),
    "brats": ("brats.tsv", "BraTS 2023 glioma (4 MRI contrasts): 1 necrosis, 2 edema, 3 enhancing tumour"),
    "amos": ("amos.tsv", "AMOS 2022 (CT + MRI), 15 organs"),
    "mrsegmentator": ("mrsegmentator.tsv", "MRSegmentator (MRI + CT), 40 structures"),
    "zeroshot10": ("zeroshot10.tsv", "UKBOB table 5: 10 organs shared by BTCV and AMOS, adrenals merged (AG)"),
}


SCHEME_ALIASES = {
    "totalvibe": "ukbob", "totalvibesegmentator": "ukbob", "swinbob": "ukbob",
    "totalsegmentator": "total", "total_ct": "total", "mrseg": "mrsegmentator",
}


GROUPS = ("organ", "digestive", "vessel", "muscle", "bone", "spine", "body composition")


class UnknownStructureError(ValueError):
    """A structure name that matches nothing in a scheme; the message lists close matches."""


class UnknownSchemeError(ValueError):
    """A scheme name that is not registered."""


@dataclass(frozen=True)
class Code:
    """A coded concept of the structure's anatomy, as DICOM SEG and Slicer's terminology use it.

    Attributes:
        scheme: coding scheme designator, ``SCT`` (SNOMED CT) for every entry we ship.
        value: the concept's code, e.g. ``64033007``.
        meaning: its code meaning, e.g. ``Kidney``.
    """

    scheme: str
    value: str
    meaning: str

    @classmethod
    def parse(cls, text: str, source: str = "code") -> Code | None:
        """``"SCT:64033007:Kidney"`` -> Code; an empty cell -> None."""
        if not text.strip():
            return None
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{source}: '{text}' is not a code; expected SCHEME:VALUE:MEANING, e.g. SCT:64033007:Kidney")
        return cls(*(p.strip() for p in parts))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}:{self.meaning}"


#: The anatomy of a structure no table codes (a scheme's own structure that UKBOB lacks).
GENERIC_CATEGORY = Code("SCT", "123037004", "Anatomical Structure")


GENERIC_TYPE = Code("SCT", "91723000", "Anatomical structure")


@dataclass(frozen=True)
class Structure:
    """One labelled structure of a scheme.

    Attributes:
        index: label value in the scheme's label maps.
        name: the scheme's own name (e.g. ``kidney_left``).
        display_name: human-readable name (e.g. ``Left kidney``).
        group: one of :data:`GROUPS`, or ``"other"``.
        color: (r, g, b), 0..255.
        synonyms: extra names a user may type.
        key: canonical structure key shared across schemes.
        category, type, modifier: its SNOMED CT segmented property category, type and type
            modifier (left/right), the codes Slicer's terminology gives the structure; a
            structure UKBOB lacks gets :data:`GENERIC_CATEGORY` / :data:`GENERIC_TYPE`.
    """

    index: int
    name: str
    display_name: str
    group: str
    color: tuple[int, int, int]
    synonyms: tuple[str, ...] = ()
    key: str = ""
    category: Code = GENERIC_CATEGORY
    type: Code = GENERIC_TYPE
    modifier: Code | None = None


@dataclass(frozen=True)
class Scheme:
    """A label scheme: ``structures`` maps label value -> :class:`Structure` (background excluded)."""

    name: str
    description: str
    structures: Mapping[int, Structure]
    _by_key: Mapping[str, int] = field(repr=False, default_factory=dict)

    @property
    def indices(self) -> list[int]:
        """Label values of the structures, ascending (0 excluded)."""
        return sorted(self.structures)

    @property
    def max_index(self) -> int:
        return max(self.structures)

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> Structure:
        try:
            return self.structures[int(index)]
        except KeyError:
            raise KeyError(f"label {index} is not a structure of scheme '{self.name}' "
                           f"(valid: 1..{self.max_index}, see `swinbob labels {self.name}`)") from None

    def name_of(self, index: int) -> str:
        return "background" if int(index) == 0 else self[index].name

    def lateral_partners(self) -> dict[int, int]:
        """``{label: label of the same structure on the other side}`` for every paired structure
        (``kidney_left`` <-> ``kidney_right``, ``left_x`` <-> ``right_x``); unpaired ones are absent."""
        by_name = {s.name: i for i, s in self.structures.items()}
        partners = {}
        for label, structure in self.structures.items():
            for side, other in (("left", "right"), ("right", "left")):
                for a, b in ((f"_{side}", f"_{other}"), (f"{side}_", f"{other}_")):
                    partner = structure.name.replace(a, b)
                    if partner != structure.name and partner in by_name:
                        partners[label] = by_name[partner]
        return partners

    def lookup(self, name: str | int) -> int:
        """Label value of a structure given by any of its names, synonyms or its index.

        Raises:
            UnknownStructureError: nothing matches; the message lists close matches and, where the
                name denotes part of a structure of this scheme, that structure.
        """
        if isinstance(name, (int, np.integer)) or str(name).strip().isdigit():
            index = int(name)
            if index not in self.structures:
                raise UnknownStructureError(
                    f"label {index} is not a structure of scheme '{self.name}' (valid: 1..{self.max_index})")
            return index
        key = canonical_key(name)
        if key in self._by_key:
            return self._by_key[key]
        hint = ""
        parts = self.parts_of(key)
        if parts:
            hint = f" In this scheme it is split into: {', '.join(self[i].name for i in parts)}."
        for ancestor in ancestors(key):
            if ancestor in self._by_key:
                hint = f" It is part of '{self[self._by_key[ancestor]].name}' in this scheme."
                break
        close = difflib.get_close_matches(key, list(self._by_key), n=5, cutoff=0.6)
        names = [self[self._by_key[k]].name for k in close]
        suggestion = f" Close matches: {', '.join(names)}." if names else ""
        raise UnknownStructureError(
            f"unknown structure '{name}' in scheme '{self.name}'.{hint}{suggestion} "
            f"List all with `swinbob labels {self.name}`.")

    def parts_of(self, name_or_key: str) -> list[int]:
        """Label values of this scheme's structures that are parts of the named structure
        (e.g. the two left lung lobes for "left lung" in UKBOB)."""
        key = canonical_key(name_or_key)
        return [i for i, s in self.structures.items() if key in ancestors(s.key)]

    def select(self, names: str | Iterable[str | int] | None) -> list[int]:
        """Label values for a comma-separated string or list of structure names; all when None.

        A group name ("muscle", "vessel", ...) selects every structure of that group, and a
        structure this scheme splits into parts selects the parts ("left lung" -> both left lobes).
        """
        if names is None:
            return self.indices
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        chosen: list[int] = []
        unknown: list[str] = []
        for name in names:
            try:
                chosen += self.resolve(name)
            except UnknownStructureError as error:
                unknown.append(str(error))
        if unknown:  # every unknown name at once, not one per attempt
            raise UnknownStructureError(" ".join(unknown) if len(unknown) == 1 else
                                        f"{len(unknown)} unknown names: " + " | ".join(unknown))
        return sorted(set(chosen))

    def resolve(self, name: str | int) -> list[int]:
        """Label values one name stands for, as a user means it.

        In order: a group ("muscle": the muscles, and the structure named ``muscle`` itself), a
        structure or synonym, the parts this scheme splits it into ("left lung": both left lobes),
        both sides of a paired structure ("kidney", "gluteus maximus"), and the same for a plural
        ("kidneys", "lungs", "adrenal glands").

        Raises:
            UnknownStructureError: none of these; the message lists close matches.
        """
        text = str(name).strip()
        group = text.lower().replace("_", " ")
        if group in GROUPS:
            own = [self._by_key[canonical_key(text)]] if canonical_key(text) in self._by_key else []
            return sorted({*own, *(i for i in self.indices if self.structures[i].group == group)})
        if isinstance(name, (int, np.integer)) or text.isdigit():
            return [self.lookup(name)]
        for candidate in dict.fromkeys((text, singular(text))):
            found = self._meaning(candidate)
            if found:
                return sorted(found)
        return [self.lookup(name)]  # raises, with close matches

    def _meaning(self, name: str) -> list[int]:
        key = canonical_key(name)
        if key in self._by_key:
            return [self._by_key[key]]
        if self.parts_of(name):
            return self.parts_of(name)
        sides = []
        if not ({"left", "right"} & set(key.split())):
            for side in ("left", "right"):
                side_key = canonical_key(f"{name} {side}")
                sides += [self._by_key[side_key]] if side_key in self._by_key else self.parts_of(f"{name} {side}")
        return sides

    def lookup_table(self) -> np.ndarray:
        """Boolean table ``valid[value]`` for values 0..max_index (0 is valid)."""
        table = np.zeros(self.max_index + 1, dtype=bool)
        table[0] = True
        table[self.indices] = True
        return table

    def validate_labelmap(self, labelmap: np.ndarray, source: str = "label map") -> None:
        """Raise ValueError when ``labelmap`` holds non-integers or values outside this scheme."""
        array = np.asarray(labelmap)
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise ValueError(f"{source}: label values must be integers, found non-integer "
                                 f"values (dtype {array.dtype})")
        elif array.dtype.kind not in "iub":
            raise ValueError(f"{source}: label map dtype {array.dtype} is not an integer type")
        values = np.unique(array).astype(np.int64)
        valid = self.lookup_table()
        bad = [int(v) for v in values if v < 0 or v > self.max_index or not valid[v]]
        if bad:
            raise ValueError(f"{source}: values {bad[:10]} are not labels of scheme '{self.name}' "
                             f"(valid: 0 and {self.indices[0]}..{self.max_index}"
                             f"{', 20 unused' if self.name == 'ukbob' else ''})")


def available_schemes() -> list[str]:
    """Names of the registered label schemes."""
    return list(SCHEME_FILES)


def _display_name(name: str) -> str:
    tokens = name.replace("_", " ").split()
    for side in ("left", "right"):
        if side in tokens:
            tokens.remove(side)
            tokens.insert(0, side)
    text = " ".join(tokens)
    return text[:1].upper() + text[1:]


def _generated_color(key: str) -> tuple[int, int, int]:
    """A stable colour for a structure that UKBOB lacks, derived from its key."""
    digest = hashlib.sha1(key.encode()).digest()
    r, g, b = colorsys.hsv_to_rgb(digest[0] / 255, 0.45 + digest[1] / 255 * 0.4, 0.6 + digest[2] / 255 * 0.4)
    return int(r * 255), int(g * 255), int(b * 255)


def _read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


@functools.lru_cache(maxsize=1)
def _ukbob_metadata() -> dict[str, Structure]:
    """UKBOB structure metadata (display name, group, colour, synonyms) by canonical key."""
    meta = {}
    path = DATA_DIR / "ukbob_structures.tsv"
    for row in _read_tsv(path):
        synonyms = tuple(s.strip() for s in row.get("synonyms", "").split(";") if s.strip())
        color = tuple(int(c) for c in row["color"].split(","))
        key = canonical_key(row["name"])
        where = f"{path}: {row['name']}"
        meta[key] = Structure(int(row["index"]), row["name"], row["display_name"], row["group"],
                              color, synonyms, key, Code.parse(row["category"], where) or GENERIC_CATEGORY,
                              Code.parse(row["type"], where) or GENERIC_TYPE, Code.parse(row.get("modifier", ""), where))
    return meta


def _borrowed(key: str) -> Structure | None:
    """UKBOB metadata for ``key`` or for the nearest structure containing it."""
    meta = _ukbob_metadata()
    for candidate in [key, *ancestors(key)]:
        if candidate in meta:
            return meta[candidate]
    return None


@functools.cache
def get_scheme(name: str) -> Scheme:
    """The registered scheme ``name`` (case-insensitive; "totalvibe", "mrseg" etc. are aliases)."""
    wanted = str(name).strip().lower()
    wanted = SCHEME_ALIASES.get(wanted, wanted)
    if wanted not in SCHEME_FILES:
        close = difflib.get_close_matches(wanted, available_schemes(), n=3, cutoff=0.4)
        raise UnknownSchemeError(f"unknown label scheme '{name}'; available: {', '.join(available_schemes())}"
                                 + (f" (did you mean {', '.join(close)}?)" if close else ""))
    filename, description = SCHEME_FILES[wanted]
    structures: dict[int, Structure] = {}
    by_key: dict[str, int] = {}
    for row in _read_tsv(SCHEME_DIR / filename):
        index, label_name = int(row["index"]), row["name"]
        if index == 0 or label_name == "unused":
            continue
        key = canonical_key(label_name)
        meta = _borrowed(key)
        same = meta is not None and meta.key == key
        structure = Structure(
            index=index, name=label_name,
            display_name=meta.display_name if same else _display_name(label_name),
            group=meta.group if meta else "other",
            color=meta.color if same else _generated_color(key),
            synonyms=meta.synonyms if same else (), key=key,
            category=meta.category if same else GENERIC_CATEGORY, type=meta.type if same else GENERIC_TYPE,
            modifier=meta.modifier if same else None)
        structures[index] = structure
        by_key[key] = index
        for synonym in (*structure.synonyms, structure.display_name):
            by_key.setdefault(canonical_key(synonym), index)
    return Scheme(wanted, description, structures, by_key)


def slicer_color_table(scheme: str = "ukbob") -> str:
    """The scheme as a 3D Slicer colour table (.ctbl text): ``index name r g b a`` per line."""
    s = get_scheme(scheme)
    lines = [f"# SwinBOB colour table for label scheme '{s.name}': {s.description}",
             "0 background 0 0 0 0"]
    lines += [f"{i} {s[i].name} {s[i].color[0]} {s[i].color[1]} {s[i].color[2]} 255" for i in s.indices]
    return "\n".join(lines) + "\n"


def scheme_codes(scheme: str) -> Sequence[tuple[int, str, str, str]]:
    """Rows for listing the anatomy codes: (index, category, type, modifier or ""), each code
    written ``SCHEME:VALUE:MEANING`` (see :class:`Code`)."""
    s = get_scheme(scheme)
    return [(i, str(s[i].category), str(s[i].type), str(s[i].modifier or "")) for i in s.indices]


def scheme_rows(scheme: str) -> Sequence[tuple[int, str, str, str, str]]:
    """Rows for listing: (index, name, display name, group, "r,g,b")."""
    s = get_scheme(scheme)
    return [(i, s[i].name, s[i].display_name, s[i].group, ",".join(map(str, s[i].color)))
            for i in s.indices]
