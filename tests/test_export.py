"""ctapipe-export-gammaphysnet and the ONNX Runtime backend: outputs equal to PyTorch's (1e-4)."""
import json

import numpy as np
import pytest
import torch
from ctapipe.core import run_tool
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.io.model_file import METADATA_KEY, ModelFileError, load_model_file
from ctapipe_gammaphysnet.tools.export import ExportGammaPhysNetTool

onnx = pytest.importorskip("onnx", reason="the optional onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the optional onnx extra (onnxruntime) is not installed")

from ctapipe_gammaphysnet.io.onnx_file import load_onnx_model_file, load_onnx_network  # noqa: E402
from ctapipe_gammaphysnet.nn.onnx_runtime import OnnxGammaPhysNet  # noqa: E402

LST = "LST_LST_LSTCam"


@pytest.fixture(scope="module")
def exported(calibrated_model_file, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    output = tmp_path / "lstcam.onnx"
    argv = [f"--model={calibrated_model_file}", f"--output={output}", f"--telescope-type={LST}",
            f"--provenance-log={tmp_path / 'export.provenance.log'}"]
    assert run_tool(ExportGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=True) == 0
    return output


@pytest.fixture(scope="module")
def real_images(real_dl1_files):
    """Every real LSTCam image of the shared data (two files), one pixel broken (NaN)."""
    images, times = [], []
    for name in ("test_lasercal_v3", "proton_run202_za20deg_azm0deg_North_test_layout_test-prod"):
        with TableLoader(real_dl1_files[name], dl1_images=True, dl1_parameters=False,
                         simulated=False, pointing=False) as loader:
            (table,) = loader.read_telescope_events_by_type([LST]).values()
        images.append(np.asarray(table["image"], dtype=np.float32))
        times.append(np.asarray(table["peak_time"], dtype=np.float32))
    image, peak_time = np.concatenate(images), np.concatenate(times)
    image[0, 3] = np.nan
    return image, peak_time


def test_outputs_equal_pytorch(exported, calibrated_model_file, real_images):
    network = load_model_file(calibrated_model_file).models[LST].network
    onnx_network = load_onnx_network(exported, n_threads=1)
    image, peak_time = real_images
    with torch.inference_mode():
        expected = network(torch.from_numpy(image), torch.from_numpy(peak_time))
    # the batch axis is dynamic: the whole set, one image, and torch tensors as input
    for start, stop in ((0, len(image)), (2, 3)):
        got = onnx_network(image[start:stop], torch.from_numpy(peak_time[start:stop]))
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert isinstance(got[key], torch.Tensor) and got[key].dtype == torch.float32
            np.testing.assert_allclose(got[key].numpy(), value[start:stop].numpy(),
                                       atol=1e-4, rtol=1e-4, err_msg=key)
    gammaness = onnx_network.gammaness(onnx_network(image, peak_time))
    np.testing.assert_allclose(gammaness.numpy(), network.gammaness(expected).numpy(), atol=1e-4)


def test_metadata_travels(exported, calibrated_model_file, lst1_subarray):
    model = onnx.load(str(exported))
    properties = {p.key: p.value for p in model.metadata_props}
    document = json.loads(properties[METADATA_KEY])
    original = load_model_file(calibrated_model_file)
    assert document["format"] == original.metadata["format"]
    assert document["telescopes"][LST] == original.models[LST].metadata
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", ""]

    # as the components load a model file: the network found by camera geometry
    model_file = load_onnx_model_file(exported)
    match = model_file.model_for_geometry(lst1_subarray.tel[1].camera.geometry)
    assert match is not None and match.tel_type == LST
    assert isinstance(match.network, OnnxGammaPhysNet)


@pytest.mark.parametrize("case", ["exists", "unknown type", "missing model"])
def test_bad_input_refused(case, exported, calibrated_model_file, tmp_path):
    model, output, extra = calibrated_model_file, tmp_path / "out.onnx", []
    if case == "exists":
        output = exported
    elif case == "unknown type":
        extra = ["--telescope-type=MST_MST_FlashCam"]
    else:
        model = tmp_path / "missing.safetensors"
    argv = [f"--model={model}", f"--output={output}", *extra]
    assert run_tool(ExportGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=False) == 2
    assert case == "exists" or not output.exists()


def test_not_an_exported_model(tmp_path):
    path = tmp_path / "other.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ModelFileError, match="not one exported by ctapipe-export-gammaphysnet"):
        load_onnx_network(path)
