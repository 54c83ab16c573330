"""lstchain DL1 in, lstchain DL2 out, on the real lstchain file of the shared data.

``dl1_LST_test_lasercal_v3.h5`` was made by lstchain 0.12.3 from ``test_lasercal_v3.simtel.gz``;
``ctapipe-process`` of the same sim_telarray file with lstchain's charge extraction (read from the
configuration lstchain stored in the file) gives the ctapipe DL1 it is compared with.
"""
import json
import shutil

import astropy.units as u
import numpy as np
import pytest
import tables
import torch
from numpy.lib.recfunctions import repack_fields
from astropy.coordinates import AltAz, SkyCoord
from ctapipe.coordinates import CameraFrame, TelescopeFrame
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader, read_table
from ctapipe.tools.process import ProcessorTool

from conftest import SHARED_DATA
from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io import lstchain
from ctapipe_gammaphysnet.io.dl1_dataset import (DL1ImageStream, DL1InputError,
                                                 inspect_training_files)
from ctapipe_gammaphysnet.io.model_file import save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet
from ctapipe_gammaphysnet.reco.components import CLASSIFICATION_GROUP
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool

LSTCHAIN_FILE = SHARED_DATA / "lstchain" / "dl1_LST_test_lasercal_v3.h5"
TEL_TYPE = "LST_LST_LSTCam"
# lstchain_dl1_to_dl2's columns (lstchain.reco.dl1_to_dl2.apply_models, 0.12.3)
DL2_COLUMNS = {"log_reco_energy", "reco_energy", "reco_disp_norm", "reco_disp_sign", "reco_disp_dx",
               "reco_disp_dy", "reco_src_x", "reco_src_y", "signed_time_gradient",
               "signed_skewness", "reco_alt", "reco_az", "gammaness", "reco_type"}


@pytest.fixture(scope="module")
def ctapipe_dl1(simtel_files, tmp_path_factory):
    """``ctapipe-process`` DL1 of the simulation lstchain processed, with lstchain's extractor."""
    with tables.open_file(LSTCHAIN_FILE) as h5:
        config = json.loads(h5.get_node(lstchain.DL1_PARAMETERS).attrs["config"])
    extractor = config["image_extractor"]
    out = tmp_path_factory.mktemp("lstchain_ctapipe")
    (out / "lstchain_extractor.json").write_text(json.dumps({
        "EventSource": {"allowed_tels": [lstchain.TEL_ID]},
        "CameraCalibrator": {"image_extractor_type": extractor, **config["CameraCalibrator"]},
        extractor: config[extractor],
    }))
    output = out / "test_lasercal_v3.dl1.h5"
    run_tool(ProcessorTool(), argv=[
        f"--input={simtel_files['test_lasercal_v3']}", f"--output={output}",
        f"--config={out / 'lstchain_extractor.json'}", "--write-images", "--log-level=WARN",
    ], cwd=out, raises=True)
    return output


@pytest.fixture(scope="module")
def lst1_model_file(tmp_path_factory):
    """An untrained ``PRESETS["tiny"]`` network on the camera of the lstchain file (seeded): the
    format tests compare two outputs of the same network, not its quality."""
    subarray = lstchain.read_subarray(LSTCHAIN_FILE)
    torch.manual_seed(0)
    network = GammaPhysNet(CameraGrid.from_geometry(subarray.tel[1].camera.geometry),
                           PRESETS["tiny"]).eval()
    path = tmp_path_factory.mktemp("lstchain_model") / "tiny_untrained.safetensors"
    save_model_file(path, {TEL_TYPE: network}, {TEL_TYPE: {"training": {"note": "untrained"}}})
    return path


@pytest.fixture(scope="module")
def observed_file(tmp_path_factory):
    """The lstchain file as an observed run looks: the parameter table without the mc_* truth,
    no /simulation."""
    path = tmp_path_factory.mktemp("lstchain_observed") / "dl1_observed.h5"
    shutil.copyfile(LSTCHAIN_FILE, path)
    with tables.open_file(path, mode="r+") as h5:
        table = h5.get_node(lstchain.DL1_PARAMETERS)
        rows = table.read()
        kept = [name for name in rows.dtype.names if not name.startswith("mc_")]
        group, name = lstchain.DL1_PARAMETERS.rsplit("/", 1)
        table.remove()
        h5.create_table(group, name, repack_fields(rows[kept]))
        h5.remove_node("/simulation", recursive=True)
    return path


def _apply(input_path, model, output, output_format):
    run_tool(ApplyGammaPhysNetTool(), argv=[
        f"--input={input_path}", f"--output={output}", f"--model={model}",
        f"--output-format={output_format}", "--chunk-size=2", "--no-progress",
    ], cwd=output.parent, raises=True)
    return output


@pytest.fixture(scope="module")
def applied(lst1_model_file, tmp_path_factory):
    """ctapipe-apply-gammaphysnet on the lstchain file, in both output formats."""
    out = tmp_path_factory.mktemp("lstchain_applied")
    return {fmt: _apply(LSTCHAIN_FILE, lst1_model_file, out / f"dl2_{fmt}.h5", fmt)
            for fmt in ("lstchain", "ctapipe")}


def test_lstchain_dl1_reads_as_ctapipe_dl1(ctapipe_dl1):
    lst = lstchain.read_telescope_events(LSTCHAIN_FILE)
    with TableLoader(ctapipe_dl1) as loader:
        ctapipe = loader.read_telescope_events([lstchain.TEL_ID], dl1_images=True,
                                               dl1_parameters=True, simulated=True, pointing=True)
    assert len(lst) == 3
    np.testing.assert_array_equal(lst["obs_id"], ctapipe["obs_id"])
    np.testing.assert_array_equal(lst["event_id"], ctapipe["event_id"])
    # the same pixels in the same order, bit for bit
    np.testing.assert_array_equal(lst["image"], ctapipe["image"])
    np.testing.assert_array_equal(lst["peak_time"], ctapipe["peak_time"])
    for column in ("true_energy", "true_alt", "true_az", "true_core_x", "true_core_y",
                   "telescope_pointing_altitude", "telescope_pointing_azimuth"):
        assert lst[column].unit.physical_type == ctapipe[column].unit.physical_type, column
        # lstchain stores some of them as float32
        np.testing.assert_allclose(u.Quantity(lst[column]).to_value(ctapipe[column].unit),
                                   ctapipe[column],
                                   rtol=1e-6, err_msg=column)
    np.testing.assert_array_equal(lst["true_shower_primary_id"], ctapipe["true_shower_primary_id"])
    # parameters come from lstchain's own cleaning (8/4 p.e. and more), ctapipe's is 10/5
    np.testing.assert_allclose(lst["hillas_intensity"], ctapipe["hillas_intensity"], rtol=0.1)

    lst_camera = lstchain.read_subarray(LSTCHAIN_FILE).tel[1]
    ctapipe_camera = SubarrayDescription.from_hdf(ctapipe_dl1).tel[1]
    assert str(lst_camera) == str(ctapipe_camera) == TEL_TYPE
    grid = CameraGrid.from_geometry(ctapipe_camera.camera.geometry)
    assert grid.matches(lst_camera.camera.geometry)
    assert CameraGrid.from_geometry(lst_camera.camera.geometry).fingerprint() == grid.fingerprint()


def test_training_stream_reads_lstchain_like_ctapipe(ctapipe_dl1):
    files = inspect_training_files([LSTCHAIN_FILE, ctapipe_dl1], need_gammas=True)
    assert [f.lstchain for f in files] == [True, False]
    # both files' own parameters pass: the comparison is of the images and targets
    selection = GammaPhysNetImageSelection(quality_criteria=[("any", "hillas_intensity > 0")])
    stream = DL1ImageStream(files, TEL_TYPE, selection, validation_fraction=0.0, shuffle_buffer=0)
    assert stream.count() == 6
    from_lstchain, from_ctapipe = stream.read_chunk(0, 0, 3), stream.read_chunk(1, 0, 3)
    assert from_lstchain.keys() == from_ctapipe.keys()
    for key, values in from_ctapipe.items():
        np.testing.assert_allclose(from_lstchain[key], values, rtol=1e-6, atol=1e-7, err_msg=key)


def test_observed_run_is_refused_for_training_but_applied(observed_file, lst1_model_file,
                                                          tmp_path):
    with pytest.raises(DL1InputError, match="mc_"):
        inspect_training_files([observed_file])
    output = _apply(observed_file, lst1_model_file, tmp_path / "observed.dl2.h5", "lstchain")
    with tables.open_file(output) as h5:
        dl2 = h5.get_node(lstchain.DL2_PARAMETERS).read()
    assert DL2_COLUMNS <= set(dl2.dtype.names)
    assert not any(name.startswith("mc_") for name in dl2.dtype.names)
    assert np.any(np.isfinite(dl2["reco_alt"]))


def test_lstchain_dl2_columns_and_round_trip(applied):
    with tables.open_file(LSTCHAIN_FILE) as h5:
        dl1 = h5.get_node(lstchain.DL1_PARAMETERS).read()
    with tables.open_file(applied["lstchain"]) as h5:
        assert lstchain.DL1_IMAGES not in h5 and lstchain.DL1_PARAMETERS not in h5
        assert "/simulation/run_config" in h5  # read by lstchain's IRF tools
        node = h5.get_node(lstchain.DL2_PARAMETERS)
        assert isinstance(node, tables.Table)
        dl2 = node.read()
    # the DL1 parameter table, untouched, plus lstchain's DL2 columns
    assert dl2.dtype.names[:len(dl1.dtype.names)] == dl1.dtype.names
    for name in dl1.dtype.names:
        assert dl2.dtype[name] == dl1.dtype[name], name
        np.testing.assert_array_equal(dl2[name], dl1[name], err_msg=name)
    assert set(dl2.dtype.names) - set(dl1.dtype.names) == DL2_COLUMNS
    for name in DL2_COLUMNS - {"reco_type"}:
        assert dl2.dtype[name] == np.float64, name
    assert dl2.dtype["reco_type"] == np.int64
    assert SubarrayDescription.from_hdf(applied["lstchain"]).tel[1].camera.geometry.n_pixels == 1855

    # the same predictions as the ctapipe-format output of the same run
    ctapipe = {}
    for group in ("energy/GammaPhysNetEnergy", "geometry/GammaPhysNetGeometry",
                  f"{CLASSIFICATION_GROUP}/GammaPhysNetClassifier"):
        table = read_table(applied["ctapipe"], f"/dl2/event/telescope/{group}/tel_001")
        ctapipe.update({name: table[name] for name in table.colnames})
    np.testing.assert_array_equal(ctapipe["event_id"], dl2["event_id"])
    valid = np.asarray(ctapipe["GammaPhysNetGeometry_tel_is_valid"])
    assert 0 < valid.sum() < len(valid)  # one image is outside the training cuts (leakage)
    expected = {
        "gammaness": ctapipe["GammaPhysNetClassifier_tel_prediction"],
        "reco_energy": u.Quantity(ctapipe["GammaPhysNetEnergy_tel_energy"]).to_value(u.TeV),
        "reco_alt": u.Quantity(ctapipe["GammaPhysNetGeometry_tel_alt"]).to_value(u.rad),
        "reco_az": u.Quantity(ctapipe["GammaPhysNetGeometry_tel_az"]).to_value(u.rad),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(dl2[name], values, rtol=1e-12, equal_nan=True, err_msg=name)
    assert np.all(np.isnan(dl2["reco_src_x"][~valid]))
    np.testing.assert_array_equal(dl2["reco_type"][~valid], lstchain.NO_TYPE)
    np.testing.assert_array_equal(dl2["reco_type"][valid],
                                  np.where(dl2["gammaness"][valid] > 0.5, 0, 101))
    np.testing.assert_allclose(dl2["reco_disp_dx"], dl2["reco_src_x"] - dl2["x"])
    np.testing.assert_allclose(dl2["log_reco_energy"], np.log10(dl2["reco_energy"]))

    # the source position in the camera is lstchain's: back to the sky as its camera_to_altaz does
    focal = lstchain.read_subarray(LSTCHAIN_FILE).tel[1].optics.effective_focal_length
    pointing = SkyCoord(alt=dl2["mc_alt_tel"][valid] * u.rad, az=dl2["mc_az_tel"][valid] * u.rad,
                        frame=AltAz())
    sky = SkyCoord(dl2["reco_src_x"][valid] * u.m, dl2["reco_src_y"][valid] * u.m,
                   frame=CameraFrame(focal_length=focal, telescope_pointing=pointing)
                   ).transform_to(AltAz())
    np.testing.assert_allclose(sky.alt.rad, dl2["reco_alt"][valid], atol=1e-9)
    np.testing.assert_allclose(sky.az.rad, dl2["reco_az"][valid], atol=1e-9)


def test_camera_coordinates_follow_lstchain(ctapipe_dl1):
    """The true source gives lstchain's own src/disp columns, and ctapipe's image centroid
    (TelescopeFrame) lands on lstchain's x, y (CameraFrame, m): same axes, same signs."""
    parameters = lstchain.read_parameters(LSTCHAIN_FILE)
    focal = lstchain.read_subarray(LSTCHAIN_FILE).tel[1].optics.effective_focal_length
    ones = np.ones(len(parameters))
    truth = lstchain.dl2_columns(parameters, ones * u.TeV, parameters["mc_alt"] * u.rad,
                                 parameters["mc_az"] * u.rad, ones, focal)
    np.testing.assert_allclose(truth["reco_src_x"], parameters["src_x"], atol=1e-6)
    np.testing.assert_allclose(truth["reco_src_y"], parameters["src_y"], atol=1e-6)
    np.testing.assert_allclose(truth["reco_disp_dx"], parameters["disp_dx"], atol=1e-6)
    np.testing.assert_allclose(truth["reco_disp_dy"], parameters["disp_dy"], atol=1e-6)
    np.testing.assert_array_equal(truth["reco_disp_sign"], parameters["disp_sign"])

    with TableLoader(ctapipe_dl1) as loader:
        table = loader.read_telescope_events([lstchain.TEL_ID], dl1_parameters=True, pointing=True)
    pointing = SkyCoord(alt=table["telescope_pointing_altitude"],
                        az=table["telescope_pointing_azimuth"], frame=AltAz())
    centroid = SkyCoord(fov_lon=table["hillas_fov_lon"], fov_lat=table["hillas_fov_lat"],
                        frame=TelescopeFrame(telescope_pointing=pointing)).transform_to(AltAz())
    columns = lstchain.dl2_columns(parameters, ones * u.TeV, centroid.alt, centroid.az, ones, focal)
    # the two cleanings differ (lstchain: 8/4 p.e., ctapipe: 10/5): centroids within 1 cm
    np.testing.assert_allclose(columns["reco_src_x"], parameters["x"], atol=0.01)
    np.testing.assert_allclose(columns["reco_src_y"], parameters["y"], atol=0.01)


def test_lstchain_format_needs_lstchain_input(ctapipe_dl1, lst1_model_file, tmp_path):
    output = tmp_path / "out.h5"
    with pytest.raises(ToolConfigurationError, match="needs an lstchain DL1 file"):
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={ctapipe_dl1}", f"--output={output}", f"--model={lst1_model_file}",
            "--output-format=lstchain"], cwd=tmp_path, raises=True)
    assert not output.exists()


def test_ctapipe_format_from_lstchain_groups(applied):
    with tables.open_file(applied["ctapipe"]) as h5:
        for group in ("energy/GammaPhysNetEnergy", "geometry/GammaPhysNetGeometry",
                      f"{CLASSIFICATION_GROUP}/GammaPhysNetClassifier"):
            assert f"/dl2/event/telescope/{group}/tel_001" in h5
            assert h5.get_node(f"/dl2/event/subarray/{group}").nrows == 3
