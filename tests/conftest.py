"""Session-scoped fixtures shared by the test suite.

Real data: the sim_telarray files in ../shared/data/simtel (see its README), turned into DL1 HDF5
files with images by ``ctapipe-process --write-images`` once per session.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GAMMAPHYSNET_SHARED_DATA", REPO.parent / "shared" / "data"))
SIMTEL_DIR = SHARED_DATA / "simtel"


def _simtel_name(path):
    return path.name.split(".simtel")[0]


@pytest.fixture(scope="session")
def simtel_files():
    """All real sim_telarray files of the shared data, by short name."""
    files = sorted(SIMTEL_DIR.glob("*.simtel*"))
    if not files:
        pytest.fail(f"no sim_telarray files found in {SIMTEL_DIR}")
    return {_simtel_name(f): f for f in files}


@pytest.fixture(scope="session")
def lst1_subarray():
    """The real LST-1 subarray (LSTCam, 1855 hexagonal pixels), offline."""
    from ctapipe_io_lst import LSTEventSource

    return LSTEventSource.create_subarray(tel_id=1)


@pytest.fixture(scope="session")
def real_dl1_files(simtel_files, tmp_path_factory):
    """DL1 files with images made by ctapipe-process from every shower file of the shared data."""
    out = tmp_path_factory.mktemp("real_dl1")
    result = {}
    for name, path in simtel_files.items():
        if name == "lst_muons":  # muon calibration run: needs focal_length_choice, no showers
            continue
        output = out / f"{name}.dl1.h5"
        subprocess.run(
            [
                str(Path(sys.executable).parent / "ctapipe-process"),
                f"--input={path}",
                f"--output={output}",
                "--write-images",
                "--overwrite",
                "--log-level=WARN",
            ],
            check=True,
            cwd=out,
        )
        result[name] = output
    return result


@pytest.fixture(scope="session")
def real_subarrays(simtel_files):
    """``SubarrayDescription`` of every shower file of the shared data, by short name (fast: header only)."""
    from ctapipe.io import SimTelEventSource

    subarrays = {}
    for name, path in simtel_files.items():
        if name == "lst_muons":
            continue
        with SimTelEventSource(path, max_events=1) as source:
            subarrays[name] = source.subarray
    return subarrays


@pytest.fixture(scope="session")
def real_cameras(lst1_subarray, real_subarrays):
    """Real camera geometries by camera name: LSTCam (LST-1), LSTS-design, LSTN-design,
    MSTx-NectarCam (1855 hexagonal pixels like the LSTs, but another layout) and FlashCam
    (hexagons turned by 30°)."""
    cameras = {lst1_subarray.tel[1].camera.geometry.name: lst1_subarray.tel[1].camera.geometry}
    for subarray in real_subarrays.values():
        for tel_type in subarray.telescope_types:
            geometry = tel_type.camera.geometry
            cameras.setdefault(geometry.name, geometry)
    return cameras


@pytest.fixture(scope="session")
def tiny_model_file(simulated_dl1_files, tmp_path_factory):
    """A ``PRESETS["tiny"]`` LSTCam model trained for two epochs on the simulator's showers by
    ``ctapipe-train-gammaphysnet``: not a good model, but a real one."""
    from ctapipe.core import run_tool

    from ctapipe_gammaphysnet.tools.train import TrainGammaPhysNetTool

    out = tmp_path_factory.mktemp("models")
    path = out / "tiny_lstcam.safetensors"
    argv = [f"--signal={simulated_dl1_files['gamma_diffuse']}",
            f"--background={simulated_dl1_files['proton']}", f"--output={path}",
            "--preset=tiny", "--epochs=2", "--batch-size=32", "--no-progress"]
    run_tool(TrainGammaPhysNetTool(), argv=argv, cwd=out, raises=True)
    return path


@pytest.fixture(scope="session")
def gpn_config():
    """The packaged ``gpn.yaml`` (ctapipe-process configuration of the γ-PhysNet components)."""
    from importlib.resources import files

    return Path(str(files("ctapipe_gammaphysnet.resources") / "gpn.yaml"))


@pytest.fixture(scope="session")
def gpn_dl2_files(simtel_files, tiny_model_file, gpn_config, tmp_path_factory):
    """``ctapipe-process --config gpn.yaml`` with ``tiny_model_file`` on every real shower file,
    run in this process, by short name. (The muon run's old LSTCam has another pixel order, so
    the LST-1 model does not apply to it: see test_reco_components.)"""
    from ctapipe.core import run_tool
    from ctapipe.tools.process import ProcessorTool

    out = tmp_path_factory.mktemp("gpn_dl2")
    result = {}
    for name, path in simtel_files.items():
        if name == "lst_muons":
            continue
        output = out / f"{name}.dl2.h5"
        argv = [f"--input={path}", f"--output={output}", f"--config={gpn_config}",
                f"--GammaPhysNetComponent.model_paths={tiny_model_file}", "--log-level=WARN"]
        run_tool(ProcessorTool(), argv=argv, cwd=out, raises=True)
        result[name] = output
    return result


# small runs of the built-in simulator: a few hundred triggered LST-1 images per particle type
_SIMULATED_RUNS = {
    "gamma": dict(particle="gamma", n_showers=600, energy_min=0.05, energy_max=50.0, max_impact=300.0),
    "gamma_diffuse": dict(
        particle="gamma-diffuse", n_showers=800, energy_min=0.05, energy_max=50.0, max_impact=300.0,
        view_cone=2.5,
    ),
    "proton": dict(
        particle="proton", n_showers=900, energy_min=0.15, energy_max=100.0, max_impact=350.0, view_cone=2.5
    ),
}


@pytest.fixture(scope="session")
def simulated_dl1_files(tmp_path_factory):
    """DL1 files (images + parameters, LST-1) from the built-in simulator, by particle type:
    ``{"gamma": Path, "gamma_diffuse": Path, "proton": Path}``."""
    from ctapipe_gammaphysnet.simulation import simulate_to_file

    out = tmp_path_factory.mktemp("simulated_dl1")
    return {
        name: simulate_to_file(out / f"{name}.dl1.h5", seed=seed, **options)
        for seed, (name, options) in enumerate(_SIMULATED_RUNS.items(), start=1)
    }


@pytest.fixture(scope="session")
def calibrated_model_file(real_dl1_files, lst1_subarray, tmp_path_factory):
    """A ``PRESETS["small"]`` LSTCam model file whose batch norms hold the statistics of the real
    LST images (train-mode passes, no weight update) and non-trivial scales and offsets, so that
    folding them into convolutions (``nn.inference``, ONNX export) is really exercised."""
    import numpy as np
    import torch
    from ctapipe.io import TableLoader

    from ctapipe_gammaphysnet.geometry import CameraGrid
    from ctapipe_gammaphysnet.io.model_file import save_model_file
    from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet

    images, times = [], []
    for path in real_dl1_files.values():
        with TableLoader(path, dl1_images=True, dl1_parameters=False, simulated=False,
                         pointing=False) as loader:
            lst_types = [t for t in loader.subarray.telescope_types if t.optics.size_type.name == "LST"]
            for table in loader.read_telescope_events_by_type(lst_types).values():
                images.append(np.asarray(table["image"], dtype=np.float32))
                times.append(np.asarray(table["peak_time"], dtype=np.float32))
    image, time = torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(times))

    torch.manual_seed(0)
    grid = CameraGrid.from_geometry(lst1_subarray.tel[1].camera.geometry)
    network = GammaPhysNet(grid, PRESETS["small"]).train()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.momentum = None  # cumulative average over the passes
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        for _ in range(3):
            network(image, time)
    network.eval()
    path = tmp_path_factory.mktemp("calibrated_model") / "small_lstcam.safetensors"
    tel_type = str(lst1_subarray.tel[1])
    save_model_file(path, {tel_type: network},
                    {tel_type: {"training": {"note": "test fixture, batch-norm statistics only"}}})
    return path
