"""What produced a result, as ``report.json`` and the console say it: the model (a demo model says
so plainly), its checksum and metadata.
"""

from __future__ import annotations

from pathlib import Path

from SwinBOBLib.inference.provenance import model_structures


def model_record(metadata, path=None) -> dict:
    """What produced the labels, for report.json and every display: ``name``, ``demo`` (True for a
    demonstration model such as the bundled one), ``description``, ``network``, ``path``,
    ``scheme`` and ``structures`` (the names of the structures the model can output; any other
    structure of the scheme is absent from its label maps)."""
    name = getattr(metadata, "name", None) or (Path(path).stem if path else metadata.network)
    description = getattr(metadata, "description", None) or (
        f"{metadata.network} checkpoint, {metadata.out_channels} output channels in the "
        f"'{metadata.scheme}' scheme")
    return {"name": name, "demo": bool(getattr(metadata, "demo", False)), "description": description,
            "network": metadata.network, "path": str(path) if path else None,
            "scheme": metadata.scheme, "structures": model_structures(metadata)}


def model_notice(model: dict | None) -> str | None:
    """One line naming the model; a demo model says it is not Swin-BOB."""
    if not model:
        return None
    if model.get("demo"):
        return f"DEMO MODEL {model['name']}: {model['description']}"
    return f"model {model['name']}: {model['description']}"
