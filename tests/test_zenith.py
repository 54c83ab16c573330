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


def test_one_file_with_observations_at_several_zeniths(tmp_path):
    """``pointing_zeniths``: one observation per zenith angle in one file, each with its own
    pointing, which the training stream gives every image (direct reader and TableLoader alike)."""
    from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
    from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
    from ctapipe_gammaphysnet.simulation import simulate_to_file

    path = simulate_to_file(tmp_path / "za20_40.dl1.h5", particle="gamma", n_showers=60, seed=2,
                            energy_min=0.5, energy_max=2.0, max_impact=150.0, pointing_zeniths=(20, 40))
    with TableLoader(path, simulated=True, pointing=True) as loader:
        events = loader.read_telescope_events()
        runs = loader.read_simulation_configuration()
    assert list(runs["obs_id"]) == [1, 2] and list(runs["n_showers"]) == [30, 30]
    zenith_of_obs = {obs: set(np.round(90 - events["telescope_pointing_altitude"].quantity.to_value("deg")
                                       [events["obs_id"] == obs], 3)) for obs in (1, 2)}
    assert zenith_of_obs == {1: {20.0}, 2: {40.0}}
    assert len(set(events["event_id"])) == len(events)  # the showers of both observations differ
    files = inspect_training_files([path])
    tel_type = str(files[0].subarray.tel[1])
    for use_tableloader in (False, True):
        stream = DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(quality_criteria=[]),
                                validation_fraction=0.0, shuffle_buffer=0, use_tableloader=use_tableloader)
        zeniths = np.array([sample["pointing_zenith"] for sample in stream])
        assert set(np.round(zeniths, 3)) == {20.0, 40.0}
