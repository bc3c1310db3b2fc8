"""Per-structure checks beyond SOLF (laterality, components, holes, slice continuity, entropy),
their verdicts, the cohort-size warning, and `solf check` refusing bounds of another scheme."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from SwinBOBLib.cli import solf as commands
from SwinBOBLib.solf.bounds import fit_bounds
from SwinBOBLib.solf import checks
from SwinBOBLib.solf.morphology import surface_values
from SwinBOBLib.solf.checks import (
    BOUNDED_FEATURES,
    CHECKS,
    STRUCTURAL_CHECKS,
    check_flags,
    cohort_size_warning,
    combined_verdict,
    image_disagreement,
    minimum_cohort,
    partner_labels,
    structure_checks,
    superior_axis,
)

RAS = np.diag([2.0, 2.0, 3.0, 1.0])  # world +x is the patient's right; the array x index grows along it
KIDNEY_RIGHT, KIDNEY_LEFT, LIVER = 2, 3, 5
NAMES = {KIDNEY_RIGHT: "kidney_right", KIDNEY_LEFT: "kidney_left", LIVER: "liver"}


def body_with_kidneys(swap: bool = False) -> np.ndarray:
    """A 40x20x20 body (label 66) with a kidney on each side: world x > 0 is the patient's right."""
    labels = np.zeros((40, 20, 20), np.uint8)
    labels[2:38, 2:18, 2:18] = 66
    right, left = (slice(26, 32), slice(8, 14)) if not swap else (slice(8, 14), slice(26, 32))
    labels[right, 6:12, 6:14] = KIDNEY_RIGHT
    labels[left, 6:12, 6:14] = KIDNEY_LEFT
    return labels


def test_laterality_sees_a_left_right_swap():
    clean = structure_checks(body_with_kidneys(), RAS)
    assert clean[KIDNEY_LEFT]["lateral_offset_mm"] > 0 > clean[KIDNEY_RIGHT]["lateral_offset_mm"]
    swapped = structure_checks(body_with_kidneys(swap=True), RAS)
    name = lambda label: NAMES.get(label, "muscle")  # noqa: E731
    assert check_flags(clean, {}, name, ["laterality"]) == {KIDNEY_RIGHT: [], KIDNEY_LEFT: [], 66: []}
    verdict = check_flags(swapped, {}, name, ["laterality"])
    assert verdict[KIDNEY_RIGHT] == ["laterality"] and verdict[KIDNEY_LEFT] == ["laterality"] and not verdict[66]


def test_laterality_follows_the_affine():
    flipped = RAS.copy()
    flipped[0, 0] = -2.0  # the array's x index now runs toward the patient's left
    flipped[0, 3] = 78.0
    values = structure_checks(body_with_kidneys(), flipped)
    assert values[KIDNEY_LEFT]["lateral_offset_mm"] < 0  # the same array is now a swap


def test_components_holes_and_slice_gaps_by_hand():
    labels = np.zeros((20, 20, 30), np.uint8)
    labels[4:12, 4:12, 4:24] = LIVER
    solid = structure_checks(labels, RAS)[LIVER]
    assert solid["components"] == 1 and solid["largest_component_fraction"] == 1.0
    assert solid["filled_volume_ratio"] == 1.0 and solid["slice_gap_fraction"] == 0.0
    blob = labels.copy()
    blob[16:18, 16:18, 26:28] = LIVER  # 8 voxels far away
    values = structure_checks(blob, RAS)[LIVER]
    assert values["components"] == 2 and values["largest_component_fraction"] == pytest.approx(1280 / 1288)
    holed = labels.copy()
    holed[7:9, 7:9, 10:12] = 0  # an enclosed 8-voxel cavity
    assert structure_checks(holed, RAS)[LIVER]["filled_volume_ratio"] == pytest.approx(1280 / 1272)
    dropped = labels.copy()
    dropped[:, :, [10, 15]] = 0  # two axial slices (world z is array axis 2) dropped out of 20
    values = structure_checks(dropped, RAS)[LIVER]
    assert values["slice_gap_fraction"] == pytest.approx(2 / 20) and values["components"] == 3


def test_superior_axis_and_mean_entropy():
    permuted = np.array([[0, 0, 2.0, 0], [0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    assert superior_axis(RAS) == 2 and superior_axis(permuted) == 0
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5, 2:5, 2:5] = LIVER
    entropy = np.where(labels == LIVER, 0.4, 0.0).astype(np.float32)
    assert structure_checks(labels, RAS, entropy=entropy)[LIVER]["mean_entropy"] == pytest.approx(0.4)
    assert "mean_entropy" not in structure_checks(labels, RAS)[LIVER]


@pytest.mark.parametrize("call, message", [
    (lambda: structure_checks(np.zeros((4, 4, 4), np.uint8), np.eye(3)), "4x4"),
    (lambda: structure_checks(np.zeros((4, 4, 4), np.uint8), RAS, body_mask=np.ones((4, 4, 5))), "body mask"),
    (lambda: structure_checks(np.zeros((4, 4, 4), np.uint8), RAS, entropy=np.ones((3, 4, 4))), "entropy map"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cohort_bounds_flag_only_beyond_the_cohort():
    rng = np.random.default_rng(0)
    cohort = {}
    for n in range(40):
        labels = np.zeros((20, 20, 30), np.uint8)
        labels[4:12 + rng.integers(0, 2), 4:12, 4:24] = LIVER
        cohort[f"s{n}"] = structure_checks(labels, RAS)
    broken = np.zeros((20, 20, 30), np.uint8)
    broken[4:12, 4:12, 4:24] = LIVER
    broken[:, :, 12] = 0
    cohort["broken"] = structure_checks(broken, RAS)
    bounds = fit_bounds(cohort, 2.0, features=[f for f in BOUNDED_FEATURES if f != "mean_entropy"])
    flags = {s: check_flags(v, bounds, lambda label: "liver") for s, v in cohort.items()}
    # A dropped slice: two pieces, a gap, a detached piece 3 mm away, a notch a closing fills.
    assert flags["broken"][LIVER] == ["components", "continuity", "detached", "closing"]
    assert all(not f[LIVER] for s, f in flags.items() if s != "broken")
    assert combined_verdict({"components", "continuity", "detached"}) and combined_verdict({"laterality"})
    assert not combined_verdict({"components", "continuity"}) and not combined_verdict({"sphericity"})


def test_every_check_is_documented():
    assert set(CHECKS) == {"laterality", "components", "holes", "continuity", "cut_face", "detached", "pits",
                           "cavities", "closing", "partner", "image_inside", "image_outside", "image_enclosed",
                           "entropy"}
    assert all(c.description and c.rule in ("side", "components", "upper", "lower", "outside")
               and c.needs in ("", "image", "entropy", "scheme") for c in CHECKS.values())
    assert set(STRUCTURAL_CHECKS) == {n for n, c in CHECKS.items() if not c.needs}


def test_shape_values_on_known_shapes():
    labels = np.zeros((20, 20, 20), np.int16)
    labels[2:8, 2:8, 2:8] = 1                      # a cube: flat faces, solid
    labels[10:17, 10:17, 10:17] = 2                # a cube with a one-voxel cavity
    labels[13, 13, 13] = 0
    labels[2:5, 12:15, 2:5] = 3                    # two pieces 3 voxels (6 mm) apart
    labels[8:10, 12:15, 2:5] = 3
    labels[12:18, 2:8, 12:18] = 4
    labels[14, 2, 14] = 0                          # a pit in a face: 5 of its 6 neighbours are the structure
    values = structure_checks(labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert values[1]["cut_face"] == 1.0 and values[1]["cavity_fraction"] == 0.0 and values[1]["detached_mm"] == 0.0
    assert values[2]["cavity_fraction"] == 1 / (7 ** 3 - 1)
    assert values[3]["detached_mm"] == 8.0         # voxel 4 to voxel 8 along x at 2 mm
    assert values[4]["pits"] == 1 and values[4]["cavity_fraction"] == 0.0 and values[1]["pits"] == 0
    assert values[3]["closing_gain"] > 0 and values[1]["closing_gain"] == 0.0  # it bridges the gap
    # A ball has no planar face; cut in half, its cut is as large as its largest slice.
    grid = np.indices((24, 24, 24)) - 11.5
    ball = (np.sqrt((grid ** 2).sum(0)) < 9).astype(np.int16)
    assert structure_checks(ball, RAS)[1]["cut_face"] < 0.3
    half = ball.copy()
    half[12:] = 0
    assert structure_checks(half, RAS)[1]["cut_face"] == 1.0
    # ... but not where the image border cuts it: the field of view cuts every structure there.
    assert structure_checks(half[:12], RAS)[1]["cut_face"] < 0.3


def test_partner_ratio_needs_the_scheme_and_the_partner():
    labels = body_with_kidneys()
    assert "partner_log_ratio" not in structure_checks(labels, RAS)[KIDNEY_LEFT]
    partners = partner_labels("ukbob")
    assert partners[KIDNEY_LEFT] == KIDNEY_RIGHT and partners[KIDNEY_RIGHT] == KIDNEY_LEFT and LIVER not in partners
    values = structure_checks(labels, RAS, partners=partners)
    assert values[KIDNEY_LEFT]["partner_log_ratio"] == 0.0 and "partner_log_ratio" not in values[66]
    labels[8:11] = np.where(labels[8:11] == KIDNEY_LEFT, 66, labels[8:11])  # half the left kidney cut away
    values = structure_checks(labels, RAS, partners=partners)
    assert values[KIDNEY_LEFT]["partner_log_ratio"] == pytest.approx(np.log(0.5))
    assert values[KIDNEY_RIGHT]["partner_log_ratio"] == pytest.approx(np.log(2.0))
    # The two-sided rule: below the cohort's range is as wrong as above it.
    bounds = {KIDNEY_LEFT: {"partner_log_ratio": (-0.2, 0.2)}, KIDNEY_RIGHT: {"partner_log_ratio": (-0.2, 0.2)}}
    verdict = check_flags(values, bounds, lambda label: NAMES.get(label, "muscle"), ["partner"])
    assert verdict[KIDNEY_LEFT] == ["partner"] and verdict[KIDNEY_RIGHT] == ["partner"] and not verdict[66]
    assert partner_labels(None) == {}


def test_image_disagreement_sees_tissue_labelled_as_its_neighbour():
    labels = np.zeros((12, 12, 12), np.int16)
    labels[2:10, 2:10, 2:6] = 1                    # an organ (water signal) on top of
    labels[2:10, 2:10, 6:10] = 2                   # fat (fat signal)
    image = np.zeros((12, 12, 12, 2), np.float32)
    image[..., 0][labels == 1] = 0.8
    image[..., 1][labels == 2] = 0.9
    clean = image_disagreement(labels, image)
    assert all(v == {"image_inside": 0.0, "image_outside": 0.0, "image_enclosed": 0.0} for v in clean.values())
    labels[5, 5, 5] = 2                            # an organ voxel labelled fat (a dent at the boundary)
    values = image_disagreement(labels, image)
    assert values[2]["image_inside"] == 1 / (labels == 2).sum()   # fat holding one voxel of organ signal
    assert values[1]["image_outside"] == 1 / (labels == 1).sum()  # organ signal next to the organ, labelled fat
    assert values[1]["image_inside"] == 0.0 and values[2]["image_outside"] == 0.0
    # A dent of one voxel in a flat face: 17 of the 26 directions meet the organ (those along and
    # into the face), so it counts as enclosed; a voxel outside a flat face meets it in 9.
    assert values[1]["image_enclosed"] == 1.0
    # A single-channel image in other units (a CT in HU) is scaled first: the same verdicts.
    ct = np.where(labels == 1, 40.0, -100.0).astype(np.float32)
    ct[5, 5, 5] = 40.0
    assert image_disagreement(labels, ct * 1.0) == image_disagreement(labels, ct)
    assert image_disagreement(labels, ct)[2]["image_inside"] == 1 / (labels == 2).sum()
    # Through structure_checks, only with an image; on another grid it is refused.
    assert "image_inside" in structure_checks(labels, RAS, image=image)[1]
    assert "image_inside" not in structure_checks(labels, RAS)[1]
    with pytest.raises(ValueError, match="image shape"):
        structure_checks(labels, RAS, image=image[:, :, :11])


def _organ_in_fat(channels: int):
    """A 10-voxel organ cube in fat, and an image whose channels tell them apart (a Dixon-like
    water/fat pair, plus in- and opposed-phase with four channels)."""
    labels = np.full((20, 20, 20), 2, np.int16)   # fat all round
    labels[5:15, 5:15, 5:15] = 1                  # the organ
    water, fat = np.where(labels == 1, 0.8, 0.1), np.where(labels == 1, 0.1, 0.9)
    image = np.stack([water, fat, water + fat, np.abs(water - fat)][:channels], axis=-1).astype(np.float32)
    return labels, image


@pytest.mark.parametrize("channels", [2, 4])
def test_image_enclosed_counts_a_hole_refilled_with_another_label(channels):
    labels, image = _organ_in_fat(channels)
    assert image_disagreement(labels, image)[1]["image_enclosed"] == 0.0
    hole = labels.copy()
    hole[9:11, 9:11, 9:11] = 2                    # 8 organ voxels labelled fat; the image still shows organ
    values = image_disagreement(hole, image)
    assert values[1]["image_enclosed"] == 8.0 and values[2]["image_enclosed"] == 0.0
    # A hole that opens to the surface (a notch from the face inward) is still mostly enclosed:
    notch = labels.copy()
    notch[9:11, 9:11, 5:8] = 2
    assert 0 < image_disagreement(notch, image)[1]["image_enclosed"] <= 12
    # Voxels labelled otherwise whose image is what their label says (real fat inside the organ) are
    # anatomy, not a hole:
    fat_inside = image.copy()
    fat_inside[9:11, 9:11, 9:11] = image[0, 0, 0]
    assert image_disagreement(hole, fat_inside)[1]["image_enclosed"] == 0.0
    # An erosion leaves a shell of organ signal labelled fat around the organ: not enclosed by it.
    eroded = np.full_like(labels, 2)
    eroded[6:14, 6:14, 6:14] = 1
    assert image_disagreement(eroded, image)[1]["image_enclosed"] == 0.0
    # Through structure_checks with the image; a check of CHECKS with the upper rule.
    assert structure_checks(hole, RAS, image=image)[1]["image_enclosed"] == 8.0
    assert CHECKS["image_enclosed"].needs == "image" and "holes" in CHECKS["image_enclosed"].catches


def test_cohort_size_warning():
    assert minimum_cohort(2) == 100 and minimum_cohort(1) == 200 and minimum_cohort(5) == 40
    assert cohort_size_warning(100, 2) is None and cohort_size_warning(20, 0) is None
    warning = cohort_size_warning(20, 2)
    assert "20 samples" in warning and "at least 100" in warning


# ----------------------------------------------------------------------------- solf check's scheme


SAMPLES = Path(__file__).resolve().parents[1] / "Data" / "totalsegmentator-samples"


def _ukbob_bounds(tmp_path) -> Path:
    from SwinBOBLib.solf import Bounds, save_bounds

    bounds = Bounds({label: {"normalized_volume": (0, 1), "sphericity": (0, 1), "eccentricity": (0, 1)}
                     for label in range(1, 72)}, epsilon=2, n_samples=100,
                    presence={label: 1.0 for label in range(1, 72)}, scheme="ukbob")
    save_bounds(bounds, tmp_path / "bounds.json")
    return tmp_path / "bounds.json"


def test_check_refuses_bounds_of_another_scheme(tmp_path, capsys):
    bounds = str(_ukbob_bounds(tmp_path))
    mr = str(SAMPLES / "example_seg_mr.nii.gz")
    assert commands.main(["solf", "check", mr, "--bounds", bounds, "--scheme", "total_mr"]) == 1
    assert "cannot be checked against SOLF bounds of 'ukbob'" in capsys.readouterr().err
    assert commands.main(["solf", "check", mr, "--bounds", bounds]) == 1  # no --scheme: still refused
    err = capsys.readouterr().err
    assert "another scheme" in err and "organs only" in err  # and the --body auto trap is named


def test_check_accepts_a_map_of_the_bounds_scheme(tmp_path, capsys):
    labels = np.zeros((30, 30, 30), np.uint8)
    for label in range(1, 72):  # every ukbob structure present
        x, y = divmod(label, 9)
        labels[x * 3:x * 3 + 2, y * 3:y * 3 + 2, 2:10] = label
    path = tmp_path / "all.nii.gz"
    nib.save(nib.Nifti1Image(labels, RAS), path)
    code = commands.main(["solf", "check", str(path), "--bounds", str(_ukbob_bounds(tmp_path)), "--scheme", "ukbob"])
    assert code in (0, commands.EXIT_FLAGGED) and "structures flagged" in capsys.readouterr().out


def test_distribution_figure_has_one_panel_row_per_structure_group(tmp_path):
    from SwinBOBLib.solf.report import plot_distributions, structure_groups

    groups = dict(structure_groups([1, 2, 5, 52, 65, 66], "ukbob"))
    assert groups["organ"] == [1, 2, 5] and groups["body composition"] == [65, 66] and len(groups) == 3
    assert structure_groups([1, 2], None) == [("structures", [1, 2])]
    rng = np.random.default_rng(0)
    cohort = {f"s{n}": {label: {"normalized_volume": rng.uniform(0.01, 0.1), "sphericity": rng.uniform(0.3, 0.8),
                                "eccentricity": rng.uniform(0.2, 0.9)} for label in (1, 2, 65)} for n in range(6)}
    flags = {s: {label: {"inaccurate": False} for label in (1, 2, 65)} for s in cohort}
    plot_distributions(cohort, flags, [1, 2, 65], tmp_path / "d.png", "ukbob")
    import matplotlib.image

    height, width = matplotlib.image.imread(tmp_path / "d.png").shape[:2]
    assert width == 1400 and height > 300


def _random_masks(seed: int, n: int = 60):
    """Random masks with a solid core and scattered voxels: many pieces, holes, pits and notches."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = tuple(int(v) for v in rng.integers(6, 40, 3))
        mask = rng.random(shape) < rng.uniform(0.002, 0.3)
        core = tuple(slice(int(rng.integers(0, v // 2)), int(rng.integers(v // 2 + 1, v + 1))) for v in shape)
        mask[core] = rng.random(mask[core].shape) < rng.uniform(0.9, 1.0)
        yield mask, rng.uniform(0.5, 5.0, 3)


@pytest.mark.parametrize("seed", range(4))
def test_detached_distance_equals_a_distance_transforms(seed):
    """The surface k-d tree gives what a Euclidean distance transform of the whole box gives: each
    other piece's voxel nearest to the largest piece, the farthest of those (anisotropic spacing)."""
    for mask, spacing in _random_masks(seed):
        pieces, count = checks._pieces(mask)
        assert count == ndimage.label(mask, structure=np.ones((3, 3, 3), bool))[1]
        if count < 2:
            assert checks._detached_mm(pieces, count, spacing) == 0.0
            continue
        largest = int(np.argmax(np.bincount(pieces.ravel())[1:])) + 1
        distance = ndimage.distance_transform_edt(pieces != largest, sampling=spacing)
        nearest = [distance[pieces == label].min() for label in range(1, count + 1) if label != largest]
        assert checks._detached_mm(pieces, count, spacing) == pytest.approx(max(nearest), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_hole_and_surface_values_equal_scipys_morphology(seed):
    """Slice holes, cavities, pits and the closing, computed with shifted copies and cc3d, equal
    scipy.ndimage's fill_holes (slice by slice and 3D), convolution and binary_closing."""
    faces = ndimage.generate_binary_structure(3, 1)
    for mask, _spacing in _random_masks(seed, 40):
        voxels = mask.sum()
        filled = mask.copy()
        for axis in range(3):
            for index in range(mask.shape[axis]):
                plane = np.take(mask, index, axis=axis)
                holes = ndimage.binary_fill_holes(plane) & ~plane
                np.moveaxis(filled, axis, 0)[index] |= holes
        cavities = (ndimage.binary_fill_holes(mask) & ~mask).sum()
        padded = np.pad(mask, 3)
        neighbours = ndimage.convolve(padded.astype(np.int8), faces.astype(np.int8), mode="constant") - padded
        closed = ndimage.binary_closing(padded, faces, iterations=2)
        values = {**checks._hole_values(mask), **surface_values(mask)}
        assert values["filled_volume_ratio"] == pytest.approx(filled.sum() / voxels, abs=1e-12)
        assert values["cavity_fraction"] == pytest.approx(cavities / voxels, abs=1e-12)
        assert values["pits"] == int((~padded & (neighbours >= 5)).sum())
        assert values["closing_gain"] == pytest.approx((closed.sum() - voxels) / voxels, abs=1e-12)
