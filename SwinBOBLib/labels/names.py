"""Structure names normalised to canonical token keys ("Kidney L", "left_kidney" and "kidney_left"
all give ``"kidney left"``), the aliases schemes spell differently, and the part-of table that
drives merges in :func:`SwinBOBLib.labels.remap.remap`.
"""

from __future__ import annotations

import re

# Token spellings that mean the same thing; applied to every name before matching.
_TOKEN_ALIASES = {
    "l": "left", "lt": "left", "sin": "left", "sinister": "left",
    "r": "right", "rt": "right", "dx": "right", "dexter": "right",
    "oesophagus": "esophagus", "vena": "vein", "venae": "vein", "veins": "vein",
    "clavicle": "clavicula", "kidneys": "kidney", "lungs": "lung", "glands": "gland",
}


_STOP_TOKENS = {"the", "of", "and", "or"}


# Structures that schemes spell differently: name -> canonical name.
_ALIASES = {
    "intervertebral discs": "IVD",
    "spine": "vertebrae",
    "adrenal glands": "adrenal_glands",
    "AG": "adrenal_glands",
}


# The same for structures that come in a left and a right version.
_LATERAL_ALIASES = {
    "autochthonous muscle": "autochthon",
    "autochthonous back muscle": "autochthon",
    "iliopsoas muscle": "iliopsoas",
}


# Structure -> the structure that contains it (canonical names). Drives merges in remap().
PART_OF: dict[str, str] = {
    "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
    "lung_upper_lobe_right": "lung_right", "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right",
    "small_bowel": "intestine", "colon": "intestine",
    "adrenal_gland_left": "adrenal_glands", "adrenal_gland_right": "adrenal_glands",
    "vertebra_body": "vertebrae", "vertebra_posterior_elements": "vertebrae",
    "kidney_cyst_left": "kidney_left", "kidney_cyst_right": "kidney_right",
    "prostate": "prostate_or_uterus",
    **{f"vertebrae_{v}": "vertebrae" for v in
       ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8",
        "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]},
}


def normalize_name(name: str) -> str:
    """Normalise a structure name to a canonical token key.

    Lower case, split on anything that is not a letter or digit (and between letters and digits),
    expand laterality abbreviations ("L", "rt") and common spellings, drop stop words, and sort the
    tokens, so "Kidney L", "left_kidney" and "kidney_left" all give ``"kidney left"``.
    """
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name).strip())
    tokens = re.findall(r"[a-z]+|[0-9]+", text.lower())
    tokens = [_TOKEN_ALIASES.get(t, t) for t in tokens if t not in _STOP_TOKENS]
    return " ".join(sorted(tokens))


def canonical_key(name: str) -> str:
    """Normalised key of the canonical structure a scheme name denotes (aliases applied)."""
    key = normalize_name(name)
    return _ALIAS_KEYS.get(key, key)


_ALIAS_KEYS = {normalize_name(a): normalize_name(t) for a, t in _ALIASES.items()}
_ALIAS_KEYS.update({normalize_name(f"{a} {side}"): normalize_name(f"{t} {side}")
                    for a, t in _LATERAL_ALIASES.items() for side in ("left", "right")})


_PART_OF_KEYS = {normalize_name(child): normalize_name(parent) for child, parent in PART_OF.items()}


def ancestors(key: str) -> list[str]:
    """Canonical keys of the structures containing ``key``, nearest first."""
    chain, seen = [], {key}
    while key in _PART_OF_KEYS and _PART_OF_KEYS[key] not in seen:
        key = _PART_OF_KEYS[key]
        chain.append(key)
        seen.add(key)
    return chain


def singular(text: str) -> str:
    """English plural -> singular, word by word ("adrenal glands" -> "adrenal gland", "arteries" ->
    "artery"); words that are not plurals ("gluteus", "vertebrae", "pancreas") stay."""
    words = []
    for word in re.split(r"(\W+|_)", text):
        low = word.lower()
        if low.endswith("ies") and len(low) > 4:
            word = word[:-3] + "y"
        elif low.endswith("s") and not low.endswith(("ss", "us", "is", "as")) and len(low) > 3:
            word = word[:-1]
        words.append(word)
    return "".join(words)
