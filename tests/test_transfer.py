"""The transfer check (ctapipe-check-transfer-gammaphysnet) and the real files' processing.

Known-answer files: a "real" and a "simulated" DL2 file in ctapipe's layout on the real LST-1
subarray, with telescope-level results whose errors are chosen by hand. Every simulated image
sits (three times, N_NEIGHBOURS) at the true energy and intensity of one real image, far from the
others, so each real image is matched with exactly its three copies and every number the check
reports is known: medians and the 68 % quantile (numpy's linear interpolation) of a few values.
"""
import itertools

import astropy.units as u
import numpy as np
import pytest
import tables
from astropy.table import QTable, Table, unique
from astropy.time import Time
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.io import TableLoader
from ctapipe.io.astropy_helpers import write_table

from ctapipe_gammaphysnet.evaluation.real_files import (
    forests_for_telescopes,
    process_command,
    process_config,
    real_shower_files,
)
from ctapipe_gammaphysnet.tools.check_transfer import CheckTransferTool

N_NEIGHBOURS = 3
TRUE_ALT = 70.0  # deg, azimuth 0: an error in altitude alone is the angular error
#: the real images: (primary, E_true / TeV, intensity / p.e., ours: log10(E_reco/E_true),
#: altitude error / deg, gammaness; the reference: log10(E_reco/E_true))
REAL_IMAGES = [
    (0, 0.1, 100, 0.1, 0.1, 0.9, 0.05),
    (0, 0.2, 150, -0.2, 0.2, 0.8, -0.05),
    (0, 0.5, 500, 0.3, 0.3, 0.4, 0.05),
    (0, 2.0, 2000, 0.4, 0.4, 0.3, -0.05),
    (0, 5.0, 5000, -0.5, 0.5, 0.95, 0.05),
    (101, 1.0, 300, 0.0, 1.0, 0.7, 0.0),
    (101, 3.0, 3000, 0.0, 1.0, 0.1, 0.0),
    (0, 0.08, 30, 0.0, 0.1, 0.9, 0.0),  # below the 50 p.e. cut: listed, not selected
]
#: the simulated images at the same points: ours with |log10| 0.1, 0.2 deg, gammaness 0.9
#: (gammas) or 0.2 (protons); the reference as on the real images
SIMULATED_ERRORS = dict(log_ratio=0.1, alt_error=0.2, gammaness={0: 0.9, 101: 0.2})


def write_transfer_dl2(path, subarray, images, truth=True, with_tel_dl2=True):
    """One event per image, telescope 1, in ctapipe's DL2 layout."""
    n = len(images)
    primary, energy, intensity, log_ratio, alt_error, gammaness, ref_log_ratio = (
        np.array(column) for column in zip(*images))
    index = {"obs_id": np.full(n, 1, dtype=np.int32), "event_id": np.arange(n, dtype=np.int64)}
    tel_index = {**index, "tel_id": np.full(n, 1, dtype=np.int16)}
    subarray.to_hdf(path)
    time = Time(60000.0 + np.arange(n) / 86400, format="mjd", scale="tai")
    n_tel = len(subarray.tel_ids)
    write_table(Table({**index, "time": time, "event_type": np.full(n, 32),
                       "tels_with_trigger": np.ones((n, n_tel), bool)}),
                path, "/dl1/event/subarray/trigger")
    write_table(Table({**tel_index, "time": time, "event_type": np.full(n, 32),
                       "n_trigger_pixels": np.full(n, -1)}), path, "/dl1/event/telescope/trigger")
    write_table(QTable({**tel_index, "hillas_intensity": intensity.astype(float),
                        "hillas_width": np.full(n, 0.05) * u.deg,
                        "leakage_intensity_width_2": np.zeros(n)}),
                path, "/dl1/event/telescope/parameters/tel_001")
    if truth:
        write_table(QTable({**index, "true_energy": energy * u.TeV,
                            "true_alt": np.full(n, TRUE_ALT) * u.deg,
                            "true_az": np.zeros(n) * u.deg,
                            "true_shower_primary_id": primary.astype(np.int16)}),
                    path, "/simulation/event/subarray/shower")
    valid = np.ones(n, dtype=bool)
    tel_dl2 = {
        "energy/OursEnergy_tel": dict(energy=energy * 10**log_ratio * u.TeV),
        "energy/ReferenceEnergy_tel": dict(energy=energy * 10**ref_log_ratio * u.TeV),
        "geometry/OursGeometry_tel": dict(alt=(TRUE_ALT + alt_error) * u.deg,
                                          az=np.zeros(n) * u.deg),
        "classification/OursClassifier_tel": dict(prediction=gammaness),
    }
    # subarray-level results alone are not what the check compares
    write_table(QTable({**index, "OursEnergy_energy": energy * 10**log_ratio * u.TeV,
                        "OursEnergy_is_valid": valid}),
                path, "/dl2/event/subarray/energy/OursEnergy")
    if not with_tel_dl2:
        return path
    for group, columns in tel_dl2.items():
        prefix = group.split("/")[1]
        table = QTable(tel_index)
        for name, value in columns.items():
            table[f"{prefix}_{name}"] = value
        table[f"{prefix}_is_valid"] = valid
        write_table(table, path, f"/dl2/event/telescope/{group}/tel_001")
    return path


def simulated_images():
    """N_NEIGHBOURS copies of each real image with the simulated errors."""
    result = []
    for primary, energy, intensity, _, _, _, ref in REAL_IMAGES:
        sign = 1 if len(result) % 2 else -1
        result += [(primary, energy, intensity, sign * SIMULATED_ERRORS["log_ratio"],
                    SIMULATED_ERRORS["alt_error"], SIMULATED_ERRORS["gammaness"][primary], ref)
                   ] * N_NEIGHBOURS
    return result


@pytest.fixture(scope="session")
def known_files(lst1_subarray, tmp_path_factory):
    directory = tmp_path_factory.mktemp("transfer_known")
    real = write_transfer_dl2(directory / "real.dl2.h5", lst1_subarray, REAL_IMAGES)
    simulated = write_transfer_dl2(directory / "simulated.dl2.h5", lst1_subarray,
                                   simulated_images())
    return real, simulated


def _argv(real, simulated, output):
    return [f"--real={real}", f"--simulated={simulated}", f"--output-dir={output}",
            f"--TransferCheck.n_neighbours={N_NEIGHBOURS}", "--reference-prefix=Reference"]


@pytest.fixture(scope="session")
def known_transfer(known_files, tmp_path_factory):
    output = tmp_path_factory.mktemp("transfer_out") / "transfer"
    assert run_tool(CheckTransferTool(), _argv(*known_files, output), cwd=output.parent) == 0
    return output


def _row(table, reconstructor, particle="gamma", band="all"):
    rows = table[(table["reconstructor"] == reconstructor) & (table["particle"] == particle)
                 & (table["intensity_band"] == band)]
    assert len(rows) == 1
    return rows[0]


def test_known_numbers(known_transfer):
    summary = QTable.read(known_transfer / "summary.ecsv")
    # energy: |log10| 0.1 ... 0.5 on the five real gammas -> median 0.3; expected 0.1
    ours = _row(summary, "OursEnergy_tel")
    assert ours["n_images"] == 5
    assert ours["real"] == pytest.approx(0.3) and ours["expected"] == pytest.approx(0.1)
    assert ours["transfer_ratio"] == pytest.approx(3.0)
    # per band: 50-200 p.e. holds |log10| 0.1 and 0.2
    assert _row(summary, "OursEnergy_tel", band="50-200")["real"] == pytest.approx(0.15)
    assert _row(summary, "OursEnergy_tel", band=">1000")["n_images"] == 2
    reference = _row(summary, "ReferenceEnergy_tel")
    assert reference["real"] == pytest.approx(0.05)
    assert reference["transfer_ratio"] == pytest.approx(1.0)
    # direction: errors 0.1 ... 0.5 deg -> 68 % quantile 0.3 + 0.72 * 0.1; expected 0.2
    geometry = _row(summary, "OursGeometry_tel")
    assert geometry["real"] == pytest.approx(0.372)
    assert geometry["transfer_ratio"] == pytest.approx(0.372 / 0.2)
    # gammaness: 2 of 5 real gammas below 0.5 (none expected), 1 of 2 real protons above
    gammas = _row(summary, "OursClassifier_tel")
    assert gammas["real"] == pytest.approx(0.4) and gammas["expected"] == 0
    assert gammas["median_gammaness"] == pytest.approx(0.8)
    assert gammas["expected_median_gammaness"] == pytest.approx(0.9)
    protons = _row(summary, "OursClassifier_tel", particle="proton")
    assert protons["n_images"] == 2 and protons["real"] == pytest.approx(0.5)

    # bootstrap errors of the real metrics: every resample of five equal errors has the same
    # median; five different ones give the exact bootstrap distribution of a median of five
    assert reference["real_error"] == pytest.approx(0, abs=1e-12)
    resampled = np.array(list(itertools.product([0.1, 0.2, 0.3, 0.4, 0.5], repeat=5)))
    exact = np.std(np.median(resampled, axis=1))
    assert ours["real_error"] == pytest.approx(exact, rel=0.15)
    assert ours["transfer_ratio_error"] == pytest.approx(3.0 * ours["real_error"] / 0.3)

    # head to head on the same five real gammas: 0.3 against the reference's 0.05, whose
    # resamples are all 0.05, so the paired error is the median's own
    comparison = QTable.read(known_transfer / "comparison.ecsv")
    assert len(comparison) == 1
    row = comparison[0]
    assert (row["reconstructor"], row["reference"], row["n_images"]) == (
        "OursEnergy_tel", "ReferenceEnergy_tel", 5)
    assert row["real"] == pytest.approx(0.3) and row["reference_real"] == pytest.approx(0.05)
    assert row["difference"] == pytest.approx(0.25)
    assert row["difference_error"] == pytest.approx(exact, rel=0.15)
    assert row["verdict"] == "worse"  # 0.25 > 2 x 0.099

    verdicts = QTable.read(known_transfer / "verdicts.ecsv")
    assert np.all(np.isfinite(verdicts["real_error"][verdicts["n_images"] > 0]))
    said = {(r["reconstructor"], r["particle"]): r["verdict"] for r in verdicts}
    assert said[("OursEnergy_tel", "gamma")] == "degrades ×3.0 on real images (only 5 images)"
    assert said[("ReferenceEnergy_tel", "gamma")] == "transfers (×1.00) (only 5 images)"
    assert said[("OursGeometry_tel", "gamma")].startswith("degrades ×1.9")
    assert said[("OursClassifier_tel", "gamma")].startswith(
        "misclassifies 40% of real gammas (0% expected)")


def test_per_image_table(known_transfer):
    images = QTable.read(known_transfer / "images.ecsv")
    assert len(images) == len(REAL_IMAGES)  # every image, the one below the cuts too
    assert list(images["selected"]) == [True] * 7 + [False]
    np.testing.assert_allclose(np.log10(images["OursEnergy_tel_energy_ratio"]),
                               [image[3] for image in REAL_IMAGES], atol=1e-9)
    np.testing.assert_allclose(images["OursGeometry_tel_angular_error"].to_value(u.deg),
                               [image[4] for image in REAL_IMAGES], atol=1e-9)
    # each selected image matched with exactly its copies: distance 0, their errors expected
    selected = images[images["selected"]]
    assert np.all(selected["n_matched"] == N_NEIGHBOURS)
    np.testing.assert_allclose(selected["matching_distance"], 0, atol=1e-12)
    np.testing.assert_allclose(selected["OursEnergy_tel_expected_abs_log_ratio"], 0.1)
    assert list(selected["intensity_band"]) == ["50-200", "50-200", "200-1000", ">1000",
                                                ">1000", "200-1000", ">1000"]
    assert set(images["file"]) == {"real.dl2.h5"}
    # the outputs of the tool
    for name in ("summary.ecsv", "verdicts.ecsv", "proton_gammaness.ecsv", "transfer.md"):
        assert (known_transfer / name).is_file()
    assert (known_transfer / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    histogram = QTable.read(known_transfer / "proton_gammaness.ecsv")
    assert histogram["n_real"].sum() == 2 and histogram["n_expected"].sum() == pytest.approx(2)
    markdown = (known_transfer / "transfer.md").read_text()
    assert "degrades ×3.0 on real images" in markdown and r"median \|log10" in markdown


@pytest.mark.parametrize("problem, writer_options, message", [
    ("no truth", dict(truth=False), "holds no simulated showers"),
    ("no reconstructor", dict(with_tel_dl2=False), "no telescope-level results"),
    ("no image passes", dict(images=[(0, 0.1, 20, 0.0, 0.1, 0.9, 0.0)]),
     "no gamma or proton image passes the cuts"),
])
def test_bad_input(problem, writer_options, message, known_files, lst1_subarray, tmp_path):
    options = dict(writer_options)
    bad = write_transfer_dl2(tmp_path / "bad.dl2.h5", lst1_subarray,
                             options.pop("images", REAL_IMAGES), **options)
    output = tmp_path / "transfer"
    with pytest.raises(ToolConfigurationError, match=message) as error:
        run_tool(CheckTransferTool(), _argv(bad, known_files[1], output), cwd=tmp_path)
    assert str(bad) in str(error.value)
    assert run_tool(CheckTransferTool(), _argv(bad, known_files[1], output), cwd=tmp_path,
                    raises=False) != 0
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------- real files
def _lst_images(path):
    with TableLoader(path, dl1_parameters=True, simulated=False, pointing=False) as loader:
        lst_types = [t for t in loader.subarray.telescope_types
                     if t.optics.size_type.name == "LST"]
        return sum(len(t) for t in loader.read_telescope_events_by_type(lst_types).values())


@pytest.fixture(scope="session")
def simulated_gpn_dl2(simulated_dl1_files, tiny_model_file, gpn_config, tmp_path_factory):
    """The simulator's point-like gammas and protons through γ-PhysNet (batched tool)."""
    from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool

    out = tmp_path_factory.mktemp("transfer_simulated")
    result = []
    for name in ("gamma", "proton"):
        output = out / f"{name}.dl2.h5"
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={simulated_dl1_files[name]}", f"--output={output}",
            f"--model={tiny_model_file}", f"--config={gpn_config}", "--no-progress",
        ], cwd=out, raises=True)
        result.append(output)
    return result


def test_real_files_one_row_per_lst_image(gpn_dl2_files, simulated_gpn_dl2, tmp_path):
    real = list(gpn_dl2_files.values())
    output = tmp_path / "transfer"
    argv = [*(f"--real={p}" for p in real), *(f"--simulated={p}" for p in simulated_gpn_dl2),
            f"--output-dir={output}"]
    assert run_tool(CheckTransferTool(), argv, cwd=tmp_path) == 0
    images = QTable.read(output / "images.ecsv")
    for path in real:  # every LST image of every file, once
        assert np.count_nonzero(images["file"] == path.name) == _lst_images(path)
    assert len(images) == len(unique(images, keys=["file", "obs_id", "event_id", "tel_id"]))
    assert all(t.startswith("LST_") for t in set(images["telescope_type"]))
    assert np.count_nonzero(images["selected"]) > 0
    verdicts = QTable.read(output / "verdicts.ecsv")
    assert {"GammaPhysNetEnergy_tel", "GammaPhysNetGeometry_tel",
            "GammaPhysNetClassifier_tel"} == set(verdicts["reconstructor"])


def test_forests_run_on_real_lsts(simulated_dl1_files, simtel_files, tiny_model_file, gpn_config,
                                  tmp_path):
    """A forest trained on the simulator's LST-1 gets a model for every real LST type, and runs
    inside ctapipe-process next to γ-PhysNet on a real file's LSTs."""
    import yaml
    from ctapipe.tools.process import ProcessorTool
    from ctapipe.tools.train_energy_regressor import TrainEnergyRegressor

    from ctapipe_gammaphysnet.demo import resource

    files = real_shower_files([simtel_files["test_lasercal_v3"].parent])
    assert {f.name for f in files} == {name for name in simtel_files if name != "lst_muons"}
    assert all(f.tel_ids == (1, 2, 3, 4) for f in files)  # LSTs only, the MSTs left out

    forest = tmp_path / "rf_energy.pkl"
    run_tool(TrainEnergyRegressor(), argv=[
        f"--input={simulated_dl1_files['gamma_diffuse']}", f"--output={forest}",
        f"--config={resource('baseline_rf.yaml')}",
        "--TrainEnergyRegressor.CrossValidator.n_cross_validations=0",
        '--EnergyRegressor.model_config={"n_estimators": 5, "max_depth": 5}',
    ], cwd=tmp_path, raises=True)
    forests = forests_for_telescopes([forest], [f.subarray for f in files], tmp_path / "forests")
    from ctapipe.reco import Reconstructor

    adapted = Reconstructor.read(forests["EnergyRegressor"])
    real_types = {t for f in files for t in f.subarray.telescope_types
                  if t.optics.size_type.name == "LST"}
    assert real_types <= set(adapted._models)

    config = yaml.safe_load(gpn_config.read_text())
    config["GammaPhysNetComponent"]["model_paths"] = [str(tiny_model_file)]
    config_path = tmp_path / "real.yaml"
    config_path.write_text(yaml.safe_dump(process_config(config, forests)))
    lasercal = next(f for f in files if f.name == "test_lasercal_v3")
    output = tmp_path / "lasercal.dl2.h5"
    command = process_command(lasercal, config_path, output)
    run_tool(ProcessorTool(), argv=command[1:] + ["--log-level=WARN"], cwd=tmp_path, raises=True)
    with TableLoader(output, dl2=True, simulated=True) as loader:
        table = loader.read_telescope_events()
    assert len(table) == 10  # the file's LST images
    valid = np.asarray(table["RandomForestEnergy_tel_is_valid"])
    assert np.count_nonzero(valid) >= 5
    assert np.all(np.isfinite(table["RandomForestEnergy_tel_energy"][valid]))
    assert "GammaPhysNetEnergy_tel_energy" in table.colnames
    with tables.open_file(output) as h5file:
        assert "/dl2/event/subarray/energy/RandomForestEnergy" in h5file


def test_report_shows_the_transfer_check(known_files, known_transfer, tmp_path):
    from ctapipe_gammaphysnet.tools.report import ReportTool

    output = tmp_path / "report"
    argv = ["--dl2", str(known_files[1]), f"--output-dir={output}", f"--transfer={known_transfer}",
            "--PerformanceReport.min_events=1"]
    assert run_tool(ReportTool(), argv, cwd=tmp_path) == 0
    page = (output / "report.html").read_text()
    assert "<h2>Transfer to real images</h2>" in page and 'src="transfer/transfer.png"' in page
    assert "degrades ×3.0 on real images" in page
    assert "Against the reference on the same real images" in page
    assert (output / "transfer" / "verdicts.ecsv").is_file()
    assert (output / "transfer" / "comparison.ecsv").is_file()
    # a directory that is not a transfer check's output is refused, nothing written
    with pytest.raises(ToolConfigurationError, match="not the output of ctapipe-check-transfer"):
        run_tool(ReportTool(), ["--dl2", str(known_files[1]), f"--output-dir={tmp_path / 'r2'}",
                                f"--transfer={tmp_path}"], cwd=tmp_path)
    assert not (tmp_path / "r2").exists()


def test_real_files_know_the_part_of_the_mirror_their_spheres_cover(simtel_files, caplog):
    """test_lasercal_v3's 7.5 m CORSIKA spheres cover 46 % of the LST mirror, and listing the real
    files says so; the other files' spheres cover the whole dish."""
    with caplog.at_level("WARNING", logger="ctapipe_gammaphysnet.evaluation.real_files"):
        files = {f.name: f for f in real_shower_files([simtel_files["test_lasercal_v3"].parent])}
    assert files["test_lasercal_v3"].mirror_fraction == pytest.approx(np.pi * 7.5**2 / 386.7, rel=0.01)
    assert all(f.mirror_fraction == 1.0 for name, f in files.items() if name != "test_lasercal_v3")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "test_lasercal_v3" in warning and "46 % of the mirror" in warning
