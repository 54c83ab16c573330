"""The main job's driver: which commands it runs, per-sample scales, reuse and resumption."""
import subprocess

import pytest

from ctapipe_gammaphysnet import demo as demo_module
from ctapipe_gammaphysnet.demo import Demo, main
from ctapipe_gammaphysnet.io.outputs import temporary_name


@pytest.fixture
def recorded(monkeypatch):
    """Record the commands instead of running them; each 'creates' the output it is given."""
    commands = []

    def fake_run(args, check, cwd):
        commands.append(args)
        output = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
        (cwd / output).touch()

    monkeypatch.setattr(demo_module.subprocess, "run", fake_run)
    return commands


def test_sample_scales_replace_the_global_scale(tmp_path, recorded):
    Demo(tmp_path, scale=2.0, sample_scales={"test_proton": 0.5, "test_gamma_0.4*": 3}).simulate()
    showers = {
        next(a for a in c if a.startswith("--output=")).split("/")[-1]:
            next(a for a in c if a.startswith("--n-showers="))
        for c in recorded
    }
    assert showers[temporary_name("train_gamma_diffuse.dl1.h5").name] == "--n-showers=50000"
    assert showers[temporary_name("test_proton.dl1.h5").name] == "--n-showers=9000"
    # a pattern: the four wobble positions at 0.4°
    assert showers[temporary_name("test_gamma_0.4deg_pa90.dl1.h5").name] == "--n-showers=3000"
    assert showers[temporary_name("test_gamma_1.0deg.dl1.h5").name] == "--n-showers=3000"
    # finished steps are reused
    recorded.clear()
    Demo(tmp_path, scale=2.0).simulate()
    assert recorded == []


def test_unknown_sample_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown sample"):
        Demo(tmp_path, sample_scales={"train_electron": 1.0})
    with pytest.raises(SystemExit):
        main(["--output-dir", str(tmp_path), "--sample-scale", "train_gammas=2"])
    with pytest.raises(SystemExit):
        main(["--output-dir", str(tmp_path), "--sample-scale", "test_gamma"])


def test_interrupted_training_resumes(tmp_path, recorded):
    Demo(tmp_path).train_gammaphysnet()
    assert "--overwrite" in recorded[0] and "--resume" not in recorded[0]

    recorded.clear()
    (tmp_path / "gammaphysnet.safetensors").unlink()
    checkpoint = tmp_path / "gammaphysnet_training" / "LST_LST_LSTCam" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    Demo(tmp_path, compile=True).train_gammaphysnet()
    assert "--resume" in recorded[0] and "--overwrite" not in recorded[0]
    assert "--compile" in recorded[0]


def test_failed_step_leaves_no_output(tmp_path, monkeypatch):
    def failing_run(args, check, cwd):
        output = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
        (cwd / output).write_text("half written")
        raise subprocess.CalledProcessError(2, args)

    monkeypatch.setattr(demo_module.subprocess, "run", failing_run)
    assert main(["--output-dir", str(tmp_path), "--scale", "0.01"]) == 1
    assert not (tmp_path / "train_gamma_diffuse.dl1.h5").exists()
