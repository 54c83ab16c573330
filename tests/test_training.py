"""ctapipe-train-gammaphysnet on real DL1 files: bad input, reproducibility, resume, model file."""
import csv
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tables
import torch
from ctapipe.core import run_tool
from safetensors.numpy import load_file

from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.tools.train import TrainGammaPhysNetTool
from ctapipe_gammaphysnet.training.trainer import EarlyStopping, GammaPhysNetTrainer, median_energy_calibration

LST = "LST_LST_LSTCam"
GAMMA = "test_lasercal_v3"
PROTON = "proton_run202_za20deg_azm0deg_North_test_layout_test-prod"
# the shared real files hold only a few dozen images: no quality cuts, half for validation
SMALL = [
    f"--telescope-type={LST}",
    "--preset=tiny",
    "--epochs=2",
    "--batch-size=4",
    "--GammaPhysNetImageSelection.quality_criteria=[]",
    "--TrainGammaPhysNetTool.validation_fraction=0.5",
    "--no-progress",
]


def train(tmp_path, signal, background, output="model.safetensors", extra=(), raises=False):
    argv = [f"--signal={s}" for s in signal] + [f"--background={b}" for b in background]
    argv += [f"--output={tmp_path / output}", *SMALL, *extra]
    return run_tool(TrainGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=raises)


@pytest.fixture(scope="session")
def real_pair(real_dl1_files):
    return [real_dl1_files[GAMMA]], [real_dl1_files[PROTON]]


@pytest.fixture(scope="session")
def trained_once(real_pair, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trained_once")
    assert train(tmp_path, *real_pair) == 0
    return tmp_path / "model.safetensors"


def test_model_file_and_metrics(trained_once):
    model = load_model_file(trained_once)
    assert list(model.models) == [LST]
    meta = model.models[LST].metadata
    assert meta["camera"]["n_pixels"] == 1855
    training = meta["training"]
    assert training["epochs_trained"] == 2
    assert training["n_train_images"] > 0 and training["n_validation_images"] > 0
    assert np.isfinite(training["validation"]["val_loss"])
    assert model.metadata["versions"]["ctapipe"]
    metrics = (trained_once.parent / "model_training" / LST / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    for column in ("train_loss_class", "train_loss_energy", "val_auc", "val_energy_resolution",
                   "val_angular_resolution_deg", "weight_class"):
        assert column in header
    assert len(metrics) == 3  # header + 2 epochs


def test_same_seed_same_weights(trained_once, real_pair, tmp_path):
    assert train(tmp_path, *real_pair) == 0
    first, second = load_file(trained_once), load_file(tmp_path / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_other_seed_other_weights(trained_once, real_pair, tmp_path):
    assert train(tmp_path, *real_pair, extra=["--seed=7"]) == 0
    first, second = load_file(trained_once), load_file(tmp_path / "model.safetensors")
    assert any(not np.array_equal(first[k], second[k]) for k in first if "stem.weight" in k)


class Interrupted(RuntimeError):
    """Stands for a training killed after an epoch's checkpoint."""


def interrupt_after_first_epoch(row):
    raise Interrupted(f"interrupted after epoch {row['epoch']}")


def test_resume_gives_uninterrupted_weights(trained_once, real_pair, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        # the tool's trainer calls back after the first epoch's checkpoint, and is interrupted there
        patch.setattr(GammaPhysNetTrainer, "train", functools.partialmethod(
            GammaPhysNetTrainer.train, after_epoch=interrupt_after_first_epoch))
        assert train(tmp_path, *real_pair) != 0
    assert not (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "model_training" / LST / "checkpoint.pt").is_file()
    assert len((tmp_path / "model_training" / LST / "metrics.csv").read_text().splitlines()) == 2
    assert train(tmp_path, *real_pair, extra=["--resume"]) == 0
    first, resumed = load_file(trained_once), load_file(tmp_path / "model.safetensors")
    for key in first:
        np.testing.assert_array_equal(first[key], resumed[key], err_msg=key)


def test_early_stopping_keeps_the_best_epoch():
    network = torch.nn.Linear(2, 1)
    stopping = EarlyStopping(patience=2)
    steps = []
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.4], start=1):
        with torch.no_grad():
            network.bias.fill_(epoch)
        steps.append(stopping.step(epoch, loss, network))
    assert steps == [False, False, False, True, False]
    assert stopping.best_epoch == 5 and stopping.bad_epochs == 0
    assert float(stopping.best_network["bias"]) == 5.0
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(stopping.state_dict())
    assert restored.step(6, float("nan"), network) is False and restored.bad_epochs == 1


def test_compiled_training_matches_eager(trained_once, real_pair, tmp_path):
    """torch.compile changes the speed, not the training: the same weights up to float rounding."""
    assert train(tmp_path, *real_pair, extra=["--compile"]) == 0
    eager, compiled = load_file(trained_once), load_file(tmp_path / "model.safetensors")
    assert eager.keys() == compiled.keys()
    for key in eager:
        if key.endswith("direction_head.votes.bias"):
            # its first entry shifts every vote logit alike, which the softmax ignores: its exact
            # gradient is zero, and AdamW turns rounding noise into lr-sized steps
            np.testing.assert_allclose(compiled[key][1:], eager[key][1:], rtol=1e-3, atol=1e-4)
            continue
        # AdamW divides each gradient by its running size, so a weight whose exact gradient is
        # nearly zero (with the cleaned inputs, a cell × channel the images rarely reach) takes
        # steps of up to the learning rate on rounding noise alone: a few such weights may differ
        # by up to one step, all others agree to float rounding
        close = np.isclose(compiled[key], eager[key], rtol=1e-3, atol=1e-4)
        assert close.mean() > 1 - 1e-4, key
        np.testing.assert_allclose(compiled[key], eager[key], rtol=0, atol=1e-3, err_msg=key)


def test_compile_with_gradnorm_refused(real_pair, tmp_path, capsys):
    assert train(tmp_path, *real_pair, extra=["--compile", "--loss-balancing=gradnorm"]) != 0
    assert "double backward" in capsys.readouterr().err
    assert not (tmp_path / "model.safetensors").exists()


def test_existing_output_refused(trained_once, real_pair, tmp_path, capsys):
    shutil.copy(trained_once, tmp_path / "model.safetensors")
    before = (tmp_path / "model.safetensors").read_bytes()
    assert train(tmp_path, *real_pair) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.safetensors").read_bytes() == before


@pytest.fixture(scope="session")
def dl1_without_images(simtel_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("noimages") / "no_images.dl1.h5"
    subprocess.run([str(Path(sys.executable).parent / "ctapipe-process"),
                    f"--input={simtel_files[GAMMA]}", f"--output={out}", "--log-level=WARN"],
                   check=True)
    return out


@pytest.fixture(scope="session")
def dl1_without_truth(real_dl1_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("notruth") / "no_truth.dl1.h5"
    shutil.copy(real_dl1_files[GAMMA], out)
    with tables.open_file(out, "a") as h5:
        h5.remove_node("/simulation/event/subarray/shower")
    return out


@pytest.mark.parametrize("case, hint", [
    ("no_images", "--write-images"),
    ("no_truth", "simulation truth"),
    ("signal_without_gammas", "no gamma"),
    ("missing", "does not exist"),
])
def test_bad_input_refused_before_training(case, hint, real_pair, dl1_without_images,
                                           dl1_without_truth, tmp_path, capsys):
    signal, background = real_pair
    signal = {
        "no_images": [dl1_without_images],
        "no_truth": [dl1_without_truth],
        "signal_without_gammas": background,
        "missing": [tmp_path / "nowhere.dl1.h5"],
    }[case]
    assert train(tmp_path, signal, background) != 0
    assert hint in capsys.readouterr().err
    assert not (tmp_path / "model_training").exists()
    assert not (tmp_path / "model.safetensors").exists()


def test_nothing_after_quality_cuts(real_pair, tmp_path, capsys):
    config = tmp_path / "cuts.yaml"
    config.write_text("GammaPhysNetImageSelection:\n  quality_criteria:\n"
                      "    - [impossible, hillas_intensity < 0]\n")
    # the command-line option of the same name comes later and wins: give the YAML alone
    argv = [f"--signal={real_pair[0][0]}", f"--background={real_pair[1][0]}",
            f"--output={tmp_path / 'model.safetensors'}", f"--config={config}",
            f"--telescope-type={LST}", "--preset=tiny", "--no-progress"]
    assert run_tool(TrainGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=False) != 0
    assert "no images left after the quality cuts" in capsys.readouterr().err
    assert not (tmp_path / "model_training").exists()


def test_help_all_lists_configuration():
    result = subprocess.run([str(Path(sys.executable).parent / "ctapipe-train-gammaphysnet"),
                             "--help-all"], capture_output=True, text=True, check=True)
    for option in ("--GammaPhysNetTrainer.loss_balancing", "--GammaPhysNetImageSelection.quality_criteria",
                   "--GammaPhysNetTrainer.preset", "--TrainGammaPhysNetTool.signal_files"):
        assert option in result.stdout


@pytest.fixture(scope="session")
def learning_files(tmp_path_factory):
    """About 1300 gamma and 800 proton images passing the default cuts, from the simulator."""
    from ctapipe_gammaphysnet.simulation import simulate_to_file

    out = tmp_path_factory.mktemp("learning")
    return {
        "gamma_diffuse": simulate_to_file(
            out / "gamma_diffuse.dl1.h5", particle="gamma-diffuse", n_showers=2500, seed=11,
            n_workers=2, energy_min=0.1, energy_max=30.0, max_impact=250.0, view_cone=2.0),
        "proton": simulate_to_file(
            out / "proton.dl1.h5", particle="proton", n_showers=4000, seed=12, n_workers=2,
            energy_min=0.2, energy_max=60.0, max_impact=300.0, view_cone=2.5),
    }


def test_small_model_learns_on_simulated_showers(learning_files, tmp_path):
    """Gammaness AUC ≥ 0.8; energy and direction clearly better than guessing the mean."""
    simulated_dl1_files = learning_files
    argv = [f"--signal={simulated_dl1_files['gamma_diffuse']}",
            f"--background={simulated_dl1_files['proton']}",
            f"--output={tmp_path / 'model.safetensors'}", "--preset=small", "--epochs=8",
            "--batch-size=32", "--GammaPhysNetTrainer.early_stopping_patience=0",
            "--TrainGammaPhysNetTool.validation_fraction=0.25", "--no-progress"]
    assert run_tool(TrainGammaPhysNetTool(), argv=argv, cwd=tmp_path, raises=True) == 0
    model = load_model_file(tmp_path / "model.safetensors")
    (tel_type,) = model.models
    history = (tmp_path / "model_training" / tel_type / "metrics.csv").read_text().splitlines()
    validation = model.models[tel_type].metadata["training"]["validation"]
    assert validation["val_auc"] >= 0.8, history

    # the constant guess: every gamma gets the mean log-energy of the validation gammas
    from ctapipe_gammaphysnet.evaluation.metrics import energy_bias_resolution
    from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
    from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
    files = inspect_training_files([simulated_dl1_files["gamma_diffuse"]])
    stream = DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), split="validation",
                            validation_fraction=0.25, shuffle_buffer=0)
    samples = list(stream)
    true_energy = np.array([s["true_energy_tev"] for s in samples])
    guess = np.full_like(true_energy, 10 ** np.mean(np.log10(true_energy)))
    _, guess_resolution = energy_bias_resolution(true_energy, guess)
    # a network that learned nothing scores 1 × the guess; the resolution (16-84 % width of the
    # relative error, ~300 gammas) swings by ±0.1 from epoch to epoch, the L1 of log10(E) by ±0.01
    guess_l1 = np.mean(np.abs(np.log10(true_energy) - np.log10(guess)))
    assert validation["val_loss_energy"] < 0.75 * guess_l1, history
    assert validation["val_energy_resolution"] < 0.75 * guess_resolution, history

    # the energy calibration folded into the model: the validation gammas' median residual is
    # zero, as recorded in the model file
    calibration = model.models[tel_type].metadata["training"]["energy_calibration"]
    gammas = [s for s in samples if s["label"] == 1]
    assert calibration["n_validation_gammas"] == len(gammas)
    network = model.models[tel_type].network.eval()
    with torch.no_grad():
        log_reco = network(torch.from_numpy(np.stack([s["image"] for s in gammas])),
                           torch.from_numpy(np.stack([s["peak_time"] for s in gammas])),
                           torch.from_numpy(np.stack([s["pointing_zenith"] for s in gammas])))["log_energy"]
    residual = np.log10([s["true_energy_tev"] for s in gammas]) - log_reco.numpy()
    assert abs(np.median(residual)) < 0.02, calibration

    # and the direction: better than the constant guess of the mean source position
    from ctapipe_gammaphysnet.evaluation.metrics import containment_68

    direction = np.array([s["direction"] for s in samples if s["label"] == 1])
    guess_containment = containment_68(np.hypot(*(direction - direction.mean(axis=0)).T))
    assert validation["val_angular_resolution_deg"] < 0.8 * guess_containment, history


def test_gradnorm_training_runs_and_moves_the_task_weights(real_pair, tmp_path):
    """GradNorm on the real network: the direction head starts (near) zero, so the direction task
    has (almost) no gradient on the GradNorm layer at first; the training must still stay finite."""
    assert train(tmp_path, *real_pair, extra=["--GammaPhysNetTrainer.loss_balancing=gradnorm"]) == 0
    with open(tmp_path / "model_training" / LST / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    weights = np.array([[float(row[f"weight_{task}"]) for task in ("class", "energy", "direction", "impact")]
                        for row in rows])
    assert np.all(np.isfinite(weights)) and np.allclose(weights.sum(axis=1), 4, rtol=1e-4)
    assert not np.allclose(weights[-1], 1.0)


def test_median_energy_calibration_recovers_a_linear_bias():
    """A reconstruction reading log10 E too low by 0.05 + 0.02 log10 E_reco gets exactly that
    back; one populated bin gives the offset only, too few images nothing."""
    log_reco = np.linspace(-1.5, 1.5, 2000)
    log_true = log_reco + 0.05 + 0.02 * log_reco
    offset, slope, n = median_energy_calibration(log_true, log_reco)
    assert (offset, slope, n) == (pytest.approx(0.05, abs=1e-9), pytest.approx(0.02, abs=1e-9), 2000)
    narrow = np.linspace(0.01, 0.2, 100)
    assert median_energy_calibration(narrow + 0.1, narrow) == (pytest.approx(0.1), 0.0, 100)
    assert median_energy_calibration(narrow[:10] + 0.1, narrow[:10]) == (0.0, 0.0, 10)
    with_nan = np.append(log_true, np.nan)
    assert median_energy_calibration(with_nan, np.append(log_reco, 0.0))[2] == 2000
