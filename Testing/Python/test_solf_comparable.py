"""SOLF verdicts on comparable features only: a scan like the bounds' cohort is judged on all three,
a slab or another voxel size only on what compares, and a structure cut by the field of view is
"not comparable" rather than "inaccurate"."""

import json

import numpy as np
import pytest
from scipy import ndimage

from SwinBOBLib import labels, phantom
from SwinBOBLib.cli import main
from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.io.image import Image
from SwinBOBLib.io.writers import save_image
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS
from SwinBOBLib.solf.bounds import load_bounds
from SwinBOBLib.solf.comparable import VERDICTS, cut_by_edge, judge, reason_text, scan_reasons
from SwinBOBLib.solf.features import organ_features

UKBOB = labels.get_scheme("ukbob")
LIVER, SPLEEN = UKBOB.lookup("liver"), UKBOB.lookup("spleen")


@pytest.fixture(scope="module")
def bounds():
    return load_bounds(DEFAULT_BOUNDS)


@pytest.fixture(scope="module")
def body(bounds):
    """A phantom the bundled bounds' cohort never held (another seed), on the cohort's grid."""
    labelmap, affine, _ = phantom.make_labels(size="small", seed=987)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    assert np.allclose(spacing, bounds.cohort["spacing_mm"], rtol=0.2)
    return labelmap, affine, spacing


def test_a_scan_like_the_cohort_is_judged_on_every_feature(body, bounds):
    labelmap, _, spacing = body
    assert scan_reasons(bounds, spacing, labelmap.shape) == {}
    verdicts = judge(organ_features(labelmap, spacing), bounds, labelmap, spacing)
    inside = [v for label, v in verdicts.items() if label not in cut_by_edge(labelmap)]
    assert inside and all(v["judged"] == ["normalized_volume", "sphericity", "eccentricity"] for v in inside)
    assert {v["verdict"] for v in verdicts.values()} <= set(VERDICTS)
    assert all(v["verdict"] != "not comparable" or label in cut_by_edge(labelmap) for label, v in verdicts.items())
    plausible = sum(v["verdict"] == "plausible" for v in verdicts.values())
    judged = sum(v["verdict"] != "not comparable" for v in verdicts.values())
    assert plausible >= 0.8 * judged and verdicts[LIVER]["verdict"] == "plausible"


def test_a_swollen_spleen_is_inaccurate_and_a_removed_one_missing(body, bounds):
    labelmap, _, spacing = body
    swollen = labelmap.copy()
    grown = ndimage.binary_dilation(labelmap == SPLEEN, iterations=4) & (labelmap != LIVER)
    swollen[grown] = SPLEEN
    entry = judge(organ_features(swollen, spacing), bounds, swollen, spacing)[SPLEEN]
    assert entry["verdict"] == "inaccurate" and len(entry["out_of_range"]) >= 2
    assert reason_text(entry).startswith("out of range: ")
    removed = np.where(labelmap == SPLEEN, UKBOB.lookup("inner_fat"), labelmap)
    verdicts = judge(organ_features(removed, spacing), bounds, removed, spacing)
    assert verdicts[SPLEEN]["verdict"] == "missing"


def test_a_slab_is_not_judged_on_normalised_volume_nor_on_what_it_cuts(body, bounds):
    labelmap, _, spacing = body
    z = np.flatnonzero((labelmap == UKBOB.lookup("kidney_left")).any(axis=(0, 1)))
    slab = np.ascontiguousarray(labelmap[:, :, z.min() - 12: z.max() + 12])  # the kidney inside, 12 slices each side
    reasons = scan_reasons(bounds, spacing, slab.shape)
    assert set(reasons) == {"coverage"} and "normalised volume" in reasons["coverage"]
    verdicts = judge(organ_features(slab, spacing), bounds, slab, spacing)
    kidney = verdicts[UKBOB.lookup("kidney_left")]
    assert kidney["judged"] == ["sphericity", "eccentricity"] and kidney["verdict"] in ("plausible", "inaccurate")
    cut = [label for label in cut_by_edge(slab) if label in verdicts]
    assert cut and all(verdicts[label]["verdict"] == "not comparable" for label in cut)
    assert "cut by the edge of the field of view" in reason_text(verdicts[cut[0]])
    assert not any(v["verdict"] == "missing" for v in verdicts.values())  # absent from a slab is not missing


def test_another_voxel_size_keeps_sphericity_out_and_a_cut_structure_is_not_comparable(body, bounds):
    labelmap, _, spacing = body
    fine = tuple(s / 2 for s in spacing)  # the same voxels read as half the size: 2x off the cohort
    reasons = scan_reasons(bounds, fine, labelmap.shape)
    assert "spacing" in reasons and "sphericity depends on the voxel size" in reasons["spacing"]
    verdicts = judge(organ_features(labelmap, fine), bounds, labelmap, fine)
    assert all("sphericity" not in v["judged"] for v in verdicts.values())
    alone = {label for label, v in verdicts.items() if v["verdict"] == "not comparable"}
    assert alone == {label for label in verdicts if label in cut_by_edge(labelmap)} | \
        {label for label, v in verdicts.items() if len(v["judged"]) < 2 and v["verdict"] != "missing"}


def test_solf_check_prints_each_verdict_and_flags_only_what_was_judged(body, bounds, tmp_path, capsys):
    labelmap, affine, spacing = body
    z = np.flatnonzero((labelmap == LIVER).any(axis=(0, 1)))
    slab = np.ascontiguousarray(labelmap[:, :, z.min() + 3: z.min() + 9])
    corner = affine.copy()
    corner[:3, 3] = affine[:3, :3] @ np.array([0, 0, z.min() + 3]) + affine[:3, 3]
    path = tmp_path / "slab.nii.gz"
    save_image(Image(slab.astype(np.uint8), corner), path)
    assert main(["solf", "check", str(path), "--bounds", str(DEFAULT_BOUNDS), "--partial", "--json"]) in (0, 3)
    verdicts = json.loads(capsys.readouterr().out)
    assert verdicts[str(LIVER)]["verdict"] == "not comparable"
    assert main(["solf", "check", str(path), "--bounds", str(DEFAULT_BOUNDS), "--partial"]) in (0, 3)
    out = capsys.readouterr().out
    assert "not comparable" in out and "cut by the edge of the field of view" in out


def test_bounds_without_a_recorded_cohort_judge_every_feature_as_before(body, bounds, tmp_path):
    labelmap, _, spacing = body
    data = json.loads(DEFAULT_BOUNDS.read_text(encoding="utf-8"))
    data.pop("cohort", None)
    path = tmp_path / "bounds.json"
    write_text_atomic(path, json.dumps(data))
    legacy = load_bounds(path)
    z = np.flatnonzero((labelmap == UKBOB.lookup("kidney_left")).any(axis=(0, 1)))
    slab = np.ascontiguousarray(labelmap[:, :, z.min() - 12: z.max() + 12])
    assert scan_reasons(legacy, spacing, slab.shape) == {}
    verdicts = judge(organ_features(slab, spacing), legacy, slab, spacing)
    inside = [v for label, v in verdicts.items() if label not in cut_by_edge(slab) and v["verdict"] != "missing"]
    assert inside and all(len(v["judged"]) == 3 for v in inside)
    assert any(v["verdict"] == "missing" for v in verdicts.values())  # as before: absent from the slab
