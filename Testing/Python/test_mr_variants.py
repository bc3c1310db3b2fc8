"""scripts/make_mr_variants.py: the MR variants the demo model's robustness check scores (docs/training.md)."""

import nibabel as nib
import numpy as np
import pytest

from SwinBOBLib.io.datasets import load_dataset

SCRIPT = "scripts/make_mr_variants.py"


def _world_centroid(image, value):
    voxels = np.argwhere(np.asarray(image.dataobj) == value)
    return nib.affines.apply_affine(image.affine, voxels.mean(axis=0))


def test_variants_keep_the_anatomy_where_it_is_and_change_what_they_say(load_script, samples, tmp_path, capsys):
    image, label = samples / "example_mr_sm.nii.gz", samples / "example_seg_mr.nii.gz"
    assert load_script(SCRIPT).main([str(image), str(label), str(tmp_path / "v")]) == 0
    assert "wrote 5 variants" in capsys.readouterr().out
    dataset = load_dataset(tmp_path / "v" / "dataset.json")
    assert dataset.scheme == "total_mr" and len(dataset.cases) == 5
    original, reference = nib.load(image), nib.load(label)
    data = np.asarray(original.dataobj, dtype=np.float32)
    liver = 5  # total_mr's liver
    for name, codes in (("orientation_LPS", ("L", "P", "S")), ("orientation_SAR", ("S", "A", "R"))):
        moved, moved_label = nib.load(tmp_path / "v" / f"{name}.nii.gz"), nib.load(tmp_path / "v" / f"{name}_label.nii.gz")
        assert nib.aff2axcodes(moved.affine) == codes and nib.aff2axcodes(moved_label.affine) == codes
        np.testing.assert_allclose(_world_centroid(moved_label, liver), _world_centroid(reference, liver), atol=1e-3)
        assert sorted(np.asarray(moved.dataobj).ravel().tolist()) == pytest.approx(sorted(data.ravel().tolist()))
    for name in ("bias_field", "gamma_1.5", "noise_3pct"):
        changed = nib.load(tmp_path / "v" / f"{name}.nii.gz")
        assert changed.shape == original.shape and np.allclose(changed.affine, original.affine)
        assert not np.allclose(np.asarray(changed.dataobj), data)
        assert np.array_equal(np.asarray(nib.load(tmp_path / "v" / f"{name}_label.nii.gz").dataobj),
                              np.asarray(reference.dataobj))


def test_a_label_map_on_another_grid_is_refused_naming_it(load_script, samples, tmp_path, capsys):
    image = samples / "example_mr_sm.nii.gz"
    other = nib.load(image)
    cropped = tmp_path / "cropped_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(np.array(other.shape) - 1, np.uint8), other.affine), cropped)
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(image), str(cropped), str(tmp_path / "v")])
    assert "cropped_label.nii.gz" in capsys.readouterr().err and not (tmp_path / "v").exists()
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(tmp_path / "absent.nii.gz"), str(cropped), str(tmp_path / "v")])
    assert "absent.nii.gz: no such file" in capsys.readouterr().err
