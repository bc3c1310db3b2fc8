"""The organ table as a DICOM structured report, TID 1500 Measurement Report (highdicom.sr,
Comprehensive 3D SR): per structure of the SEG one volumetric measurement group that references its
segment and holds the volume (ml), the mean normalised entropy, the SOLF features and the SOLF
verdict (qualitative evaluations: the verdict and, per bounded feature, within or out of bounds).

Which model made it is the observer device and each group's algorithm; which SOLF bounds judged it
is the algorithm of the SOLF measurements (bounds file, its cohort size and the excluded percent).
Codes SNOMED CT and DICOM lack (entropy, SOLF features, verdicts) use the private coding scheme
:data:`CODING_SCHEME`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.outputs.dicom_common import (
    MANUFACTURER,
    SERIES_NUMBERS,
    model_version,
    model_words,
    new_uid,
    save_dataset,
    series_description,
    source_datasets,
)
from SwinBOBLib.outputs.dicom_seg import coded
from SwinBOBLib.solf.bounds import flag
from SwinBOBLib.solf.comparable import judge

#: Private coding scheme designator of SwinBOB's own concepts (DICOM's "99" prefix for local schemes).
CODING_SCHEME = "99SWINBOB"


#: Measurements of a group: organ-table column -> (code value, code meaning, UCUM unit, unit meaning).
#: Code values stay within 16 characters (longer ones become Long Code Value, which readers handle badly).
MEASUREMENTS = {
    "volume_ml": None,  # SNOMED CT Volume, in ml (below)
    "mean_entropy": ("ENTROPY_MEAN", "Mean normalised entropy", "1", "no units"),
    "normalized_volume": ("NORMVOL", "SOLF normalised volume", "1", "no units"),
    "sphericity": ("SPHERICITY", "SOLF sphericity", "1", "no units"),
    "eccentricity": ("ECCENTRICITY", "SOLF eccentricity", "1", "no units"),
}


#: Procedure reported by modality (SNOMED CT), imaging procedure for any other.
PROCEDURES = {"MR": ("113091000", "Magnetic resonance imaging"), "CT": ("77477000", "Computerized axial tomography"),
              None: ("363679005", "Imaging procedure")}


#: SOLF verdicts (qualitative evaluation values).
VERDICTS = {"plausible": "Plausible", "inaccurate": "Inaccurate", "missing": "Missing",
            "not comparable": "Not comparable", "not_judged": "Not judged"}


def _code(value: str, meaning: str, scheme: str = CODING_SCHEME):
    import highdicom as hd

    return hd.sr.CodedConcept(value, scheme, meaning)


def solf_verdicts(rows: Sequence[Mapping], bounds, labelmap=None, spacing=None) -> dict[int, dict]:
    """``{label: {"verdict": plausible|inaccurate|not comparable|not_judged, "out_of_range": [features],
    "judged": [features]}}`` for the structures present in ``rows`` (the organ table), judged by
    ``bounds`` (None: all not judged). With the scan's ``labelmap`` and ``spacing``, only the features
    that compare with the bounds' cohort are judged (:func:`~SwinBOBLib.solf.comparable.judge`)."""
    present = [r for r in rows if r.get("voxels")]
    features = {int(r["index"]): {f: float(r[f]) for f in (bounds.features if bounds else ()) if r.get(f) != ""}
                for r in present}
    if bounds is not None and labelmap is not None:
        complete = {k: v for k, v in features.items() if len(v) == len(bounds.features)}
        judged = judge(complete, bounds, labelmap, spacing)
        return {int(r["index"]): {k: judged[int(r["index"])][k] for k in ("verdict", "out_of_range", "judged")}
                if int(r["index"]) in judged else {"verdict": "not_judged", "out_of_range": [], "judged": []}
                for r in present}
    judged = flag({k: v for k, v in features.items() if bounds and len(v) == len(bounds.features)}, bounds) \
        if bounds is not None else {}
    verdicts = {}
    for row in present:
        entry = judged.get(int(row["index"]))
        verdict = "not_judged" if entry is None else "inaccurate" if entry["inaccurate"] else "plausible"
        verdicts[int(row["index"])] = {"verdict": verdict, "out_of_range": entry["out_of_range"] if entry else [],
                                       "judged": list(bounds.features) if entry else []}
    return verdicts


def _algorithms(report: dict, bounds, bounds_name: str | None):
    import highdicom as hd

    name, demo = model_words(report)
    model = hd.sr.AlgorithmIdentification(name=(f"DEMO {name}" if demo else name)[:64], version=model_version(report))
    if bounds is None:
        return model, None
    parameters = [f"bounds {bounds_name or 'given'}", f"cohort N={bounds.n_samples}", f"excluded {bounds.epsilon:g}%"]
    return model, hd.sr.AlgorithmIdentification(name="SOLF", version="1", parameters=parameters)


def _measurements(row: Mapping, model, solf) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    found = []
    for column, spec in MEASUREMENTS.items():
        if row.get(column) in ("", None):
            continue
        if spec is None:
            name, unit = codes.SCT.Volume, hd.sr.CodedConcept("ml", "UCUM", "milliliter")
        else:
            name, unit = _code(spec[0], spec[1]), hd.sr.CodedConcept(spec[2], "UCUM", spec[3])
        algorithm = solf if column in ("normalized_volume", "sphericity", "eccentricity") and solf else model
        found.append(hd.sr.Measurement(name=name, value=float(row[column]), unit=unit, algorithm_id=algorithm))
    return found


def _evaluations(verdict: Mapping, bounds) -> list:
    import highdicom as hd

    items = [hd.sr.QualitativeEvaluation(_code("SOLF_VERDICT", "SOLF verdict"),
                                         _code(verdict["verdict"].upper(), VERDICTS[verdict["verdict"]]))]
    if verdict["verdict"] != "not_judged":
        for feature in verdict.get("judged", bounds.features):
            out = feature in verdict["out_of_range"]
            items.append(hd.sr.QualitativeEvaluation(
                _code(f"BND_{MEASUREMENTS[feature][0]}", f"SOLF {feature.replace('_', ' ')} bounds"),
                _code("OUT_OF_BOUNDS" if out else "WITHIN_BOUNDS", "Out of bounds" if out else "Within bounds")))
    return items


def build_report(rows: Sequence[Mapping], seg, present: Sequence[int], image, scheme: str, report: dict,
                 bounds=None, bounds_name: str | None = None, labelmap=None):
    """The TID 1500 report of the organ table ``rows`` (:func:`~SwinBOBLib.outputs.organs.organ_rows`).

    Args:
        seg: the DICOM SEG dataset the groups reference; ``present[n - 1]`` is the label of its
            segment ``n`` (:func:`~SwinBOBLib.outputs.dicom_seg.build_segmentation`).
        bounds: SOLF :class:`~SwinBOBLib.solf.bounds.Bounds` judging the structures, or None.
        bounds_name: how the report names the bounds (their file name).
        labelmap: the scan's label map; with it only the features that compare with the bounds'
            cohort are judged (a slab against whole-body bounds: "not comparable").
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = source_datasets(image)
    s = get_scheme(scheme)
    by_label = {int(r["index"]): r for r in rows}
    verdicts = solf_verdicts(rows, bounds, labelmap, image.spacing)
    model, solf = _algorithms(report, bounds, bounds_name)
    series = hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)
    groups = []
    for number, label in enumerate(present, start=1):
        structure, description = s[label], seg.SegmentSequence[number - 1]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=description.TrackingUID, identifier=structure.name),
            referenced_segment=hd.sr.ReferencedSegment(seg.SOPClassUID, seg.SOPInstanceUID, number, source_series=series),
            finding_type=coded(structure.type), algorithm_id=model,
            finding_sites=[hd.sr.FindingSite(coded(structure.type),
                                             laterality=coded(structure.modifier) if structure.modifier else None)],
            measurements=_measurements(by_label.get(label, {}), model, solf),
            qualitative_evaluations=_evaluations(verdicts.get(label, {"verdict": "not_judged"}), bounds)))
    name, demo = model_words(report)
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=new_uid(), name=MANUFACTURER, manufacturer_name=MANUFACTURER,
                                                       model_name=(f"DEMO {name}" if demo else name)[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    procedure = PROCEDURES.get(sources[0].get("Modality"), PROCEDURES[None])
    content = hd.sr.MeasurementReport(observation_context=context, procedure_reported=_code(*procedure, "SCT"),
                                      imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=content[0], series_instance_uid=new_uid(), series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=new_uid(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=series_description("SR", report))


def write_report(rows, seg, present, image, scheme: str, report: dict, path: Path, bounds=None,
                 bounds_name: str | None = None) -> Path:
    """:func:`build_report` written to ``path`` (atomically)."""
    return save_dataset(build_report(rows, seg, present, image, scheme, report, bounds, bounds_name), path)


def read_report_table(path: Path) -> dict[str, dict]:
    """A report written here read back: ``{structure name: {column: value, "verdict": ...,
    "segment_number": n}}`` (columns of :data:`MEASUREMENTS`)."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    names = {spec[1] if spec else "Volume": column for column, spec in MEASUREMENTS.items()}
    table = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        row = {"segment_number": int(group.referenced_segment.referenced_segment_numbers[0])}
        for measurement in group.get_measurements():
            row[names[measurement.name.meaning]] = float(measurement.value)
        for evaluation in group.get_qualitative_evaluations():
            if evaluation.name.value == "SOLF_VERDICT":
                row["verdict"] = evaluation.value.value.lower()
        table[group.tracking_identifier] = row
    return table
