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
                "--log-level=WARNING",
            ],
            check=True,
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
