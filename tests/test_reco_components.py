"""γ-PhysNet ctapipe components: ctapipe-process with gpn.yaml on the real files, shared engine,
exact direction conversion, bad input."""
import re
from importlib.metadata import entry_points

import astropy.units as u
import numpy as np
import pytest
import tables
import torch
from astropy.coordinates import AltAz, SkyCoord
from ctapipe.calib import CameraCalibrator
from ctapipe.coordinates import TelescopeFrame
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.image import ImageProcessor
from ctapipe.io import SimTelEventSource, TableLoader
from ctapipe.reco import Reconstructor, ShowerProcessor
from ctapipe.reco.reconstructor import ReconstructionProperty
from ctapipe.tools.process import ProcessorTool
from traitlets.config import Config

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet
from ctapipe_gammaphysnet.reco.components import (
    CLASSIFICATION_GROUP,
    GammaPhysNetClassifier,
    GammaPhysNetReconstructor,
)
from ctapipe_gammaphysnet.reco.engine import InferenceEngine, telescope_to_altaz
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection

NAMES = ["GammaPhysNetReconstructor", "GammaPhysNetClassifier"]
PREFIXES = {"energy": "GammaPhysNetEnergy", "geometry": "GammaPhysNetGeometry",
            CLASSIFICATION_GROUP: "GammaPhysNetClassifier"}


def test_plugins_import_and_are_found_by_name(lst1_subarray, tiny_model_file):
    # ctapipe only logs a plugin's import error: load the entry points ourselves
    plugins = {ep.name: ep.load() for ep in entry_points(group="ctapipe_reco") if ep.name in NAMES}
    assert set(plugins) == set(NAMES)
    assert set(NAMES) <= set(Reconstructor.non_abstract_subclasses())
    config = Config({"ShowerProcessor": {"reconstructor_types": NAMES},
                     "GammaPhysNetComponent": {"model_paths": [str(tiny_model_file)]}})
    processor = ShowerProcessor(lst1_subarray, config=config)
    assert [type(r).__name__ for r in processor.reconstructors] == NAMES
    assert all(r.needs_atmosphere_profile is False for r in processor.reconstructors)
    # one engine for both components: the network runs once per image
    assert processor.reconstructors[0].engine is processor.reconstructors[1].engine


def test_process_help_lists_components(capsys):
    with pytest.raises(SystemExit):
        ProcessorTool().run(["--help-all"])
    help_text = capsys.readouterr().out
    for name in NAMES:
        assert f"{name}.model_paths" in help_text or f"--{name}." in help_text


def _camera_radius_deg(geometry):
    pixels = geometry.transform_to(TelescopeFrame())
    radius = np.hypot(pixels.pix_x.to_value(u.deg), pixels.pix_y.to_value(u.deg)).max()
    return radius + np.sqrt(pixels.pix_area.to_value(u.deg**2)).max()


@pytest.fixture(scope="session")
def gpn_tables(gpn_dl2_files):
    """Telescope and subarray events (with DL2) of every ctapipe-process output, by name."""
    result = {}
    for name, path in gpn_dl2_files.items():
        with TableLoader(path, dl2=True, simulated=True, true_parameters=False,
                         pointing=True) as loader:
            tel_events = loader.read_telescope_events_by_type()
            result[name] = (loader.subarray, tel_events, loader.read_subarray_events())
    return result


def test_process_every_shower_file(gpn_tables):
    for name, (subarray, by_type, subarray_events) in gpn_tables.items():
        n_lst_valid = 0
        types = {str(t): t for t in subarray.telescope_types}
        for type_name, table in by_type.items():
            tel_type = types[type_name]
            table = table.copy()
            is_lst = tel_type.optics.size_type.name == "LST"
            # the tiny model's training cuts (the training tool's defaults)
            expected = GammaPhysNetImageSelection().table_mask(table) & is_lst
            for prefix in PREFIXES.values():
                np.testing.assert_array_equal(table[f"{prefix}_tel_is_valid"], expected,
                                              err_msg=f"{name} {tel_type} {prefix}")
            valid = table[expected]
            n_lst_valid += len(valid)
            energy = valid["GammaPhysNetEnergy_tel_energy"].quantity.to_value(u.TeV)
            assert np.all(np.isfinite(energy) & (energy > 0)), name
            gammaness = np.asarray(valid["GammaPhysNetClassifier_tel_prediction"])
            assert np.all((gammaness >= 0) & (gammaness <= 1)), name
            reco = SkyCoord(alt=valid["GammaPhysNetGeometry_tel_alt"].quantity,
                            az=valid["GammaPhysNetGeometry_tel_az"].quantity, frame=AltAz())
            pointing = SkyCoord(alt=valid["telescope_pointing_altitude"].quantity,
                                az=valid["telescope_pointing_azimuth"].quantity, frame=AltAz())
            offset = reco.separation(pointing).to_value(u.deg)
            assert np.all(offset < _camera_radius_deg(tel_type.camera.geometry)), (name, offset)
            # invalid images (small, or not LST) carry no numbers
            invalid = table[~expected]
            assert np.all(np.isnan(invalid["GammaPhysNetEnergy_tel_energy"]))
            assert np.all(np.isnan(invalid["GammaPhysNetClassifier_tel_prediction"]))
        assert n_lst_valid > 0, name
        for prefix, column in [("GammaPhysNetEnergy", "energy"), ("GammaPhysNetGeometry", "alt"),
                               ("GammaPhysNetClassifier", "prediction")]:
            stereo_valid = np.asarray(subarray_events[f"{prefix}_is_valid"])
            assert np.any(stereo_valid), name
            assert np.all(np.isfinite(subarray_events[f"{prefix}_{column}"][stereo_valid]))


def test_non_lst_telescopes_are_written_invalid(gpn_tables):
    subarray, by_type, _ = gpn_tables["proton_run202_za20deg_azm0deg_North_test_layout_test-prod"]
    flashcam = [str(t) for t in subarray.telescope_types if t.camera.name == "FlashCam"]
    assert flashcam, "this file has FlashCam telescopes"
    for tel_type in flashcam:
        table = by_type[tel_type]
        assert len(table) > 0
        assert not np.any(table["GammaPhysNetEnergy_tel_is_valid"])
        assert not np.any(table["GammaPhysNetGeometry_tel_is_valid"])


def test_dl2_groups_and_no_duplicate_columns(gpn_dl2_files):
    path = gpn_dl2_files["gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test"]
    with tables.open_file(path) as h5file:
        for group, prefix in PREFIXES.items():
            assert f"/dl2/event/subarray/{group}/{prefix}" in h5file
            assert f"/dl2/event/telescope/{group}/{prefix}" in h5file
        # ctapipe-process wrote the quality statistics of both components
        for name in NAMES:
            assert f"/dl2/service/tel_event_statistics/{name}" in h5file
    with TableLoader(path, dl2=True) as loader:
        for table in (loader.read_telescope_events(), loader.read_subarray_events()):
            # TableLoader numbers the columns of clashing tables: X_is_valid_1, X_is_valid_2, …
            clashes = [c for c in table.colnames if re.search(r"_\d+$", c)
                       and (c.startswith("GammaPhysNet") or "_is_valid_" in c)]
            assert clashes == []
            assert "GammaPhysNetEnergy_is_valid" in table.colnames or \
                "GammaPhysNetEnergy_tel_is_valid" in table.colnames


def test_process_dl1_hdf5_input_gives_same_numbers(real_dl1_files, gpn_dl2_files, gpn_config,
                                                   tiny_model_file, tmp_path):
    name = "test_lasercal_v3"
    output = tmp_path / "from_dl1.dl2.h5"
    run_tool(ProcessorTool(), argv=[
        f"--input={real_dl1_files[name]}", f"--output={output}", f"--config={gpn_config}",
        f"--GammaPhysNetComponent.model_paths={tiny_model_file}",
    ], cwd=tmp_path, raises=True)
    with TableLoader(output) as a, TableLoader(gpn_dl2_files[name]) as b:
        from_dl1, from_simtel = a.read_telescope_events(), b.read_telescope_events()
    assert len(from_dl1) == len(from_simtel) > 0
    for column in ["GammaPhysNetEnergy_tel_energy", "GammaPhysNetGeometry_tel_alt",
                   "GammaPhysNetGeometry_tel_az", "GammaPhysNetClassifier_tel_prediction"]:
        np.testing.assert_allclose(from_dl1[column], from_simtel[column], rtol=1e-5)


def test_process_without_images_fails_clearly(real_dl1_files, gpn_config, tiny_model_file,
                                              tmp_path):
    from ctapipe.io import HDF5Merger

    no_images = tmp_path / "no_images.dl1.h5"
    with HDF5Merger(no_images, dl1_images=False) as merger:
        merger(real_dl1_files["test_lasercal_v3"])
    with pytest.raises(ValueError, match="no DL1 image"):
        run_tool(ProcessorTool(), argv=[
            f"--input={no_images}", f"--output={tmp_path / 'out.h5'}", f"--config={gpn_config}",
            f"--GammaPhysNetComponent.model_paths={tiny_model_file}",
        ], cwd=tmp_path, raises=True)


def test_muon_run_camera_is_foreign_to_the_lst1_model(simtel_files, gpn_config,
                                                      tiny_model_file, tmp_path):
    """The muon run's LSTCam (an older sim_telarray model) numbers its pixels differently from
    LST-1: the LST-1 model must refuse it at construction, naming the model file."""
    with pytest.raises(ToolConfigurationError, match=re.escape(str(tiny_model_file))):
        run_tool(ProcessorTool(), argv=[
            f"--input={simtel_files['lst_muons']}", f"--output={tmp_path / 'muons.h5'}",
            f"--config={gpn_config}", "--SimTelEventSource.focal_length_choice=EQUIVALENT",
            f"--GammaPhysNetComponent.model_paths={tiny_model_file}",
        ], cwd=tmp_path, raises=True)
    assert not (tmp_path / "muons.h5").exists()


@pytest.mark.parametrize("zenith", [20, 50])
def test_direction_conversion_is_exact(zenith, lst1_subarray, tiny_model_file):
    rng = np.random.default_rng(zenith)
    n = 200
    pointing_alt, pointing_az = np.full(n, 90.0 - zenith), rng.uniform(0, 360, n)
    pointing = AltAz(alt=pointing_alt * u.deg, az=pointing_az * u.deg)
    # true sources up to 3 deg off axis, offsets computed with ctapipe's TelescopeFrame
    true = SkyCoord(fov_lon=rng.uniform(-3, 3, n) * u.deg, fov_lat=rng.uniform(-3, 3, n) * u.deg,
                    frame=TelescopeFrame(telescope_pointing=pointing)).transform_to(AltAz())
    offsets = SkyCoord(alt=true.alt, az=true.az, frame=AltAz()).transform_to(
        TelescopeFrame(telescope_pointing=pointing))
    fov_lon, fov_lat = offsets.fov_lon.to_value(u.deg), offsets.fov_lat.to_value(u.deg)

    alt, az = telescope_to_altaz(fov_lon, fov_lat, pointing_alt, pointing_az)
    separation = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz()).separation(true)
    assert separation.to_value(u.deg).max() < 1e-6

    # and through the reconstructor's own column code (the event and the table path)
    reconstructor = GammaPhysNetReconstructor(lst1_subarray, model_paths=[tiny_model_file])
    result = {"log_energy": np.zeros(n), "log_energy_std": np.full(n, np.nan),
              "fov_lon": fov_lon, "fov_lat": fov_lat, "direction_spread": np.full(n, np.nan),
              "impact_x": np.zeros(n), "impact_y": np.zeros(n)}
    columns = reconstructor._columns(result, np.ones(n, bool), (pointing_alt, pointing_az),
                                     np.ones(n, int))[ReconstructionProperty.GEOMETRY]
    reco = SkyCoord(alt=columns["alt"], az=columns["az"], frame=AltAz())
    assert reco.separation(true).to_value(u.deg).max() < 1e-6


def _lst_events(path, max_events):
    """Calibrated events with DL1 images and parameters, as in ctapipe-process."""
    with SimTelEventSource(path, max_events=max_events) as source:
        calibrate = CameraCalibrator(source.subarray)
        process_images = ImageProcessor(source.subarray)
        for event in source:
            calibrate(event)
            process_images(event)
            yield source.subarray, event


def test_network_runs_once_per_image_and_event(simtel_files, tiny_model_file):
    path = simtel_files["test_lasercal_v3"]
    events = list(_lst_events(path, max_events=3))
    subarray = events[0][0]
    config = Config({"GammaPhysNetComponent": {"model_paths": [str(tiny_model_file)]}})
    reconstructor = GammaPhysNetReconstructor(subarray, config=config)
    classifier = GammaPhysNetClassifier(subarray, config=config)
    network = next(iter(reconstructor.engine.groups.values())).networks[0]
    batches = []
    hook = network.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    try:
        n_images = 0
        for _, event in events:
            reconstructor(event)
            classifier(event)
            n_images += sum(bool(event.dl2.tel[t].energy["GammaPhysNetEnergy"].is_valid)
                            for t in event.trigger.tels_with_trigger)
    finally:
        hook.remove()
    assert n_images > len(events)
    assert sum(batches) == n_images  # each image once, although two components asked
    assert len(batches) == len(events)  # all telescopes of an event in one batch
    event = events[-1][1]
    for tel_id in event.trigger.tels_with_trigger:
        container = getattr(event.dl2.tel[tel_id], CLASSIFICATION_GROUP)["GammaPhysNetClassifier"]
        assert container.prefix == "GammaPhysNetClassifier_tel"
    assert event.dl2.stereo.energy["GammaPhysNetEnergy"].is_valid


def test_nan_pixels_are_handled(real_dl1_files, lst1_subarray, tiny_model_file):
    with TableLoader(real_dl1_files["test_lasercal_v3"], dl1_images=True) as loader:
        table = loader.read_telescope_events([1])
    engine = InferenceEngine([tiny_model_file], lst1_subarray)
    group = engine.group_for(1)
    image = np.asarray(table["image"], dtype=np.float32).copy()
    peak_time = np.asarray(table["peak_time"], dtype=np.float32).copy()
    rng = np.random.default_rng(1)
    broken = rng.random(image.shape) < 0.05
    image[broken], peak_time[broken] = np.nan, np.nan
    image[0, :] = np.nan  # a fully broken camera
    result = engine.predict(group, image, peak_time, pointing_zenith=20.0)  # the file's pointing
    for name in ("gammaness", "log_energy", "fov_lon", "fov_lat"):
        # scattered broken pixels act as zero charge; a camera without a finite pixel fails the
        # image checks and gets no prediction
        assert np.all(np.isfinite(result[name][1:])), name
        assert np.isnan(result[name][0]), name


def test_ensemble_averages_members(lst1_subarray, tiny_model_file, tmp_path):
    model = load_model_file(tiny_model_file).models
    tel_type, member = next(iter(model.items()))
    other = GammaPhysNet(member.grid, member.network.config)
    other.load_state_dict(member.network.state_dict())
    with torch.no_grad():
        other.energy_head[-1].bias += 0.2
    second = save_model_file(tmp_path / "second.safetensors", {tel_type: other}, {})

    rng = np.random.default_rng(0)
    image = rng.exponential(5.0, (6, member.grid.n_pixels)).astype(np.float32)
    peak_time = rng.normal(20, 3, image.shape).astype(np.float32)
    single = InferenceEngine([tiny_model_file], lst1_subarray)
    ensemble = InferenceEngine([tiny_model_file, second], lst1_subarray)
    one = single.predict(single.group_for(1), image, peak_time, pointing_zenith=20.0)
    both = ensemble.predict(ensemble.group_for(1), image, peak_time, pointing_zenith=20.0)
    np.testing.assert_allclose(both["log_energy"], one["log_energy"] + 0.1, atol=1e-5)
    np.testing.assert_allclose(both["log_energy_std"], 0.2 / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(both["gammaness"], one["gammaness"], atol=1e-6)
    np.testing.assert_allclose(both["fov_lon"], one["fov_lon"], atol=1e-6)
    assert np.all(both["direction_spread"] < 1e-3)
    assert np.all(np.isnan(one["log_energy_std"]))

    # the spread fills the uncertainty columns, times the configured calibration factors
    n = len(image)
    reconstructor = GammaPhysNetReconstructor(
        lst1_subarray, model_paths=[tiny_model_file, second], energy_uncertainty_scale=2.0,
        direction_uncertainty_scale=3.0)
    columns = reconstructor._columns(both, np.ones(n, bool), (np.full(n, 70.0), np.zeros(n)),
                                     np.ones(n, int))
    energy = columns[ReconstructionProperty.ENERGY]
    np.testing.assert_allclose(energy["energy_uncert"].to_value(u.TeV),
                               2.0 * np.log(10) * 10 ** both["log_energy"] * both["log_energy_std"])
    assert np.all(energy["energy_uncert"] > 0)
    np.testing.assert_allclose(
        columns[ReconstructionProperty.GEOMETRY]["ang_distance_uncert"].to_value(u.deg),
        3.0 * both["direction_spread"])


@pytest.fixture(scope="session")
def foreign_model_file(real_cameras, tmp_path_factory):
    """A tiny model for the NectarCam (1855 hexagonal pixels like the LSTs, another layout)."""
    geometry = real_cameras["MSTx-NectarCam"]
    network = GammaPhysNet(CameraGrid.from_geometry(geometry), PRESETS["tiny"]).eval()
    path = tmp_path_factory.mktemp("foreign") / "nectarcam.safetensors"
    return save_model_file(path, {"MST_MST_NectarCam": network}, {})


def test_bad_model_files_fail_at_construction(lst1_subarray, foreign_model_file, tmp_path):
    missing = tmp_path / "missing.safetensors"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 certainly not a safetensors file" * 10)
    for path, message in [(missing, "does not exist"), (corrupt, "not a readable"),
                          (foreign_model_file, "no model matches any camera")]:
        for component in (GammaPhysNetReconstructor, GammaPhysNetClassifier):
            with pytest.raises(ToolConfigurationError, match=message) as error:
                component(lst1_subarray, model_paths=[path])
            assert str(path) in str(error.value)
    with pytest.raises(ToolConfigurationError, match="no model file given"):
        GammaPhysNetReconstructor(lst1_subarray)
