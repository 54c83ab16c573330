"""A committed model file gives the committed outputs bit for bit: refactoring the network, its
inputs or the model file's reading must not change what a model predicts.

The reference files come from ``tests/data/make_reference_model.py`` (random weights, the real
LSTCam images of the shared test_lasercal_v3 file).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.nn.inference import optimize_for_inference

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module", params=["reference_tiny_lstcam", "reference_disp_tiny_lstcam"])
def reference(request):
    """The heads of model files written before the image parameters (cell votes), and today's."""
    model = load_model_file(DATA / f"{request.param}.safetensors").models["LST_LST_LSTCam"]
    with np.load(DATA / f"{request.param}_outputs.npz") as stored:
        return model.network, dict(stored)


def _outputs(network, stored):
    # one intra-op thread, as the reference was computed: the order of float sums, and so the
    # last bit, depends on how the work is split over threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            outputs = network(torch.from_numpy(stored["image"]), torch.from_numpy(stored["peak_time"]))
    finally:
        torch.set_num_threads(threads)
    return {name: value.numpy() for name, value in outputs.items()}


def test_reference_outputs_are_not_trivial(reference):
    _, stored = reference
    # ten different real images give ten different answers on every output
    for name in ("class_logits", "log_energy", "direction", "impact"):
        assert len(np.unique(stored[name].reshape(len(stored["image"]), -1), axis=0)) == 10, name


def test_model_file_gives_the_reference_outputs_bit_for_bit(reference):
    network, stored = reference
    for name, value in _outputs(network, stored).items():
        np.testing.assert_array_equal(value, stored[name], err_msg=name)


def test_inference_copy_gives_the_reference_outputs_to_rounding(reference):
    network, stored = reference
    for name, value in _outputs(optimize_for_inference(network), stored).items():
        np.testing.assert_allclose(value, stored[name], rtol=1e-4, atol=1e-4, err_msg=name)
