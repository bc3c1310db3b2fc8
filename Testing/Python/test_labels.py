"""Label schemes: names, synonyms, colours, remapping between schemes, channel layouts."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from SwinBOBLib import io, labels

SHARED_LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "labels"
PACKAGED = Path(labels.__file__).parent / "data" / "schemes"


def _tsv(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {int(i): name for i, name in rows}


def test_ukbob_scheme_matches_totalvibe_numbering():
    table = _tsv(PACKAGED / "ukbob.tsv")
    scheme = labels.get_scheme("ukbob")
    assert len(scheme) == 71
    assert 20 not in scheme.structures and scheme.max_index == 72
    assert {i: s.name for i, s in scheme.structures.items()} == {i: n for i, n in table.items() if i and n != "unused"}
    assert scheme[5].name == "liver" and scheme[72].name == "bone_other"


@pytest.mark.parametrize("packaged, shared", [
    ("ukbob.tsv", "totalvibe_ukbob.tsv"), ("total.tsv", "totalsegmentator_total.tsv"),
    ("total_mr.tsv", "totalsegmentator_total_mr.tsv"), ("btcv.tsv", "btcv.tsv"), ("amos.tsv", "amos.tsv")])
def test_packaged_schemes_equal_the_reference_tables(packaged, shared):
    if not (SHARED_LABELS / shared).exists():
        pytest.skip("../shared/labels not beside this checkout")
    assert _tsv(PACKAGED / packaged) == _tsv(SHARED_LABELS / shared)


@pytest.mark.parametrize("scheme, count", [("ukbob", 71), ("total", 117), ("total_mr", 50), ("btcv", 13),
                                           ("amos", 15), ("mrsegmentator", 40), ("zeroshot10", 10)])
def test_scheme_sizes(scheme, count):
    assert len(labels.get_scheme(scheme)) == count


def test_every_ukbob_structure_has_group_distinct_colour_and_display_name():
    scheme = labels.get_scheme("ukbob")
    groups = {s.group for s in scheme.structures.values()}
    assert groups == set(labels.GROUPS)
    colours = [s.color for s in scheme.structures.values()]
    closest = min(math.dist(a, b) for a, b in itertools.combinations(colours, 2))
    assert closest > 20, "two structures share nearly the same colour"
    assert all(s.display_name and s.display_name[0].isupper() for s in scheme.structures.values())
    assert scheme[scheme.lookup("liver")].group == "organ"
    assert scheme[scheme.lookup("subcutaneous fat")].group == "body composition"


@pytest.mark.parametrize("name, expected", [
    ("left kidney", "kidney_left"), ("kidney_left", "kidney_left"), ("Kidney L", "kidney_left"),
    ("L kidney", "kidney_left"), ("Right Kidney", "kidney_right"), ("liver", "liver"), ("LIVER", "liver"),
    ("IVC", "inferior_vena_cava"), ("inferior vena cava", "inferior_vena_cava"), ("bladder", "urinary_bladder"),
    ("left psoas", "iliopsoas_left"), ("right autochthonous muscle", "autochthon_right"),
    ("oesophagus", "esophagus"), ("left clavicle", "clavicula_left"), ("intervertebral discs", "IVD"),
    ("Left adrenal gland", "adrenal_gland_left"), ("portal vein", "portal_vein_and_splenic_vein"), (5, "liver"),
])
def test_lookup_by_synonym(name, expected):
    scheme = labels.get_scheme("ukbob")
    assert scheme[scheme.lookup(name)].name == expected


def test_unknown_name_lists_close_matches():
    scheme = labels.get_scheme("ukbob")
    with pytest.raises(labels.UnknownStructureError, match="kidney"):
        scheme.lookup("kidnee left")
    with pytest.raises(labels.UnknownStructureError, match="part of 'intestine'"):
        scheme.lookup("colon")
    with pytest.raises(labels.UnknownStructureError, match="lung_upper_lobe_left"):
        scheme.lookup("left lung")
    with pytest.raises(labels.UnknownStructureError, match="not a structure"):
        scheme.lookup(20)


def test_select_by_names_groups_and_parts():
    scheme = labels.get_scheme("ukbob")
    assert scheme.select("liver, left kidney") == [3, 5]
    assert scheme.select(["left lung"]) == [10, 11]
    muscles = scheme.select("muscle")  # the group, and the structure named "muscle" (issue 14)
    assert [i for i in muscles if scheme[i].group != "muscle"] == [66] and len(muscles) == 11
    assert scheme.select(None) == scheme.indices


def test_unknown_scheme():
    with pytest.raises(labels.UnknownSchemeError, match="available"):
        labels.get_scheme("totalseg_ct_v9")
    assert labels.get_scheme("TotalVibe").name == "ukbob"


def test_remap_total_mr_to_ukbob_on_the_real_sample(samples):
    source = io.load_labelmap(samples / "example_seg_mr.nii.gz", scheme="total_mr")
    out = labels.remap(source.array, "total_mr", "ukbob")
    assert out.shape == source.array.shape and out.dtype == np.uint8
    src, dst = labels.get_scheme("total_mr"), labels.get_scheme("ukbob")
    # Same structure: voxel counts preserved exactly.
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "iliopsoas_left"):
        assert np.count_nonzero(out == dst.lookup(name)) == np.count_nonzero(source.array == src.lookup(name))
    # Merge: colon + small bowel become intestine.
    bowel = np.isin(source.array, [src.lookup("colon"), src.lookup("small_bowel")]).sum()
    assert np.count_nonzero(out == dst.lookup("intestine")) == bowel
    # Structures UKBOB cannot represent (lungs are lobes in UKBOB, vertebrae are split) become 0.
    for name in ("lung_left", "vertebrae"):
        assert not np.any(out[source.array == src.lookup(name)])


def test_remap_total_ct_merges_and_drops(samples):
    source = io.load_labelmap(samples / "example_seg_fast_force_split.nii.gz", scheme="total")
    total = labels.get_scheme("total")
    out = labels.remap(source.array, "total", "ukbob")
    vertebrae = np.isin(source.array, [i for i, s in total.structures.items() if s.name.startswith("vertebrae_")])
    assert vertebrae.any() and not out[vertebrae].any()
    lobes = labels.remap(source.array, "total", "total_mr")
    left_lobes = np.isin(source.array, [total.lookup("lung_upper_lobe_left"), total.lookup("lung_lower_lobe_left")])
    assert np.array_equal(lobes == labels.get_scheme("total_mr").lookup("lung_left"), left_lobes)


def test_adrenal_merge_for_the_zero_shot_table():
    btcv = labels.get_scheme("btcv")
    labelmap = np.array([[[btcv.lookup("adrenal_gland_left"), btcv.lookup("adrenal_gland_right"),
                           btcv.lookup("liver"), btcv.lookup("portal_vein_and_splenic_vein")]]])
    out = labels.remap(labelmap, "btcv", "zeroshot10")
    ag = labels.get_scheme("zeroshot10").lookup("adrenal_glands")
    assert out[0, 0, 0] == ag and out[0, 0, 1] == ag
    assert out[0, 0, 2] == labels.get_scheme("zeroshot10").lookup("liver")
    assert out[0, 0, 3] == 0  # not among the ten organs
    shared = labels.shared_structures("btcv", "amos")
    assert {c.src_name for c in shared} == {s.name for s in btcv.structures.values()} - {"portal_vein_and_splenic_vein"}
    assert len(labels.shared_structures("amos", "zeroshot10")) == 11


@pytest.mark.parametrize("src, dst", [("mrsegmentator", "ukbob"), ("ukbob", "mrsegmentator"), ("amos", "btcv")])
def test_remap_round_trip_keeps_shared_structures(src, dst):
    scheme = labels.get_scheme(src)
    values = np.array(scheme.indices).reshape(1, 1, -1)
    there = labels.remap(values, src, dst)
    back = labels.remap(there, dst, src)
    same = {c.src_index for c in labels.correspondences(src, dst) if c.relation == "same"}
    for index in scheme.indices:
        position = scheme.indices.index(index)
        if index in same:
            assert back[0, 0, position] == index


def test_mrsegmentator_names_resolve_to_ukbob():
    pairs = {c.src_name: c.dst_name for c in labels.correspondences("mrsegmentator", "ukbob")}
    assert pairs["left_autochthonous_muscle"] == "autochthon_left"
    assert pairs["right_iliopsoas_muscle"] == "iliopsoas_right"
    assert pairs["left_iliac_vena"] == "iliac_vena_left"
    assert pairs["colon"] == "intestine"
    assert "spine" not in pairs  # vertebrae as one label cannot be split into bodies/posterior elements


def test_remap_rejects_values_outside_the_source_scheme():
    with pytest.raises(ValueError, match=r"\[20\]"):
        labels.remap(np.array([[[1, 20]]]), "ukbob", "total")
    with pytest.raises(ValueError, match="non-integer"):
        labels.remap(np.array([[[1.5]]]), "ukbob", "total")


def test_channel_layouts():
    compact, full = labels.channel_layout("ukbob", "compact"), labels.channel_layout("ukbob", "full")
    assert compact.num_channels == 72 and full.num_channels == 73
    labelmap = np.array([0, 19, 21, 72])
    channels = compact.labels_to_channels(labelmap)
    assert channels.tolist() == [0, 19, 20, 71]
    assert compact.channels_to_labels(channels).tolist() == labelmap.tolist()
    rows = compact.rows_from(full)
    assert rows.tolist() == [c for c in range(73) if c != 20]
    assert full.rows_from(compact)[20] == -1
    assert labels.layout_for_channels(73).kind == "full"
    with pytest.raises(ValueError, match="no channel"):
        compact.labels_to_channels(np.array([20]))
    with pytest.raises(ValueError, match="match no layout"):
        labels.layout_for_channels(71)


def test_shipped_slicer_colour_table_is_current(repo_root):
    shipped = (repo_root / "Resources" / "ColorTables" / "SwinBOB_UKBOB.ctbl").read_text()
    assert shipped == labels.slicer_color_table("ukbob"), "regenerate with `swinbob labels ukbob --ctbl FILE`"
