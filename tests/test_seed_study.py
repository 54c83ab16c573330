"""ctapipe-train-gammaphysnet-seeds with tiny networks and 2 seeds on simulated DL1 files, and the
ensemble average of ``nn.ensemble``."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from astropy.table import Table
from ctapipe.core import run_tool
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.evaluation.explain import GRAD_CAM_TASKS, explain_images
from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.nn.ensemble import average_members
from ctapipe_gammaphysnet.tools.seeds import TrainGammaPhysNetSeedsTool
from ctapipe_gammaphysnet.evaluation.seed_summary import (
    METRICS,
    REAL_IMAGES,
    ensemble_pairs,
    uncertainty_scale,
)

TINY = ["--preset=tiny", "--epochs=1", "--batch-size=32", "--n-seeds=2", "--no-progress",
        "--GammaPhysNetTrainer.num_workers=0", "--GammaPhysNetTrainer.device=cpu",
        "--SeedVariabilityStudy.validation_fraction=0.25",
        "--SeedVariabilityStudy.n_explain_images=16",
        "--SeedVariabilityStudy.energy_bins_tev=0.05", "--SeedVariabilityStudy.energy_bins_tev=0.5",
        "--SeedVariabilityStudy.energy_bins_tev=50"]


def _seeds(tmp_path, signal, background, output="study", extra=()):
    argv = [f"--signal={signal}", f"--background={background}", f"--output={tmp_path / output}",
            *TINY, *extra]
    return run_tool(TrainGammaPhysNetSeedsTool(), argv=argv, cwd=tmp_path, raises=False)


@pytest.fixture(scope="module")
def study(simulated_dl1_files, real_dl1_files, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seed_study")
    code = _seeds(tmp_path, simulated_dl1_files["gamma_diffuse"], simulated_dl1_files["proton"],
                  extra=[f"--real={path}" for path in real_dl1_files.values()])
    assert code == 0
    return tmp_path / "study"


def test_outputs(study):
    for name in ("members.ecsv", "variability.ecsv", "grad_cam.ecsv", "ensembles.ecsv",
                 "summary.md", "hypothesis.json", "seeds_overall.png", "seeds_vs_energy.png",
                 "ensembles.png"):
        assert (study / name).is_file(), name
    members = sorted((study / "members").glob("*.safetensors"))
    assert [m.name for m in members] == ["attention_seed0.safetensors", "attention_seed1.safetensors",
                                         "no_attention_seed0.safetensors", "no_attention_seed1.safetensors"]
    summary = (study / "summary.md").read_text()
    assert "Does attention lower the spread" in summary


def test_members_and_variability(study):
    members = Table.read(study / "members.ecsv")
    assert len(members) == 2 * 2 * 4  # groups × seeds × (all + 2 energy bins + real images)
    overall = members[members["energy_bin"] == "all"]
    assert np.all(np.isfinite([overall[m] for m in METRICS]))
    assert np.all((overall["auc"] >= 0) & (overall["auc"] <= 1))
    # every member saw the same test images
    assert len(set(overall["n_images"])) == 1 and overall["n_images"][0] > 0
    # different seeds give different networks
    assert len(set(overall["auc"][overall["attention"]])) == 2

    variability = Table.read(study / "variability.ecsv")
    all_rows = variability[variability["energy_bin"] == "all"]
    assert len(all_rows) == 2 and set(all_rows["n_seeds"]) == {2}
    for metric in METRICS:
        assert np.all(all_rows[f"{metric}_std"] > 0), metric
        group = overall[overall["attention"]]
        np.testing.assert_allclose(all_rows[all_rows["attention"]][f"{metric}_mean"][0],
                                   np.mean(group[metric]))


def test_real_images(study, real_dl1_files):
    """Every member predicts the real LST images that pass the selection, and the spread and the
    F-tests are given on them."""
    expected = 0
    selection = GammaPhysNetImageSelection()
    for path in real_dl1_files.values():
        with TableLoader(path, dl1_images=False, simulated=False, pointing=False) as loader:
            # by telescope id: two LST types of a file may differ in their optics only
            lst_ids = [tel_id for tel_id, tel in loader.subarray.tel.items()
                       if tel.optics.size_type.name == "LST"]
            expected += int(np.count_nonzero(selection.table_mask(loader.read_telescope_events(lst_ids))))
    assert expected >= 20
    members = Table.read(study / "members.ecsv")
    real = members[members["energy_bin"] == REAL_IMAGES]
    assert len(real) == 4 and set(real["n_images"]) == {expected}
    assert np.all(np.isfinite([real[m] for m in METRICS]))
    variability = Table.read(study / "variability.ecsv")
    assert np.all(variability[variability["energy_bin"] == REAL_IMAGES]["n_seeds"] == 2)
    tests = json.loads((study / "hypothesis.json").read_text())
    assert set(tests) == {"simulated", "real"} and set(tests["real"]) == set(METRICS)
    assert f"On the real test images ({expected} images)" in (study / "summary.md").read_text()


def test_grad_cam_agreement(study):
    table = Table.read(study / "grad_cam.ecsv")
    assert len(table) == 2 * len(GRAD_CAM_TASKS)
    assert np.all(table["n_seed_pairs"] == 1)
    valid = table["n_pairs_constant_map"] < table["n_images"]
    assert np.all(np.abs(table["mean_correlation"][valid]) <= 1)


def test_ensemble_spread_filled(study):
    table = Table.read(study / "ensembles.ecsv")
    singles = table[table["members"] == 1]
    assert len(singles) == 2 and np.all(singles["n_pairs"] == 1)
    assert np.all(singles["rms_delta_log_energy"] > 0)
    ensembles = table[table["members"] >= 2]
    for column in ("median_log_energy_std", "median_direction_spread_deg", "median_gammaness_std"):
        assert np.all(ensembles[column] > 0), column
        assert np.all(np.isnan(singles[column])), column  # a single network has no spread
    for column in ("energy_coverage", "direction_coverage", "energy_coverage_scaled",
                   "direction_coverage_scaled"):
        assert np.all((ensembles[column] >= 0) & (ensembles[column] <= 1)), column
    for column in ("energy_scale", "direction_scale"):
        assert np.all(ensembles[column] > 0), column
        assert np.all(np.isnan(singles[column])), column
    assert np.all(np.isfinite([table[m] for m in METRICS]))
    # no two disjoint ensembles of 2 with 2 seeds: only singles and the full ensemble
    assert sorted(set(table["members"])) == [1, 2]


def test_ensemble_configuration(study):
    """The ensemble YAML names the members where the study ended up, with the fitted factors."""
    table = Table.read(study / "ensembles.ecsv")
    for attention, name in ((True, "attention"), (False, "no_attention")):
        config = yaml.safe_load((study / f"ensemble_{name}.yaml").read_text())
        paths = config["GammaPhysNetComponent"]["model_paths"]
        assert [Path(p) for p in paths] == [study.absolute() / "members" / f"{name}_seed{s}.safetensors"
                                            for s in (0, 1)]
        assert all(Path(p).is_file() for p in paths)
        row = table[(table["attention"] == attention) & (table["members"] == 2)][0]
        factors = config["GammaPhysNetReconstructor"]
        assert factors["energy_uncertainty_scale"] == pytest.approx(row["energy_scale"], rel=1e-3)
        assert factors["direction_uncertainty_scale"] == pytest.approx(row["direction_scale"], rel=1e-3)


def test_uncertainty_scale():
    """The factor that makes a Gaussian spread of known width cover 68 % of the errors."""
    rng = np.random.default_rng(1)
    error = np.abs(rng.normal(0, 2.0, 200_000))
    # a spread that underestimates the error 4 times: the factor is 4
    assert uncertainty_scale(error, np.full(len(error), 0.5), 0.6827) == pytest.approx(4.0, rel=0.01)
    # unusable spreads (0, NaN) are left out; none usable gives NaN
    spread = np.where(np.arange(len(error)) % 2, 0.5, 0.0)
    assert uncertainty_scale(error, spread, 0.6827) == pytest.approx(4.0, rel=0.02)
    assert np.isnan(uncertainty_scale(error, np.zeros(len(error)), 0.6827))


def test_ensemble_of_member_files(study, simulated_dl1_files):
    """The ensemble of two member files is the mean of its members, and its spread is filled."""
    files = [load_model_file(study / "members" / f"attention_seed{s}.safetensors") for s in (0, 1)]
    networks = [next(iter(f.models.values())).network for f in files]
    training = inspect_training_files([simulated_dl1_files["gamma"]])
    tel_type = str(next(iter(training[0].subarray.telescope_types)))
    stream = DL1ImageStream(training, tel_type, GammaPhysNetImageSelection(), split="validation",
                            validation_fraction=1.0, shuffle_buffer=0)
    samples = [s for _, s in zip(range(40), stream)]
    image = torch.from_numpy(np.stack([s["image"] for s in samples]))
    peak_time = torch.from_numpy(np.stack([s["peak_time"] for s in samples]))
    outputs = []
    with torch.no_grad():
        for network in networks:
            out = network(image, peak_time)
            outputs.append({"gammaness": network.gammaness(out).numpy(),
                            **{k: v.numpy() for k, v in out.items()}})
    mean, spread = average_members(outputs)
    np.testing.assert_allclose(mean["gammaness"], (outputs[0]["gammaness"] + outputs[1]["gammaness"]) / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(mean["log_energy"], (outputs[0]["log_energy"] + outputs[1]["log_energy"]) / 2,
                               rtol=1e-6)
    # unit-vector mean of two directions a fraction of a degree apart: the midpoint to < 1e-4 deg
    np.testing.assert_allclose(mean["direction"], (outputs[0]["direction"] + outputs[1]["direction"]) / 2,
                               atol=1e-4)
    np.testing.assert_allclose(spread["log_energy_std"],
                               np.abs(outputs[0]["log_energy"] - outputs[1]["log_energy"]) / np.sqrt(2),
                               rtol=1e-5)
    distance = np.hypot(*(outputs[0]["direction"] - outputs[1]["direction"]).T)
    # two members at distance d: sqrt(-2 ln R) ≈ d / 2, the RMS distance from their midpoint
    np.testing.assert_allclose(spread["direction_spread"], distance / 2, rtol=1e-2, atol=1e-4)
    assert np.all(spread["log_energy_std"] > 0) and np.all(spread["direction_spread"] > 0)

    # the reconstruction engine averages ensembles the same way
    from ctapipe_gammaphysnet.reco.engine import InferenceEngine

    subarray = SubarrayDescription.from_hdf(simulated_dl1_files["gamma"])
    engine = InferenceEngine([f.path for f in files], subarray)
    group = next(iter(engine.groups.values()))
    result = engine.predict(group, image.numpy(), peak_time.numpy(), pointing_zenith=20.0)
    np.testing.assert_allclose(result["log_energy"], mean["log_energy"], rtol=1e-5)
    # float32 members computed in batches of another size: last-bit differences, absolute for
    # spreads close to zero
    np.testing.assert_allclose(result["log_energy_std"], spread["log_energy_std"], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(result["direction_spread"], spread["direction_spread"], rtol=1e-3, atol=1e-5)

    # members trained without attention have no attention maps
    no_attention = load_model_file(study / "members" / "no_attention_seed0.safetensors")
    explained = explain_images(next(iter(no_attention.models.values())).network,
                               image.numpy(), peak_time.numpy())
    assert explained["attention"] == {}


def test_average_members_rules():
    one = {"gammaness": np.array([0.2]), "log_energy": np.array([0.0]), "direction": np.array([[0.5, 0.5]])}
    mean, spread = average_members([one])
    assert np.all(np.isnan(list(spread.values())))
    mean, spread = average_members([one, one])
    np.testing.assert_allclose(mean["direction"], [[0.5, 0.5]])
    assert spread["direction_spread"][0] == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="at least one"):
        average_members([])
    with pytest.raises(ValueError, match="different numbers"):
        average_members([one, {k: np.concatenate([v, v]) for k, v in one.items()}])


def test_ensemble_pairs():
    assert ensemble_pairs([0, 1], 1) == [((0,), (1,))]
    pairs = ensemble_pairs(list(range(5)), 2)
    assert len(pairs) == 15
    assert all(not set(a) & set(b) for a, b in pairs)


def test_bad_input(simulated_dl1_files, tmp_path):
    gamma, proton = simulated_dl1_files["gamma_diffuse"], simulated_dl1_files["proton"]
    assert _seeds(tmp_path, tmp_path / "missing.h5", proton) != 0
    assert _seeds(tmp_path, proton, proton) != 0  # signal without gammas
    assert _seeds(tmp_path, gamma, proton, extra=["--n-seeds=1"]) != 0
    assert _seeds(tmp_path, gamma, proton, extra=["--ensemble-size=1"]) != 0
    assert _seeds(tmp_path, gamma, proton, extra=["--telescope-type=MST_MST_FlashCam"]) != 0
    assert _seeds(tmp_path, gamma, proton, extra=["--GammaPhysNetImageSelection.quality_criteria="
                                                   "[('none', 'hillas_intensity < 0')]"]) != 0
    assert not (tmp_path / "study").exists()
    (tmp_path / "study").mkdir()
    assert _seeds(tmp_path, gamma, proton) != 0  # exists, no --overwrite
