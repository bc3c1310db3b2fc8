"""Every network of the registry trains, saves, loads, segments and can be adapted by ETTA."""

import numpy as np
import pytest

from SwinBOBLib import io, phantom, training
from SwinBOBLib.inference import InferenceConfig, etta, segment_image
from SwinBOBLib.models import loading as model


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    phantom.write_cohort(root, n=2, size="tiny", seed=3)
    return root


@pytest.mark.parametrize("network, feature_size", [("unetr", 12), ("segresnet", 8), ("unet", 8)])
def test_network_end_to_end(network, feature_size, cohort, tmp_path):
    options = {"network": network, "feature_size": feature_size, "roi_size": 32, "batch_size": 2,
               "crops_per_volume": 2, "device": "cpu", "contrasts": ["water", "fat"], "split": [1.0, 0.0, 0.0],
               "max_steps": 1, "progress": False}
    summary = training.train(options, cohort, tmp_path / "run")
    assert summary["global_step"] == 1
    loaded, metadata = model.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert metadata.network == network and metadata.in_channels == 2 and metadata.feature_size == feature_size
    assert len(etta.adaptable_parameters(loaded)) > 0
    image = io.load_image(cohort / "imagesTr" / "case_0000.nii.gz")
    result = segment_image(image, loaded, metadata, InferenceConfig(device="cpu", etta=True))
    assert result.labels.array.shape == image.spatial_shape and np.array_equal(result.entropy.affine, image.affine)


def test_unknown_network_and_wrong_roi():
    with pytest.raises(ValueError, match="unknown network 'vnet'"):
        model.build_model(network="vnet")
    with pytest.raises(ValueError, match="multiple of 8 for segresnet"):
        training.check_config(training.TrainConfig(network="segresnet", roi_size=36))
    with pytest.raises(ValueError, match="multiple of 16"):
        model.build_model(feature_size=12, network="unetr", roi_size=40)
