"""The report Tool on small DL2 files: known-answer files and real ctapipe-process output.

The known-answer files are written in ctapipe's DL2 layout on the real LST-1 subarray, with
reconstructed values drawn around the MC truth with known errors, so the expected metrics are
known by hand: a perfect classifier (AUC 1), a constant one (AUC 0.5 exactly, ties), a Gaussian
relative energy error sigma (resolution sigma), Gaussian direction errors sigma per axis
(68 % containment sigma sqrt(-2 ln 0.32)). Each file also holds a simulation run table: the
gammas point-like (at the pointing of the observation block), the protons diffuse, with known
shower counts, so that the effective area is (selected / simulated) x pi r_max^2 by hand.
"""
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import tables
from astropy.table import QTable, Table
from astropy.time import Time
from ctapipe.containers import CoordinateFrameType
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.io.astropy_helpers import write_table
from packaging.version import Version

from ctapipe_gammaphysnet.evaluation import irf as irf_module
from ctapipe_gammaphysnet.evaluation.dl2 import (
    DL2InputError,
    EventSample,
    find_reconstructors,
    read_dl2_events,
)
from ctapipe_gammaphysnet.evaluation.irf import AnalysisChain, PointLikeIRF, analysis_chains
from ctapipe_gammaphysnet.evaluation.metrics import angular_resolution, angular_separation_deg
from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.tools.report import ReportTool

N_EVENTS = 4000
SIGMA_ENERGY = 0.1  # relative, ours
SIGMA_ENERGY_RF = 0.2
BIAS_RF = 0.05
SIGMA_DIRECTION = 0.1  # deg per axis, ours
SIGMA_DIRECTION_HILLAS = 0.2
SIGMA_ENERGY_TEL = 0.3
CONTAINMENT = np.sqrt(-2 * np.log(0.32))
INVALID_FRACTION = 0.1  # of our energies, flagged invalid with NaN values
#: the simulated showers of the known-answer files: dN/dE ~ E^-1.5 from 0.1 to 10 TeV
GAMMA_RUN = dict(n_showers=2 * N_EVENTS, shower_reuse=1, max_scatter_range=200.0,
                 max_viewcone_radius=0.0)
PROTON_RUN = dict(n_showers=N_EVENTS, shower_reuse=3, max_scatter_range=300.0,
                  max_viewcone_radius=5.0)
SOURCE_ALT = 70.0  # deg, the pointing and simulated direction (view cone axis), azimuth 0
ENERGY_BINS = [0.1, 1, 10] * u.TeV
SPECTRAL_INDEX = -1.5
REPORT_OPTIONS = [
    "--PerformanceReport.energy_min=0.1 TeV",
    "--PerformanceReport.energy_max=10 TeV",
    "--PerformanceReport.bins_per_decade=1",
    "--PerformanceReport.min_events=50",
]


def _offset_direction(alt, az, sigma, rng):
    """Directions displaced by Gaussian offsets of ``sigma`` deg along alt and across."""
    d_alt, d_cross = rng.normal(0, sigma, (2, len(alt)))
    return alt + d_alt, az + d_cross / np.cos(np.deg2rad(alt))


def _dl2_table(index, prefix, **columns):
    table = QTable(index)
    for name, value in columns.items():
        table[f"{prefix}_{name}"] = value
    return table


def _write_simulation_run(path, obs_id, n_showers, shower_reuse, max_scatter_range,
                          max_viewcone_radius):
    alt = np.deg2rad(SOURCE_ALT)
    run = QTable({
        "obs_id": [obs_id], "energy_range_min": [0.1] * u.TeV, "energy_range_max": [10] * u.TeV,
        "spectral_index": [SPECTRAL_INDEX], "n_showers": [n_showers], "shower_reuse": [shower_reuse],
        "max_scatter_range": [max_scatter_range] * u.m, "min_scatter_range": [0.0] * u.m,
        "max_viewcone_radius": [max_viewcone_radius] * u.deg,
        "min_viewcone_radius": [0.0] * u.deg, "diffuse": [max_viewcone_radius > 0],
        "min_alt": [alt] * u.rad, "max_alt": [alt] * u.rad,
        "min_az": [0.0] * u.rad, "max_az": [0.0] * u.rad,
    })
    write_table(run, path, "/configuration/simulation/run")


def write_known_dl2(path, subarray, primary_id, seed, particle_group):
    """A DL2 file in ctapipe's layout: events, truth, simulation run and reconstructions with
    known errors."""
    rng = np.random.default_rng(seed)
    n = N_EVENTS
    obs_id = np.full(n, seed, dtype=np.int32)
    event_id = np.arange(n, dtype=np.int64) * 100
    index = {"obs_id": obs_id, "event_id": event_id}
    n_tel = len(subarray.tel_ids)
    time = Time(60000.0 + np.arange(n) / 86400, format="mjd", scale="tai")
    subarray.to_hdf(path)

    trigger = Table({**index, "time": time, "tels_with_trigger": np.ones((n, n_tel), bool),
                     "event_type": np.full(n, 32)})
    write_table(trigger, path, "/dl1/event/subarray/trigger")
    tel_trigger = Table({**index, "tel_id": np.full(n, subarray.tel_ids[0], dtype=np.int16),
                         "time": time, "event_type": np.full(n, 32),
                         "n_trigger_pixels": np.full(n, -1)})
    write_table(tel_trigger, path, "/dl1/event/telescope/trigger")

    _write_simulation_run(path, seed, **(GAMMA_RUN if primary_id == 0 else PROTON_RUN))
    write_table(QTable({"obs_id": [seed], "subarray_pointing_lat": [SOURCE_ALT] * u.deg,
                        "subarray_pointing_lon": [0.0] * u.deg,
                        "subarray_pointing_frame": [CoordinateFrameType.ALTAZ.value]}),
                path, "/configuration/observation/observation_block")
    # E^-1.5: E^-0.5 is uniform
    true_energy = rng.uniform(10**-0.5, 0.1**-0.5, n) ** -2 * u.TeV
    # point-like gammas at the pointing; protons around it, in the background ring and beyond
    if primary_id == 0:
        true_alt, true_az = np.full(n, SOURCE_ALT) * u.deg, np.zeros(n) * u.deg
    else:
        true_alt = rng.uniform(SOURCE_ALT - 2, SOURCE_ALT + 2, n) * u.deg
        true_az = rng.uniform(-5, 5, n) * u.deg
    shower = QTable({**index, "true_energy": true_energy, "true_alt": true_alt,
                     "true_az": true_az, "true_shower_primary_id": np.full(n, primary_id)})
    write_table(shower, path, "/simulation/event/subarray/shower")

    valid = np.ones(n, dtype=bool)
    ours_valid = rng.uniform(size=n) > INVALID_FRACTION
    ours_energy = true_energy * (1 + rng.normal(0, SIGMA_ENERGY, n))
    ours_energy[~ours_valid] = np.nan
    rf_energy = true_energy * (1 + rng.normal(BIAS_RF, SIGMA_ENERGY_RF, n))
    # perfect separation: gammas above 0.6, background below 0.4; the reference says 0.5 always
    gammaness = rng.uniform(0.6, 1, n) if primary_id == 0 else rng.uniform(0, 0.4, n)
    alt, az = _offset_direction(true_alt.value, true_az.value, SIGMA_DIRECTION, rng)
    hillas_alt, hillas_az = _offset_direction(
        true_alt.value, true_az.value, SIGMA_DIRECTION_HILLAS, rng
    )
    subarray_dl2 = {
        "energy/GammaPhysNetEnergy": dict(energy=ours_energy, is_valid=ours_valid),
        "energy/RandomForestRegressor": dict(energy=rf_energy, is_valid=valid),
        f"{particle_group}/GammaPhysNetClassifier": dict(prediction=gammaness, is_valid=valid),
        f"{particle_group}/RandomForestClassifier": dict(
            prediction=np.full(n, 0.5), is_valid=valid),
        "geometry/GammaPhysNetGeometry": dict(alt=alt * u.deg, az=az * u.deg, is_valid=valid),
        "geometry/HillasReconstructor": dict(
            alt=hillas_alt * u.deg, az=hillas_az * u.deg, is_valid=valid),
    }
    for group, columns in subarray_dl2.items():
        prefix = group.split("/")[1]
        columns["telescopes"] = np.ones((n, n_tel), bool)  # ctapipe's IRF multiplicity (>= 0.29)
        write_table(_dl2_table(index, prefix, **columns), path, f"/dl2/event/subarray/{group}")

    tel_id = subarray.tel_ids[0]
    tel_energy = true_energy * (1 + rng.normal(0, SIGMA_ENERGY_TEL, n))
    tel_table = _dl2_table(
        {**index, "tel_id": np.full(n, tel_id, dtype=np.int16)}, "GammaPhysNetEnergy_tel",
        energy=tel_energy, is_valid=valid,
    )
    write_table(tel_table, path,
                f"/dl2/event/telescope/energy/GammaPhysNetEnergy_tel/tel_{tel_id:03d}")
    return path


@pytest.fixture(scope="session")
def known_dl2_files(lst1_subarray, tmp_path_factory):
    """Gammas and protons in separate files, the protons with ctapipe >= 0.29 group names."""
    directory = tmp_path_factory.mktemp("known_dl2")
    gammas = write_known_dl2(directory / "gamma.dl2.h5", lst1_subarray, 0, 1, "classification")
    protons = write_known_dl2(directory / "proton.dl2.h5", lst1_subarray, 101, 2, "particle_type")
    return gammas, protons


@pytest.fixture(scope="session")
def known_report(known_dl2_files, tmp_path_factory):
    output = tmp_path_factory.mktemp("known_report") / "report"
    argv = [
        "--dl2", *map(str, known_dl2_files), f"--output-dir={output}",
        "--reference-prefix", "RandomForest", "--reference-prefix", "Hillas",
        *REPORT_OPTIONS,
    ]
    assert run_tool(ReportTool(), argv, cwd=output.parent) == 0
    return output


def _summary_value(summary, reconstructor, metric, level="subarray"):
    rows = summary[(summary["reconstructor"] == reconstructor) & (summary["metric"] == metric)
                   & (summary["level"] == level)]
    assert len(rows) == 1, (reconstructor, metric)
    return rows[0]


def test_discovers_every_reconstructor(known_dl2_files, lst1_subarray):
    samples = read_dl2_events(known_dl2_files)
    assert samples["subarray"].reconstructors == {
        "energy": ["GammaPhysNetEnergy", "RandomForestRegressor"],
        "particle_type": ["GammaPhysNetClassifier", "RandomForestClassifier"],
        "geometry": ["GammaPhysNetGeometry", "HillasReconstructor"],
    }
    tel_type = str(lst1_subarray.tel[lst1_subarray.tel_ids[0]])
    assert samples[tel_type].reconstructors == {"energy": ["GammaPhysNetEnergy_tel"]}
    # gammas and protons stacked from both files, labels from true_shower_primary_id
    assert np.count_nonzero(samples["subarray"].is_gamma) == N_EVENTS
    assert len(samples["subarray"].table) == 2 * N_EVENTS
    # each event remembers its file (the IRF splits the stacked events by it, reading no file again)
    file_index = np.asarray(samples["subarray"].table["file_index"])
    assert np.array_equal(file_index == 0, samples["subarray"].is_gamma)
    assert np.array_equal(np.unique(samples[tel_type].table["file_index"]), [0, 1])
    # telescope-level prefixes are kept apart from the subarray ones joined onto tel events
    columns = ["X_tel_energy", "X_tel_is_valid", "Y_energy", "Y_is_valid", "true_energy",
               "Z_alt", "Z_is_valid"]
    assert find_reconstructors(columns) == {"energy": ["Y"]}
    assert find_reconstructors(columns, telescope_level=True) == {"energy": ["X_tel"]}


def test_report_metrics_match_known_errors(known_report):
    summary = QTable.read(known_report / "summary.ecsv")
    # classification: perfect -> 1, constant score -> every pair tied -> 0.5 exactly
    assert _summary_value(summary, "GammaPhysNetClassifier", "auc")["value"] == 1.0
    assert _summary_value(summary, "RandomForestClassifier", "auc")["value"] == 0.5
    # energy: Gaussian relative errors; sampling error of the quantiles ~ 0.005
    ours = _summary_value(summary, "GammaPhysNetEnergy", "resolution")
    assert ours["value"] == pytest.approx(SIGMA_ENERGY, rel=0.07)
    assert _summary_value(summary, "GammaPhysNetEnergy", "bias")["value"] == pytest.approx(
        0, abs=0.01)
    assert _summary_value(summary, "RandomForestRegressor", "bias")["value"] == pytest.approx(
        BIAS_RF, abs=0.015)
    # invalid events are reported, and (common events) excluded for the reference too
    assert ours["valid_fraction"] == pytest.approx(1 - INVALID_FRACTION, abs=0.02)
    assert ours["n_used"] == _summary_value(summary, "RandomForestRegressor", "bias")["n_used"]
    assert ours["n_events"] == N_EVENTS  # energy is evaluated on gammas only
    # direction: 68 % containment of 2-d Gaussian errors
    for prefix, sigma in (("GammaPhysNetGeometry", SIGMA_DIRECTION),
                          ("HillasReconstructor", SIGMA_DIRECTION_HILLAS)):
        value = _summary_value(summary, prefix, "angular_resolution")["value"]
        assert value == pytest.approx(sigma * CONTAINMENT, rel=0.05)
    assert np.all(np.isfinite(summary["value"]))


def test_report_per_bin_tables_and_comparison(known_report, lst1_subarray):
    auc = QTable.read(known_report / "auc_subarray.ecsv")
    assert set(auc["reconstructor"]) == {"GammaPhysNetClassifier", "RandomForestClassifier"}
    assert len(auc) == 4  # 2 decades x 1 bin per decade x 2 classifiers
    assert np.all(auc["auc"][auc["reconstructor"] == "GammaPhysNetClassifier"] == 1.0)
    assert np.all(auc["n_gamma"] + auc["n_background"] == auc["n_events"])

    energy = QTable.read(known_report / "energy_subarray.ecsv")
    assert energy["low"].unit == u.TeV
    ours = energy[energy["reconstructor"] == "GammaPhysNetEnergy"]
    np.testing.assert_allclose(ours["resolution"], SIGMA_ENERGY, rtol=0.1)

    comparison = QTable.read(known_report / "comparison.ecsv")
    angular = comparison[comparison["metric"] == "angular_resolution"]
    assert set(angular["reference"]) == {"HillasReconstructor"} and len(angular) == 2
    np.testing.assert_allclose(angular["ratio"], SIGMA_DIRECTION / SIGMA_DIRECTION_HILLAS,
                               rtol=0.1)
    auc_comparison = comparison[comparison["metric"] == "auc"]
    np.testing.assert_allclose(auc_comparison["difference"], 0.5)
    resolution = comparison[comparison["metric"] == "resolution"]
    assert set(resolution["reference"]) == {"RandomForestRegressor"}
    assert np.all(comparison["better"])
    # bootstrap error of a difference of two resolutions of independent Gaussian errors: the half
    # 16-84 % width has a standard deviation of 0.96 sigma / sqrt(n) (quantile asymptotics)
    expected = 0.96 * np.hypot(SIGMA_ENERGY, SIGMA_ENERGY_RF) / np.sqrt(resolution["n_events"])
    np.testing.assert_allclose(resolution["difference_error"], expected, rtol=0.25)
    # a perfect against a constant classifier: 1 - 0.5 in every resample
    np.testing.assert_allclose(auc_comparison["difference_error"], 0.0)
    # every difference here is far beyond twice its error
    assert set(comparison["verdict"][np.isfinite(comparison["difference"])]) == {"better"}

    tel_type = str(lst1_subarray.tel[lst1_subarray.tel_ids[0]])
    tel_energy = QTable.read(known_report / f"energy_{tel_type}.ecsv")
    np.testing.assert_allclose(tel_energy["resolution"], SIGMA_ENERGY_TEL, rtol=0.1)


def test_report_files(known_report, lst1_subarray):
    page = (known_report / "report.html").read_text()
    pngs = sorted(known_report.glob("*.png"))
    stems = {p.stem for p in pngs}
    tel_type = str(lst1_subarray.tel[lst1_subarray.tel_ids[0]])
    assert {"roc_subarray", "auc_subarray", "gammaness_subarray", "energy_subarray",
            "angular_subarray", f"energy_{tel_type}", "effective_area", "sensitivity"} <= stems
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (known_report / f"{png.stem}.ecsv").is_file()  # a table per figure
        assert f'src="{png.name}"' in page
    assert "RandomForestClassifier" in page and "comparison.ecsv" in page
    assert "Point-like effective area and sensitivity" in page and "irf_cuts.ecsv" in page
    cuts = QTable.read(known_report / "irf_cuts.ecsv")
    assert set(cuts["reconstructor"]) == {"GammaPhysNet", RF_CHAIN.name}
    # no leftover temporary directories next to the output
    assert [p.name for p in known_report.parent.iterdir() if p.name.startswith(".")] == []


def test_refuses_existing_output_and_overwrites(known_dl2_files, tmp_path, capsys):
    output = tmp_path / "report"
    output.mkdir()
    (output / "old.txt").write_text("keep me")
    argv = ["--dl2", str(known_dl2_files[0]), f"--output-dir={output}", *REPORT_OPTIONS]
    with pytest.raises(ToolConfigurationError, match="exists, use --overwrite"):
        run_tool(ReportTool(), argv, cwd=tmp_path)
    assert (output / "old.txt").exists()
    assert run_tool(ReportTool(), [*argv, "--overwrite"], cwd=tmp_path) == 0
    assert not (output / "old.txt").exists() and (output / "report.html").is_file()
    # a gamma-only file: no AUC (said in the log), energy metrics still there
    summary = QTable.read(output / "summary.ecsv")
    assert not np.any((summary["reconstructor"] == "GammaPhysNetClassifier")
                      & (summary["metric"] == "auc"))
    assert np.isfinite(_summary_value(summary, "GammaPhysNetEnergy", "resolution")["value"])
    # point-like gammas only: an effective area, no sensitivity, and a message saying why
    assert (output / "effective_area.png").is_file() and not (output / "sensitivity.png").exists()
    message = "no diffuse proton file with a simulation run table: no sensitivity"
    log = capsys.readouterr().err  # the Tool's log
    assert message in log
    assert "no background events" in log
    assert "no sensitivity" in (output / "report.html").read_text()


def _tool_error(argv, cwd):
    with pytest.raises((ToolConfigurationError, DL2InputError)) as error:
        run_tool(ReportTool(), argv, cwd=cwd)
    return str(error.value)


def test_report_says_which_models_and_how_trained(known_dl2_files, tiny_model_file, tmp_path):
    """--model: the report's first section and models.ecsv describe each model from its file."""
    output = tmp_path / "report"
    argv = ["--dl2", *map(str, known_dl2_files), f"--output-dir={output}",
            f"--model={tiny_model_file}", *REPORT_OPTIONS]
    assert run_tool(ReportTool(), argv, cwd=tmp_path) == 0
    model = next(iter(load_model_file(tiny_model_file).models.values()))
    table = Table.read(output / "models.ecsv")
    assert len(table) == 1
    row = table[0]
    assert row["model_file"] == tiny_model_file.name and row["telescope_type"] == model.tel_type
    training = model.metadata["training"]
    assert row["n_train_images"] == training["n_train_images"] > 0
    assert row["epochs_trained"] == 2 and row["preset"] == "tiny"
    assert row["heads"] == "image parameters, disp"
    assert row["val_auc"] == pytest.approx(training["validation"]["val_auc"])
    calibration = training["energy_calibration"]
    assert row["energy_calibration"].startswith(f"log10 E += {calibration['offset_dex']:.3f}")
    assert f"({calibration['n_validation_gammas']} validation gammas)" in row["energy_calibration"]
    page = (output / "report.html").read_text()
    assert page.index("<h2>γ-PhysNet models</h2>") < page.index("<h2>Summary (all energies)</h2>")
    # a file that is no model is refused before anything is written
    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_text("not a model")
    text = _tool_error(["--dl2", *map(str, known_dl2_files), f"--output-dir={tmp_path / 'out'}",
                        f"--model={not_a_model}"], tmp_path)
    assert "notes.safetensors" in text and "not a readable γ-PhysNet model file" in text
    assert not (tmp_path / "out").exists()


def test_clear_errors_on_bad_input(lst1_subarray, tmp_path):
    output = f"--output-dir={tmp_path / 'out'}"
    missing = tmp_path / "missing.h5"
    assert "does not exist" in _tool_error(["--dl2", str(missing), output], tmp_path)
    text_file = tmp_path / "notes.h5"
    text_file.write_text("not hdf5")
    assert "not an HDF5 file" in _tool_error(["--dl2", str(text_file), output], tmp_path)
    no_dl2 = tmp_path / "no_dl2.h5"
    write_table(Table({"obs_id": [1]}), no_dl2, "/simulation/event/subarray/shower")
    assert "no DL2" in _tool_error(["--dl2", str(no_dl2), output], tmp_path)
    assert "no DL2 file given" in _tool_error([output], tmp_path)

    # DL2 present but no recognisable reconstructor: only a telescope impact table
    no_reco = tmp_path / "no_reco.h5"
    write_known_dl2(no_reco, lst1_subarray, 0, 3, "classification")
    with tables.open_file(no_reco, "a") as h5file:
        h5file.remove_node("/dl2/event/subarray", recursive=True)
        h5file.remove_node("/dl2/event/telescope/energy", recursive=True)
        h5file.create_group("/dl2/event/telescope", "impact")
    text = _tool_error(["--dl2", str(no_reco), output], tmp_path)
    assert "no reconstructor found" in text and "no_reco.h5" in text
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.fixture(scope="session")
def real_dl2_files(simtel_files, tmp_path_factory):
    """Real DL2 (HillasReconstructor geometry) with DL1 images, by ctapipe-process."""
    out = tmp_path_factory.mktemp("real_dl2")
    result = {}
    for name, key in (("gamma", "gamma_run000007"), ("proton", "proton_run000001")):
        source = next(path for short, path in simtel_files.items() if short.startswith(key))
        output = out / f"{name}.dl2.h5"
        subprocess.run(
            [str(Path(sys.executable).parent / "ctapipe-process"), f"--input={source}",
             f"--output={output}", "--write-images", "--write-showers", "--overwrite",
             "--log-level=ERROR"],
            check=True,
            cwd=out,  # its provenance log goes there, not into the repository
        )
        result[name] = output
    return result


def test_report_on_real_ctapipe_output(real_dl2_files, tmp_path):
    output = tmp_path / "real_report"
    paths = [str(real_dl2_files["gamma"]), str(real_dl2_files["proton"])]
    argv = ["--dl2", *paths, f"--output-dir={output}", "--PerformanceReport.min_events=1",
            "--PerformanceReport.n_images=3"]
    assert run_tool(ReportTool(), argv, cwd=tmp_path) == 0

    samples = read_dl2_events(paths)
    sample = samples["subarray"]
    assert sample.reconstructors == {"geometry": ["HillasReconstructor"]}
    # the 68 % containment in the summary is the one of the valid gamma events of the files
    mask = sample.valid("HillasReconstructor", "geometry") & sample.is_gamma
    assert np.count_nonzero(mask) > 0
    separation = angular_separation_deg(
        sample.values("true_alt", mask, u.deg), sample.values("true_az", mask, u.deg),
        sample.values("HillasReconstructor_alt", mask, u.deg),
        sample.values("HillasReconstructor_az", mask, u.deg),
    )
    summary = QTable.read(output / "summary.ecsv")
    row = _summary_value(summary, "HillasReconstructor", "angular_resolution")
    assert row["value"] == pytest.approx(angular_resolution(separation))
    assert row["n_used"] == np.count_nonzero(mask)

    # camera images of the DL1 images in the files, with the predictions of each event
    assert (output / "camera_images.png").read_bytes()[:4] == b"\x89PNG"
    images = QTable.read(output / "camera_images.ecsv")
    assert 1 <= len(set(zip(images["obs_id"], images["event_id"], images["tel_id"]))) <= 3
    assert set(images["reconstructor"]) == {"HillasReconstructor"}
    page = (output / "report.html").read_text()
    assert 'src="camera_images.png"' in page
    # geometry only: no analysis chain, so no effective area, said in the report
    assert "no analysis chain" in page and not (output / "effective_area.png").exists()


def test_reconstructors_missing_in_a_file_are_dropped_loudly(real_dl2_files, known_dl2_files,
                                                            caplog):
    # the real file has HillasReconstructor only; the known-answer file has six reconstructors
    samples = read_dl2_events([real_dl2_files["gamma"], known_dl2_files[1]])
    assert samples["subarray"].reconstructors == {"geometry": ["HillasReconstructor"]}
    assert "GammaPhysNetEnergy (energy, subarray) is missing in" in caplog.text
    assert str(real_dl2_files["gamma"]) in caplog.text


def test_valid_counts_non_finite_results_as_invalid(caplog):
    table = QTable({
        "true_shower_primary_id": [0, 0, 101],
        "X_energy": [1.0, np.nan, np.nan] * u.TeV,
        "X_is_valid": [True, True, False],
    })
    sample = EventSample("subarray", table, {"energy": ["X"]})
    np.testing.assert_array_equal(sample.valid("X", "energy"), [True, False, False])
    assert "1 event(s) flagged valid with non-finite energy" in caplog.text


def test_help_and_yaml_config(known_dl2_files, tmp_path):
    assert run_tool(ReportTool(), ["--help-all"]) == 0
    output = tmp_path / "from_yaml"
    config = tmp_path / "report.yaml"
    config.write_text(
        "ReportTool:\n"
        f"  dl2_files: [{known_dl2_files[0]}, {known_dl2_files[1]}]\n"
        f"  output_dir: {output}\n"
        "PerformanceReport:\n"
        "  reference_prefixes: [RandomForest]\n"
        "  telescope_level: false\n"
        "  common_events: false\n"
        "  energy_min: 0.1 TeV\n"
        "  energy_max: 10 TeV\n"
    )
    assert run_tool(ReportTool(), [f"--config={config}"], cwd=tmp_path) == 0
    summary = QTable.read(output / "summary.ecsv")
    assert set(summary["level"]) == {"subarray"}
    # each reconstructor on its own valid events: the reference keeps the events we lost
    ours = _summary_value(summary, "GammaPhysNetEnergy", "resolution")
    reference = _summary_value(summary, "RandomForestRegressor", "resolution")
    assert reference["n_used"] == N_EVENTS > ours["n_used"]
    comparison = QTable.read(output / "comparison.ecsv")
    assert set(comparison["reference"]) == {"RandomForestRegressor", "RandomForestClassifier"}


RF_CHAIN = AnalysisChain("RandomForestRegressor", "RandomForestClassifier", "HillasReconstructor")


def test_analysis_chains_pair_by_common_prefix():
    demo = {
        "energy": ["GammaPhysNetEnergy", "RandomForestEnergy"],
        "particle_type": ["GammaPhysNetClassifier", "RandomForestClassifier"],
        "geometry": ["GammaPhysNetGeometry", "RandomForestDisp"],
    }
    assert [c.name for c in analysis_chains(demo)] == ["GammaPhysNet", "RandomForest"]
    known = {**demo, "energy": ["GammaPhysNetEnergy", "RandomForestRegressor"],
             "geometry": ["GammaPhysNetGeometry", "HillasReconstructor"]}
    chains = analysis_chains(known)
    assert chains[1] == RF_CHAIN
    assert RF_CHAIN.name == "RandomForestRegressor+RandomForestClassifier+HillasReconstructor"
    assert analysis_chains({"geometry": ["HillasReconstructor"]}) == []


def _irf(paths, min_events=10, **options):
    sample = read_dl2_events(paths, telescope_level=False)["subarray"]
    # ENERGY_BINS: one bin per decade
    return PointLikeIRF(**options)(paths, sample, ENERGY_BINS[0], ENERGY_BINS[-1], 1, min_events)


def _chain_rows(table, chain):
    return table[table["reconstructor"] == chain.name]


def test_effective_area_with_every_event_passing_the_cuts(known_dl2_files):
    # 100 % gamma efficiency and containment: the cuts keep every reconstructed gamma whose
    # reconstructed energy lies in the binning, so the effective area is known by hand
    result = _irf(known_dl2_files, gamma_efficiency=1.0, direction_containment=1.0)
    assert result.notes == []
    gammas = read_dl2_events([known_dl2_files[0]], telescope_level=False)["subarray"]
    # the integral of E^-1.5 over each bin: a difference of E^-0.5
    edges = ENERGY_BINS.to_value(u.TeV) ** -0.5
    n_simulated = GAMMA_RUN["n_showers"] * -np.diff(edges) / (edges[0] - edges[-1])
    area = np.pi * (GAMMA_RUN["max_scatter_range"] * u.m) ** 2
    for chain in analysis_chains(gammas.reconstructors):
        valid = (gammas.valid(chain.energy, "energy")
                 & gammas.valid(chain.classifier, "particle_type")
                 & gammas.valid(chain.geometry, "geometry"))
        reco = gammas.values(f"{chain.energy}_energy", valid, u.TeV)
        true = gammas.values("true_energy", valid, u.TeV)
        in_binning = (reco >= 0.1) & (reco < 10)
        n_selected = np.histogram(true[in_binning], ENERGY_BINS.value)[0]
        rows = _chain_rows(result.effective_area, chain)
        np.testing.assert_allclose(rows["n_simulated"], n_simulated, rtol=1e-12)
        np.testing.assert_array_equal(rows["n_selected"], n_selected)
        assert u.allclose(rows["effective_area"], n_selected / n_simulated * area, rtol=1e-10)
    # GammaPhysNetEnergy loses 10 % of the events (invalid): so does its effective area
    ours, reference = (_chain_rows(result.effective_area, c)["n_selected"].sum()
                       for c in result.chains)
    assert ours == pytest.approx((1 - INVALID_FRACTION) * reference, rel=0.03)


def test_cuts_and_sensitivity(known_dl2_files):
    result = _irf(known_dl2_files)
    cuts = _chain_rows(result.cuts, RF_CHAIN)
    # constant gammaness 0.5: the cut is 0.5 and keeps every event; 68 % direction containment
    np.testing.assert_array_equal(cuts["gammaness_cut"], 0.5)
    assert u.allclose(cuts["theta_cut"], SIGMA_DIRECTION_HILLAS * CONTAINMENT * u.deg, rtol=0.1)
    ours = _chain_rows(result.cuts, result.chains[0])
    np.testing.assert_allclose(ours["n_gammas_passing"] / ours["n_gammas"], 0.7, atol=0.01)

    sensitivity = _chain_rows(result.sensitivity, RF_CHAIN)
    # every proton passes the reference's gammaness cut: the background in the ring by hand
    protons = read_dl2_events([known_dl2_files[1]], telescope_level=False)["subarray"]
    valid = (protons.valid(RF_CHAIN.energy, "energy")
             & protons.valid(RF_CHAIN.geometry, "geometry"))
    offset = angular_separation_deg(
        protons.values(f"{RF_CHAIN.geometry}_alt", valid, u.deg),
        protons.values(f"{RF_CHAIN.geometry}_az", valid, u.deg), SOURCE_ALT, 0.0)
    reco = protons.values(f"{RF_CHAIN.energy}_energy", valid, u.TeV)
    ring = PointLikeIRF().background_offset_max.to_value(u.deg)
    np.testing.assert_array_equal(sensitivity["n_background_mc"],
                                  np.histogram(reco[offset < ring], ENERGY_BINS.value)[0])
    assert np.all(sensitivity["n_background_mc"] > 0)
    # finite and positive, and meeting the conditions: 5 sigma, >= 10 events, >= 5 % of bkg
    assert list(sensitivity["status"]) == ["ok", "ok"]
    assert np.all(sensitivity["relative_sensitivity"] > 0)
    assert np.all(np.isfinite(sensitivity["flux_sensitivity"]))
    tolerance = 1 - 1e-9  # a binding condition holds to rounding
    assert np.all(sensitivity["significance"] >= 5 * tolerance)
    assert np.all(sensitivity["n_signal"] >= 10 * tolerance)
    assert np.all(sensitivity["n_signal"] >= 0.05 * sensitivity["n_background"] * tolerance)
    crab = PointLikeIRF().gamma_spectrum
    assert u.allclose(sensitivity["flux_sensitivity"],
                      sensitivity["relative_sensitivity"] * crab(sensitivity["center"]))
    # a perfect classifier rejects every proton: no background, so no sensitivity value
    ours = _chain_rows(result.sensitivity, result.chains[0])
    assert np.all(ours["n_background_mc"] == 0)
    assert set(ours["status"]) == {"too few background events"}
    assert np.all(np.isnan(ours["relative_sensitivity"]))


def test_irf_is_what_ctapipes_tools_compute(known_dl2_files, tmp_path):
    """One gamma and one proton file, the same settings: ctapipe-optimize-event-selection and
    ctapipe-compute-irf give the report's effective area and sensitivity."""
    import ctapipe
    from astropy.io import fits
    from ctapipe.tools.compute_irf import IrfTool
    from ctapipe.tools.optimize_event_selection import EventSelectionOptimizer

    result = _irf(known_dl2_files)
    config = PointLikeIRF().ctapipe_config(RF_CHAIN, ENERGY_BINS[0], ENERGY_BINS[-1], 1, 10)
    config.EventSelectionOptimizer.optimization_algorithm = "PercentileCuts"
    gamma, proton = (f"--{kind}-file={path}" for kind, path in zip(("gamma", "proton"),
                                                                    known_dl2_files))
    cuts, irf, benchmarks = tmp_path / "cuts.fits", tmp_path / "irf.fits", tmp_path / "bench.fits"
    run_tool(EventSelectionOptimizer(config=config), [gamma, f"--output={cuts}"], cwd=tmp_path,
             raises=True)
    run_tool(IrfTool(config=config), [
        gamma, proton, f"--cuts={cuts}", f"--output={irf}", f"--benchmark-output={benchmarks}",
        "--spatial-selection-applied"], cwd=tmp_path, raises=True)

    ours = _chain_rows(result.effective_area, RF_CHAIN)
    with fits.open(irf) as hdus:
        area = QTable.read(hdus["EFFECTIVE AREA"])["EFFAREA"][0, 0]
    assert len(ours) == len(area) == 2 and u.allclose(ours["effective_area"], area, rtol=1e-12)
    ours = _chain_rows(result.sensitivity, RF_CHAIN)
    with fits.open(benchmarks) as hdus:
        sensitivity = QTable.read(hdus["SENSITIVITY"])
    assert list(ours["status"]) == ["ok", "ok"]
    n_background = np.asarray(sensitivity["N_BACKGROUND_WEIGHTED"][0, 0])
    if Version(ctapipe.__version__) < Version("0.29"):
        # ctapipe 0.28 counts the simulated protons without their reuse (3): 3 times the weight
        np.testing.assert_allclose(n_background, PROTON_RUN["shower_reuse"]
                                   * ours["n_background"] / PointLikeIRF().alpha, rtol=1e-10)
    else:
        np.testing.assert_allclose(n_background, ours["n_background"] / PointLikeIRF().alpha,
                                   rtol=1e-10)
        np.testing.assert_allclose(sensitivity["RELATIVE_SENSITIVITY"][0, 0],
                                   ours["relative_sensitivity"], rtol=1e-10)


def test_irf_explains_what_is_missing(known_dl2_files, tmp_path, caplog, monkeypatch):
    no_runs = tmp_path / "gamma_no_runs.dl2.h5"
    no_runs.write_bytes(Path(known_dl2_files[0]).read_bytes())
    with tables.open_file(no_runs, "a") as h5file:
        h5file.remove_node("/configuration/simulation/run")
    result = _irf([no_runs, known_dl2_files[1]])
    assert result.effective_area is None and result.sensitivity is None
    assert "gamma_no_runs.dl2.h5 has no /configuration/simulation/run table" in caplog.text
    assert "no point-like gamma file" in result.notes[-1]

    result = _irf(known_dl2_files, min_events=10 * N_EVENTS)
    assert result.effective_area is None
    assert all("no reconstructed-energy bin has" in note for note in result.notes)

    monkeypatch.setattr(irf_module, "HAS_PYIRF", False)
    assert _irf(known_dl2_files).notes == ["pyirf is not installed: no effective area or"
                                           " sensitivity"]


# --- metrics by source position: hand-made DL2 with known answers ---------------------------
POINTING = (70.0, 30.0)  # alt, az (deg)
#: point-like samples: name -> (offset, position angle) in deg
POINT_SOURCES = {"point_0.4deg_pa90": (0.4, 90.0), "point_1.0deg_pa0": (1.0, 0.0)}
DIFFUSE_CONE = 2.0  # deg around the pointing
N_OFFSET_EVENTS = 1500


def _around_pointing(offset, position_angle):
    """(alt, az) in deg of offsets / position angles (deg) around ``POINTING``."""
    from ctapipe_gammaphysnet.simulation.primaries import offset_direction

    n = len(offset)
    alt, az = offset_direction(np.full(n, np.deg2rad(POINTING[0])), np.full(n, np.deg2rad(POINTING[1])),
                               np.deg2rad(offset), np.deg2rad(position_angle))
    return np.rad2deg(alt), np.rad2deg(az)


def write_offset_dl2(path, subarray, primary_id, seed, source=None):
    """Gammas from a point-like source (offset, position angle) or diffuse in a cone around the
    pointing, or protons; with an observation block giving the pointing. Reconstructors:
    ``CentreGeometry`` always answers the pointing (the camera centre), ``NoisyGeometry`` the
    truth with Gaussian errors; ``OffsetClassifier`` separates perfectly inside 1° of the pointing
    and not at all (constant 0.5) beyond; ``PerfectEnergy`` gives the true energy."""
    rng = np.random.default_rng(seed)
    n = N_OFFSET_EVENTS
    index = {"obs_id": np.full(n, seed, dtype=np.int32), "event_id": np.arange(n, dtype=np.int64)}
    subarray.to_hdf(path)
    time = Time(60000.0 + np.arange(n) / 86400, format="mjd", scale="tai")
    write_table(Table({**index, "time": time, "tels_with_trigger": np.ones((n, 1), bool),
                       "event_type": np.full(n, 32)}), path, "/dl1/event/subarray/trigger")
    write_table(QTable({"obs_id": [seed], "subarray_pointing_lat": [POINTING[0]] * u.deg,
                        "subarray_pointing_lon": [POINTING[1]] * u.deg,
                        "subarray_pointing_frame": [0]}),
                path, "/configuration/observation/observation_block")
    if source is not None:
        offset, position_angle = np.full(n, source[0]), np.full(n, source[1])
    else:  # uniform in solid angle in the cone
        offset = np.rad2deg(np.arccos(1 - rng.uniform(size=n) * (1 - np.cos(np.deg2rad(DIFFUSE_CONE)))))
        position_angle = rng.uniform(0, 360, n)
    true_alt, true_az = _around_pointing(offset, position_angle)
    true_energy = rng.uniform(10**-0.5, 0.1**-0.5, n) ** -2 * u.TeV
    write_table(QTable({**index, "true_energy": true_energy, "true_alt": true_alt * u.deg,
                        "true_az": true_az * u.deg, "true_shower_primary_id": np.full(n, primary_id)}),
                path, "/simulation/event/subarray/shower")
    valid = np.ones(n, dtype=bool)
    noisy_alt, noisy_az = _offset_direction(true_alt, true_az, SIGMA_DIRECTION, rng)
    gammaness = rng.uniform(0.6, 1, n) if primary_id == 0 else rng.uniform(0, 0.4, n)
    gammaness[offset > 1.0] = 0.5
    dl2 = {
        "geometry/CentreGeometry": dict(alt=np.full(n, POINTING[0]) * u.deg,
                                        az=np.full(n, POINTING[1]) * u.deg, is_valid=valid),
        "geometry/NoisyGeometry": dict(alt=noisy_alt * u.deg, az=noisy_az * u.deg, is_valid=valid),
        "classification/OffsetClassifier": dict(prediction=gammaness, is_valid=valid),
        "energy/PerfectEnergy": dict(energy=true_energy, is_valid=valid),
    }
    for group, columns in dl2.items():
        write_table(_dl2_table(index, group.split("/")[1], **columns), path,
                    f"/dl2/event/subarray/{group}")
    return path


@pytest.fixture(scope="session")
def offset_report(lst1_subarray, tmp_path_factory):
    from traitlets.config import Config

    from ctapipe_gammaphysnet.evaluation.report import PerformanceReport

    directory = tmp_path_factory.mktemp("offset_dl2")
    paths = [write_offset_dl2(directory / f"{name}.dl2.h5", lst1_subarray, 0, seed, source)
             for seed, (name, source) in enumerate(POINT_SOURCES.items(), start=1)]
    paths.append(write_offset_dl2(directory / "diffuse.dl2.h5", lst1_subarray, 0, 3))
    paths.append(write_offset_dl2(directory / "proton.dl2.h5", lst1_subarray, 101, 4))
    output = directory / "report"
    output.mkdir()
    config = Config({"PerformanceReport": {
        "energy_min": 0.1 * u.TeV, "energy_max": 10 * u.TeV, "bins_per_decade": 2,
        "min_events": 50, "n_images": 0, "point_like_irf": False, "telescope_level": False,
    }})
    PerformanceReport(config=config)(paths, output)
    return output


def test_a_reconstructor_answering_the_camera_centre_has_a_bias_of_the_true_offset(offset_report):
    geometry = QTable.read(offset_report / "offset_angular.ecsv")
    centre = geometry[geometry["reconstructor"] == "CentreGeometry"]
    points = centre[centre["sample"] != "diffuse"]
    assert sorted(points["sample"]) == sorted(POINT_SOURCES)
    for row in points:
        offset, position_angle = POINT_SOURCES[row["sample"]]
        assert row["center"].to_value(u.deg) == pytest.approx(offset, abs=1e-6)
        assert row["position_angle"].to_value(u.deg) == pytest.approx(position_angle, abs=0.01)
        assert row["offset_bias"].to_value(u.deg) == pytest.approx(-offset, abs=1e-6)
        assert row["median_reco_offset"].to_value(u.deg) == pytest.approx(0, abs=1e-6)
        assert row["angular_resolution"].to_value(u.deg) == pytest.approx(offset, abs=1e-6)
    # diffuse gammas, per bin of true offset: minus an offset inside the bin
    diffuse = centre[(centre["sample"] == "diffuse") & np.isfinite(centre["offset_bias"])]
    assert len(diffuse) >= 6  # bins up to the 2° cone
    assert np.all(-diffuse["offset_bias"] >= diffuse["low"] - 1e-9 * u.deg)
    assert np.all(-diffuse["offset_bias"] <= diffuse["high"])
    # and an unbiased reconstructor: Gaussian errors, no pull, the known resolution everywhere
    noisy = geometry[(geometry["reconstructor"] == "NoisyGeometry") & np.isfinite(geometry["offset_bias"])]
    np.testing.assert_allclose(noisy["angular_resolution"].to_value(u.deg),
                               SIGMA_DIRECTION * CONTAINMENT, rtol=0.15)
    far = noisy[noisy["low"] >= 0.5 * u.deg]  # the radial error is symmetric far from the centre
    assert np.all(np.abs(far["offset_bias"]) < 0.02 * u.deg)

    # per energy band: the same bias in every band with events
    bands = QTable.read(offset_report / "point_like_bias.ecsv")
    centre_bands = bands[(bands["reconstructor"] == "CentreGeometry") & np.isfinite(bands["offset_bias"])]
    assert len(centre_bands) >= 2 * len(POINT_SOURCES)
    np.testing.assert_allclose(centre_bands["offset_bias"], -centre_bands["true_offset"], atol=1e-6)


def test_maps_of_predicted_positions_and_theta_squared(offset_report):
    maps = QTable.read(offset_report / "fov_maps.ecsv")
    edges = np.asarray(maps.meta["fov_edges_deg"])
    centre_bin = np.searchsorted(edges, 0.0, side="right") - 1
    for row in maps[maps["reconstructor"] == "CentreGeometry"]:
        counts = np.asarray(row["counts"])
        assert counts.sum() == row["n_events"]
        assert counts[centre_bin, centre_bin] == counts.sum()  # every prediction at the centre
    # the unbiased one: its predictions pile up at the true source positions, (0.4, 0) and (0, 1)
    noisy = np.sum([np.asarray(r["counts"]) for r in maps[maps["reconstructor"] == "NoisyGeometry"]],
                   axis=0)
    lon_bin, lat_bin = (np.searchsorted(edges, x, side="right") - 1 for x in (0.4, 0.0))
    assert noisy[lon_bin - 2:lon_bin + 3, lat_bin - 2:lat_bin + 3].sum() > 0.8 * N_OFFSET_EVENTS
    lon_bin, lat_bin = (np.searchsorted(edges, x, side="right") - 1 for x in (0.0, 1.0))
    assert noisy[lon_bin - 2:lon_bin + 3, lat_bin - 2:lat_bin + 3].sum() > 0.8 * N_OFFSET_EVENTS
    assert noisy[centre_bin, centre_bin] < 0.01 * N_OFFSET_EVENTS  # 4 sigma from the nearer source

    theta_squared = QTable.read(offset_report / "theta_squared.ecsv")
    noisy = theta_squared[theta_squared["reconstructor"] == "NoisyGeometry"]
    # θ² of 2-d Gaussian errors is exponential with mean 2σ²: 1 - exp(-0.09 / 0.02) ≈ 99 % below
    below = noisy["high"] <= 0.09 * u.deg**2
    assert noisy["n_events"][below].sum() > 0.97 * len(POINT_SOURCES) * N_OFFSET_EVENTS


def test_auc_by_offset_and_energy_migration(offset_report):
    auc = QTable.read(offset_report / "offset_auc.ecsv")
    diffuse = auc[(auc["sample"] == "diffuse") & np.isfinite(auc["auc"])]
    inside = diffuse["high"] <= 1.0 * u.deg
    assert np.all(diffuse["auc"][inside] == 1.0)
    assert np.all(diffuse["auc"][diffuse["low"] >= 1.0 * u.deg] == 0.5)
    assert np.count_nonzero(inside) >= 3 and np.count_nonzero(~inside) >= 2
    # point-like samples against every background event: gammaness above every proton's
    points = auc[auc["sample"] != "diffuse"]
    assert len(points) == len(POINT_SOURCES) and np.all(points["auc"] == 1.0)
    assert np.all(points["n_background"] == N_OFFSET_EVENTS)

    migration = QTable.read(offset_report / "energy_migration_subarray.ecsv")
    diagonal = migration["true_low"] == migration["reco_low"]
    assert np.all(migration["fraction"][diagonal] == 1.0)
    assert np.all(migration["n_events"][~diagonal] == 0)
    assert migration["n_events"].sum() == (len(POINT_SOURCES) + 1) * N_OFFSET_EVENTS

    page = (offset_report / "report.html").read_text()
    for stem in ("offset_angular", "offset_bias", "offset_auc", "point_like_bias", "fov_maps",
                 "theta_squared", "energy_migration_subarray"):
        assert (offset_report / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert f'src="{stem}.png"' in page
    assert "Metrics by source position" in page
