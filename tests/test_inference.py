"""``optimize_for_inference``: same outputs as the network on real LST images, less work."""
import numpy as np
import pytest
import torch
from ctapipe.io import TableLoader
from torch import nn

from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.nn.inference import optimize_for_inference
from ctapipe_gammaphysnet.nn.layers import HexConv2d

GAMMA = "test_lasercal_v3"


@pytest.fixture(scope="module")
def lst_images(real_dl1_files):
    """Real LSTCam images and peak times, with one broken (NaN) pixel as in real data."""
    with TableLoader(real_dl1_files[GAMMA], dl1_images=True, dl1_parameters=False,
                     simulated=False, pointing=False) as loader:
        table = loader.read_telescope_events()
    image = torch.from_numpy(np.asarray(table["image"], dtype=np.float32))
    peak_time = torch.from_numpy(np.asarray(table["peak_time"], dtype=np.float32))
    image[0, 10] = float("nan")
    return image, peak_time


@pytest.fixture(scope="module")
def network(calibrated_model_file):
    (model,) = load_model_file(calibrated_model_file).models.values()
    return model.network


@pytest.mark.parametrize("backend, channels_last", [("torch", True), ("torch", False),
                                                    ("onnxruntime", False)])
def test_same_outputs(network, lst_images, backend, channels_last):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed")
    optimized = optimize_for_inference(network, backend, channels_last=channels_last)
    with torch.inference_mode():
        expected, got = network(*lst_images), optimized(*lst_images)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape
        assert torch.isfinite(got[key]).all()
        np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=1e-4, rtol=1e-4,
                                   err_msg=key)
    # the real images are not all alike: the comparison is not between constants
    assert expected["log_energy"].std() > 1e-3


def test_unknown_backend(network):
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        optimize_for_inference(network, "tensorrt")


def test_masks_baked_and_norms_folded(network):
    before = network.state_dict()
    optimized = optimize_for_inference(network)
    assert not any(isinstance(m, HexConv2d) for m in optimized.modules())
    n_norms = sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    n_blocks = sum(1 for name, _ in network.named_modules() if name.endswith(".conv1"))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in optimized.modules()) == n_norms - n_blocks
    # a masked tap stays zero in the baked weights
    corners = network.stem.tap_mask == 0
    assert torch.all(optimized.stem.weight[:, :, corners] == 0)
    assert not any(p.requires_grad for p in optimized.parameters())
    # the original network is untouched
    assert isinstance(network.stem, HexConv2d)
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key])
