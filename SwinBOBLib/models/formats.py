"""Checkpoint files of every family SwinBOB runs, read safely, and what each one tells.

Families (``kind``), all read with ``torch.load(..., weights_only=True)``:

* ``swinbob``: ``{"state_dict", "swinbob": metadata}`` written by :func:`~SwinBOBLib.models.loading.save_checkpoint`.
* ``ukbob_trainer``: the UK_BOB / Swin-UNETR research trainer's ``{"epoch", "best_acc",
  "state_dict"}``, optionally with ``"optimizer"``, ``"scheduler"`` and ``"args"`` (the argparse
  options as a dict or an ``argparse.Namespace``: the only class allowed through the safe
  unpickler, it holds data, never code). ``args`` give the preprocessing they were trained with.
* ``lightning``: a PyTorch Lightning checkpoint (``state_dict`` with ``model.`` prefixes).
* ``state_dict``: a plain ``{name: tensor}`` or a wrapper (``model``/``network``/``module.``).
* ``bundle``: a MONAI bundle folder or zip: ``configs/inference.json`` (or ``.yaml``) gives the
  network arguments, ``Spacingd`` pixdim, the intensity transform, the inferer's ROI and overlap
  and the output activation; ``configs/metadata.json`` the MONAI version (hence the patch-merging
  variant) and the input modality; ``models/model.pt`` the weights. Config expressions (``$...``)
  are never evaluated: only literals and ``@name`` references are read.

:func:`read_checkpoint` returns a :class:`CheckpointFile`; :func:`~SwinBOBLib.models.loading.load_checkpoint` turns it
into a network and metadata whose every value records where it came from (:data:`SOURCES`).
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

#: Where a metadata value came from, as ``report.json`` and ``swinbob checkpoint info`` say it.
SOURCES = ("metadata", "args", "bundle", "option", "weights", "assumed")


#: Modality each label scheme's models are trained on (for the CT-vs-MRI warning); others: unknown.
SCHEME_MODALITY = {"btcv": "CT", "total": "CT", "ukbob": "MR", "total_mr": "MR", "brats": "MR"}


@dataclass
class CheckpointFile:
    """What a checkpoint file holds, before a network is built.

    Attributes:
        path: the file or bundle.
        kind: ``swinbob``, ``ukbob_trainer``, ``lightning``, ``state_dict`` or ``bundle``.
        payload: what ``torch.load`` returned for the weights.
        stored: SwinBOB metadata (kind ``swinbob``), else empty.
        told: metadata fields the file states outside SwinBOB metadata (UK_BOB ``args`` or the
            bundle), with ``told_by`` naming the source (``args`` or ``bundle``).
        notes: field -> how it was read (e.g. "UK_BOB trainer: MONAI before 1.5").
        details: file facts for the summary (epoch, best_acc, bundle version, MONAI version).
    """

    path: Path
    kind: str
    payload: Any
    stored: dict = field(default_factory=dict)
    told: dict = field(default_factory=dict)
    told_by: str = ""
    notes: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


def _allow_namespace():
    """Let ``argparse.Namespace`` (plain data) through the weights-only unpickler, nothing else."""
    allow = getattr(torch.serialization, "safe_globals", None)
    return allow([argparse.Namespace]) if allow is not None else contextlib.nullcontext()


def safe_load(file: str | os.PathLike | _io.BytesIO, source: str) -> Any:
    """``torch.load(file, weights_only=True)`` (tensors, plain containers, argparse.Namespace).

    Raises:
        ValueError: corrupt file, or one that needs pickled objects or code (never run).
    """
    try:
        with _allow_namespace():
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(str(error))
        if reason is None:
            raise ValueError(f"{source}: not a readable PyTorch checkpoint{_looks_like(file)} (corrupt or not a "
                             "torch.save file)") from None
        raise ValueError(f"{source}: refused to load: the checkpoint contains pickled objects or code "
                         f"that a safe (weights_only) load does not allow ({reason}). Re-save it "
                         "as a plain state dict: torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{source}: not a readable PyTorch checkpoint ({error})") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, struct.error) as error:
        # The unpickler reading bytes that are no pickle (a text file, an HTML error page) fails
        # with a bare KeyError: 101 and the like; name the file and what it is instead.
        raise ValueError(f"{source}: not a readable PyTorch checkpoint{_looks_like(file)} (corrupt or not a "
                         f"torch.save file; {type(error).__name__}: {error})") from None


def _looks_like(file) -> str:
    """`` (a text file starting 'hello ...')`` for a file that is text, else ``""``."""
    try:
        if isinstance(file, _io.BytesIO):
            head = file.getvalue()[:60]
        else:
            with open(file, "rb") as stream:
                head = stream.read(60)
        text = head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if not text or not all(c.isprintable() or c.isspace() for c in text):
        return ""
    return f" (a text file starting {text.split(chr(10))[0][:40]!r})"


def _unpickling_reason(message: str) -> str | None:
    """The offending global/class named by torch's weights-only unpickler, or None for plain corruption."""
    for line in message.splitlines():
        lowered = line.lower()
        if "global" in lowered or "unsupported class" in lowered or "reduce" in lowered:
            return line.strip()
    return None


def classify(path: Path, payload: Any) -> CheckpointFile:
    """The :class:`CheckpointFile` of a loaded ``torch.load`` result (see the module docstring)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("swinbob"), Mapping):
        return CheckpointFile(path, "swinbob", payload, stored=dict(payload["swinbob"]))
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        if "pytorch-lightning_version" in payload or "optimizer_states" in payload:
            return CheckpointFile(path, "lightning", payload,
                                  details={"lightning_version": payload.get("pytorch-lightning_version")})
        if {"epoch", "best_acc", "args"} & set(payload):
            return _trainer_file(path, payload)
    return CheckpointFile(path, "state_dict", payload)


def _trainer_file(path: Path, payload: Mapping) -> CheckpointFile:
    args = payload.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    details = {k: payload[k] for k in ("epoch", "best_acc") if isinstance(payload.get(k), (int, float))}
    details["has_optimizer"] = "optimizer" in payload
    details["has_scheduler"] = "scheduler" in payload
    told, notes = values_from_args(args) if isinstance(args, Mapping) else ({}, {})
    details["has_args"] = isinstance(args, Mapping)
    # The trainer's environment pins MONAI 07de215c (before 1.5): the legacy patch merging.
    told["variant"] = "legacy"
    notes["variant"] = "UK_BOB / Swin-UNETR trainer checkpoint: trained with MONAI < 1.5"
    return CheckpointFile(path, "ukbob_trainer", payload, told=told, told_by="args", notes=notes, details=details)


def values_from_args(args: Mapping[str, Any]) -> tuple[dict, dict]:
    """Metadata fields from the UK_BOB trainer's argparse options, and notes on how.

    ``a_min/a_max/b_min/b_max`` -> ``ct_window`` intensity (their ``ScaleIntensityRanged`` with
    clipping), ``space_x/y/z`` -> target spacing (mm), ``roi_x/y/z`` -> ROI (one edge; the
    largest with a note when they differ), ``infer_overlap`` -> overlap.
    """
    told, notes = {}, {}
    window = [args.get(k) for k in ("a_min", "a_max", "b_min", "b_max")]
    if all(isinstance(v, (int, float)) for v in window):
        told["intensity"] = "ct_window"
        told["intensity_params"] = dict(zip(("a_min", "a_max", "b_min", "b_max"), map(float, window)), clip=True)
    spacing = [args.get(k) for k in ("space_x", "space_y", "space_z")]
    if all(isinstance(v, (int, float)) for v in spacing):
        told["target_spacing_mm"] = tuple(float(v) for v in spacing)
    roi = [args.get(k) for k in ("roi_x", "roi_y", "roi_z")]
    if all(isinstance(v, int) for v in roi):
        told["roi_size"] = roi[0] if len(set(roi)) == 1 else tuple(roi)
    if isinstance(args.get("infer_overlap"), (int, float)):
        told["overlap"] = float(args["infer_overlap"])
    return told, notes
