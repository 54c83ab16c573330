"""Grad-CAM and attention maps on the camera, and ctapipe-explain-gammaphysnet, on simulated DL1."""
import numpy as np
import pytest
import tables
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.io.astropy_helpers import read_table

from ctapipe_gammaphysnet.evaluation.explain import GRAD_CAM_TASKS, explain_images, map_correlation
from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet
from ctapipe_gammaphysnet.tools.explain import ExplainGammaPhysNetTool
from ctapipe_gammaphysnet.training.trainer import GammaPhysNetTrainer


def _stream(files, split, fraction):
    tel_type = str(next(iter(files[0].subarray.telescope_types)))
    return tel_type, DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), split=split,
                                    validation_fraction=fraction, shuffle_buffer=0 if split != "train" else 256)


@pytest.fixture(scope="module")
def explain_models(simulated_dl1_files, tmp_path_factory):
    """Tiny networks with and without attention, one epoch on the simulated gammas and protons."""
    out = tmp_path_factory.mktemp("explain_models")
    files = inspect_training_files([simulated_dl1_files["gamma_diffuse"], simulated_dl1_files["proton"]])
    tel_type, train = _stream(files, "train", 0.2)
    _, validation = _stream(files, "validation", 0.2)
    grid = CameraGrid.from_geometry(files[0].subarray.tel[1].camera.geometry)
    models = {}
    for attention in (True, False):
        trainer = GammaPhysNetTrainer(preset="tiny", attention=attention, epochs=1, batch_size=32,
                                      progress_bar=False, num_workers=0, device="cpu")
        network, _ = trainer.train(grid, train, validation, out / f"work_{attention}")
        models[attention] = save_model_file(out / f"attention_{attention}.safetensors",
                                            {tel_type: network}, {})
    return models


@pytest.fixture(scope="module")
def gamma_images(simulated_dl1_files):
    files = inspect_training_files([simulated_dl1_files["gamma"]])
    _, stream = _stream(files, "validation", 1.0)
    samples = [s for _, s in zip(range(24), stream)]
    return np.stack([s["image"] for s in samples]), np.stack([s["peak_time"] for s in samples])


def _network(path):
    return next(iter(load_model_file(path).models.values())).network


def test_maps_on_camera_pixels(explain_models, gamma_images):
    network = _network(explain_models[True])
    n_pixels = network.grid.n_pixels
    result = explain_images(network, *gamma_images, batch_size=10)
    assert result["stage"] == len(network.stages) - 1
    assert set(result["grad_cam"]) == set(GRAD_CAM_TASKS)
    assert sorted(result["attention"]) == list(range(len(network.stages)))
    for maps in [*result["grad_cam"].values(), *result["attention"].values()]:
        assert maps.shape == (len(gamma_images[0]), n_pixels)
        assert np.all(np.isfinite(maps))
    for task, maps in result["grad_cam"].items():
        assert np.all(maps >= 0), task  # the positive part of the weighted features
        varying = maps.std(axis=1) > 0
        assert varying.mean() >= 0.5, f"{task}: {varying.sum()} of {len(maps)} maps vary"
    for maps in result["attention"].values():
        assert np.all(maps.std(axis=1) > 0)
        assert np.all((maps >= 0) & (maps <= 1))  # a sigmoid
    # the outputs are the network's own
    import torch

    with torch.no_grad():
        direct = network(*(torch.from_numpy(a) for a in gamma_images))
    np.testing.assert_allclose(result["outputs"]["log_energy"], direct["log_energy"].numpy(), rtol=1e-5)


def test_maps_follow_the_coarse_grid(explain_models, gamma_images):
    """A map of stage s is constant on the pixels that share a cell of the s-times coarser grid."""
    network = _network(explain_models[True])
    grid = network.grid
    for stage in range(len(network.stages)):
        maps = explain_images(network, *(a[:6] for a in gamma_images), stage=stage)["grad_cam"]["energy"]
        rows, cols = grid.coarse_cells(stage)
        cell = rows * 10_000 + cols
        n_cells = len(np.unique(cell))
        assert (n_cells == grid.n_pixels) == (stage == 0)
        for value in np.unique(cell)[:50]:
            in_cell = maps[:, cell == value]
            assert np.all(in_cell == in_cell[:, :1])


def test_no_attention_maps_without_attention(explain_models, gamma_images):
    network = _network(explain_models[False])
    result = explain_images(network, *gamma_images)
    assert result["attention"] == {}
    assert set(result["grad_cam"]) == set(GRAD_CAM_TASKS)


def test_bad_stage_and_shape(explain_models, gamma_images):
    network = _network(explain_models[True])
    with pytest.raises(ValueError, match="stages"):
        explain_images(network, *gamma_images, stage=3)
    with pytest.raises(ValueError, match="1855"):
        explain_images(network, gamma_images[0][:, :100], gamma_images[1][:, :100])


def test_map_correlation():
    rng = np.random.default_rng(1)
    a = rng.random((3, 50))
    np.testing.assert_allclose(map_correlation(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(map_correlation(a, -a), -1.0)
    constant = a.copy()
    constant[1] = 0.0
    result = map_correlation(a, constant)
    assert np.isnan(result[1]) and np.all(np.isfinite(result[[0, 2]]))


def _explain(tmp_path, model, dl1, output="explain", extra=()):
    argv = [f"--model={model}", f"--input={dl1}", f"--output={tmp_path / output}", *extra]
    return run_tool(ExplainGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=False)


def test_explain_tool(explain_models, simulated_dl1_files, tmp_path):
    dl1 = simulated_dl1_files["gamma"]
    assert _explain(tmp_path, explain_models[True], dl1, extra=["--n-events=2", "--seed=3"]) == 0
    out = tmp_path / "explain"
    pngs = sorted(out.glob("*.png"))
    with tables.open_file(out / "explanations.h5") as h5:
        paths = [node._v_pathname for node in h5.walk_nodes("/explanations", "Table")]
    assert len(paths) == 1
    maps = read_table(out / "explanations.h5", paths[0])
    assert len(maps) == len(pngs) >= 2
    assert len({(o, e) for o, e in zip(maps["obs_id"], maps["event_id"])}) == 2
    for column in ["image", "peak_time", *(f"grad_cam_{t}" for t in GRAD_CAM_TASKS),
                   "attention_stage0", "attention_stage1", "attention_stage2"]:
        assert maps[column].shape == (len(maps), 1855), column
        assert np.all(np.isfinite(maps[column])), column
    assert np.all(maps["true_label"] == 1)
    # the same seed picks the same events; chosen events are taken as given
    assert _explain(tmp_path, explain_models[True], dl1, "again", ["--n-events=2", "--seed=3"]) == 0
    assert sorted(p.name for p in (tmp_path / "again").glob("*.png")) == [p.name for p in pngs]
    event_id = int(maps["event_id"][0])
    assert _explain(tmp_path, explain_models[False], dl1, "chosen", [f"--event-ids={event_id}"]) == 0
    chosen = read_table(tmp_path / "chosen" / "explanations.h5", paths[0])
    assert set(chosen["event_id"]) == {event_id}
    assert not any(c.startswith("attention") for c in chosen.colnames)

    # existing output: refused and untouched without --overwrite, replaced with it
    assert _explain(tmp_path, explain_models[True], dl1, extra=["--event-ids", str(event_id)]) != 0
    assert sorted(out.glob("*.png")) == pngs
    assert _explain(tmp_path, explain_models[True], dl1,
                    extra=[f"--event-ids={event_id}", "--overwrite"]) == 0
    assert len(read_table(out / "explanations.h5", paths[0])) == len(chosen)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_explain_tool_bad_input(explain_models, simulated_dl1_files, tmp_path):
    dl1 = simulated_dl1_files["gamma"]
    not_hdf5 = tmp_path / "not.h5"
    not_hdf5.write_text("no HDF5")
    assert _explain(tmp_path, explain_models[True], tmp_path / "missing.h5") != 0
    assert _explain(tmp_path, explain_models[True], not_hdf5) != 0
    assert _explain(tmp_path, not_hdf5, dl1) != 0
    assert _explain(tmp_path, explain_models[True], dl1, extra=["--event-ids=999999999"]) != 0
    assert _explain(tmp_path, explain_models[True], dl1, extra=["--stage=5"]) != 0
    assert _explain(tmp_path, explain_models[True], dl1, extra=["--n-events=0"]) != 0
    assert not (tmp_path / "explain").exists()


def test_explain_tool_names_the_cameras_no_model_matches(real_cameras, simulated_dl1_files, tmp_path):
    """A model of another camera: the reconstruction engine's message, with the layout note."""
    network = GammaPhysNet(CameraGrid.from_geometry(real_cameras["MSTx-NectarCam"]), PRESETS["tiny"])
    model = save_model_file(tmp_path / "nectarcam.safetensors", {"MST_MST_NectarCam": network}, {})
    tool = ExplainGammaPhysNetTool(model_path=model, input_path=simulated_dl1_files["gamma"],
                                   output_dir=tmp_path / "explain")
    with pytest.raises(ToolConfigurationError, match="no model matches any camera of this subarray "
                                                     r"\(LSTCam\).*MST_MST_NectarCam.*another pixel layout"):
        tool.setup()
