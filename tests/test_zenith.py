"""Models across the zenith range: the pointing as a network input, the zenith range of the
training recorded in the model file, and a warning (or invalid results) outside it."""
import dataclasses
import logging

import numpy as np
import pytest
import torch
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet
from ctapipe_gammaphysnet.reco.engine import InferenceEngine, table_pointing

REAL_40_DEG = "gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test"
REAL_20_DEG = "test_lasercal_v3"


@pytest.fixture(scope="module")
def lstcam_grid(lst1_subarray):
    return CameraGrid.from_geometry(lst1_subarray.tel[1].camera.geometry)


def _pointing_network(grid):
    torch.manual_seed(0)
    return GammaPhysNet(grid, dataclasses.replace(PRESETS["tiny"], pointing=True)).eval()


def test_pointing_aware_network_needs_and_uses_the_zenith(lstcam_grid):
    network = _pointing_network(lstcam_grid)
    image = torch.rand(3, lstcam_grid.n_pixels) * 20
    peak_time = torch.rand(3, lstcam_grid.n_pixels) * 30
    with pytest.raises(ValueError, match="pointing-aware"):
        network(image, peak_time)
    with torch.no_grad():
        at_20, at_40 = (network(image, peak_time, torch.full((3,), z)) for z in (20.0, 40.0))
        # the conditioning starts at zero: the untrained network does not depend on the pointing
        for name in at_20:
            torch.testing.assert_close(at_20[name], at_40[name], rtol=0, atol=0)
        torch.nn.init.normal_(network.pointing.film.weight, std=1.0)
        at_20, at_40 = (network(image, peak_time, torch.full((3,), z)) for z in (20.0, 40.0))
    assert not torch.allclose(at_20["log_energy"], at_40["log_energy"])


def test_network_without_pointing_ignores_it(lstcam_grid):
    network = GammaPhysNet(lstcam_grid, PRESETS["tiny"]).eval()
    image = torch.rand(2, lstcam_grid.n_pixels) * 20
    peak_time = torch.rand(2, lstcam_grid.n_pixels) * 30
    with torch.no_grad():
        plain = network(image, peak_time)
        given = network(image, peak_time, torch.full((2,), 50.0))
    for name in plain:
        torch.testing.assert_close(plain[name], given[name], rtol=0, atol=0)


def test_training_records_its_zenith_range(tiny_model_file):
    # the built-in simulator points at altitude 70° by default
    (model,) = load_model_file(tiny_model_file).models.values()
    assert model.zenith_range == pytest.approx((20.0, 20.0), abs=1e-3)


def _real_table(real_dl1_files, name):
    with TableLoader(real_dl1_files[name], dl1_images=True, dl1_parameters=True, pointing=True,
                     instrument=True) as loader:
        subarray = loader.subarray
        (table,) = loader.read_telescope_events_by_type().values()
    return subarray, table


@pytest.mark.parametrize("policy", ["warn", "invalid"])
def test_model_outside_its_zenith_range_is_warned_about(real_dl1_files, tiny_model_file, caplog, policy):
    """The 20° model on the real zenith-40° images: a warning naming both ranges; with
    ``invalid`` no prediction either."""
    subarray, table = _real_table(real_dl1_files, REAL_40_DEG)
    assert 90 - table_pointing(table)[0] == pytest.approx(40.0, abs=0.1)
    log = logging.getLogger("test_zenith")
    engine = InferenceEngine([tiny_model_file], subarray, log=log, outside_zenith_range=policy)
    group = engine.group_for_geometry(subarray.tel[table["tel_id"][0]].camera.geometry)
    with caplog.at_level(logging.WARNING, logger="test_zenith"):
        result = engine.predict_table(group, table, np.ones(len(table), dtype=bool))
    (warning,) = [r.getMessage() for r in caplog.records if "zenith" in r.getMessage()]
    assert "20.0°–20.0°" in warning and "40.0°–40.0°" in warning
    assert ("written invalid" in warning) == (policy == "invalid")
    finite = np.isfinite(result["log_energy"])
    assert np.all(~finite) if policy == "invalid" else np.all(finite)


def test_model_inside_its_zenith_range_is_not_warned_about(real_dl1_files, tiny_model_file, caplog):
    subarray, table = _real_table(real_dl1_files, REAL_20_DEG)
    log = logging.getLogger("test_zenith")
    engine = InferenceEngine([tiny_model_file], subarray, log=log, outside_zenith_range="invalid")
    group = engine.group_for_geometry(subarray.tel[table["tel_id"][0]].camera.geometry)
    with caplog.at_level(logging.WARNING, logger="test_zenith"):
        result = engine.predict_table(group, table, np.ones(len(table), dtype=bool))
    assert not [r for r in caplog.records if "zenith" in r.getMessage()]
    assert np.all(np.isfinite(result["log_energy"]))


def test_pointing_aware_model_through_the_engine_and_onnx(lstcam_grid, real_dl1_files, tmp_path):
    """A pointing-aware model gets each image's zenith from the table, in torch and ONNX alike."""
    network = _pointing_network(lstcam_grid)
    torch.nn.init.normal_(network.pointing.film.weight, std=1.0)
    path = save_model_file(tmp_path / "pointing.safetensors", {"LST_LST_LSTCam": network},
                           {"LST_LST_LSTCam": {"pointing": {"zenith_range_deg": [20.0, 20.0]}}})
    subarray, table = _real_table(real_dl1_files, REAL_20_DEG)
    engine = InferenceEngine([path], subarray)
    group = engine.group_for_geometry(subarray.tel[table["tel_id"][0]].camera.geometry)
    result = engine.predict_table(group, table, np.ones(len(table), dtype=bool))
    loaded = load_model_file(path).models["LST_LST_LSTCam"].network
    image = torch.from_numpy(np.asarray(table["image"], dtype=np.float32))
    peak_time = torch.from_numpy(np.asarray(table["peak_time"], dtype=np.float32))
    zenith = torch.full((len(table),), 20.0)
    with torch.no_grad():
        expected = loaded(image, peak_time, zenith)["log_energy"].numpy()
    np.testing.assert_allclose(result["log_energy"], expected, rtol=1e-4, atol=1e-4)
    pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed")
    from ctapipe_gammaphysnet.nn.inference import optimize_for_inference

    onnx_net = optimize_for_inference(loaded, backend="onnxruntime")
    assert onnx_net.pointing_aware
    np.testing.assert_allclose(onnx_net(image, peak_time, zenith)["log_energy"].numpy(), expected,
                               rtol=1e-4, atol=1e-4)
