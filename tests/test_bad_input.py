"""The bad-input matrix (docs/bad_input.rst): each case refused with one message naming the problem,
or written invalid, and nothing half-written or overwritten."""
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tables
from ctapipe.core import run_tool
from ctapipe.tools.process import ProcessorTool

from ctapipe_gammaphysnet.image_checks import CHECKS, image_check_failures
from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.io.outputs import AtomicOutput, OutputError, temporary_name
from ctapipe_gammaphysnet.reco.engine import InferenceEngine
from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool
from ctapipe_gammaphysnet.tools.simulate_showers import SimulateShowers
from ctapipe_gammaphysnet.tools.train import TrainGammaPhysNetTool

BIN = Path(sys.executable).parent
IMAGES = "/dl1/event/telescope/images/tel_001"
PARAMETERS = "/dl1/event/telescope/parameters/tel_001"
ENERGY_VALID = "GammaPhysNetEnergy_tel_is_valid"


def run(tool, argv, cwd, capsys):
    """Exit code and log of a tool run in this process, as on the command line."""
    code = run_tool(tool, argv=[*argv, "--log-level=INFO"], cwd=cwd, raises=False)
    return code, capsys.readouterr().err


def assert_one_message(log, *words, option_error=False):
    """One ERROR line that says all ``words``, no traceback; ctapipe's "Use --help for more info"
    after it only for an ``option_error`` (a problem of the command line, not of a file)."""
    errors = [line for line in log.splitlines() if ("ERROR" in line or "CRITICAL" in line)
              and not line.endswith("Use --help for more info")]
    assert len(errors) == 1, log
    for word in words:
        assert str(word) in errors[0], errors[0]
    assert "Traceback" not in log
    assert ("Use --help for more info" in log) == option_error, log


def checksum(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def names(directory):
    return sorted(p.name for p in Path(directory).iterdir())


# ----------------------------------------------------------------- 1. training without hadrons
def test_training_needs_hadrons_in_the_background(simulated_dl1_files, tmp_path, capsys):
    gammas = simulated_dl1_files["gamma_diffuse"]
    output = tmp_path / "model.safetensors"
    code, log = run(TrainGammaPhysNetTool(), [f"--signal={gammas}",
                                              f"--background={simulated_dl1_files['gamma']}",
                                              f"--output={output}"], tmp_path, capsys)
    assert code == 2
    assert_one_message(log, simulated_dl1_files["gamma"], "only gamma showers")
    # the same file as signal and background (one with gammas and hadrons), and one file twice
    mixed = tmp_path / "mixed.dl1.h5"
    shutil.copyfile(gammas, mixed)
    with tables.open_file(mixed, "r+") as h5file:
        showers = h5file.get_node("/simulation/event/subarray/shower")
        primary = showers.col("true_shower_primary_id")
        primary[::2] = 101
        showers.modify_column(column=primary, colname="true_shower_primary_id")
    proton = simulated_dl1_files["proton"]
    for files, roles in (([f"--signal={mixed}", f"--background={mixed}"], "signal and as background"),
                         ([f"--signal={gammas}", f"--signal={gammas}", f"--background={proton}"],
                          "signal and as signal")):
        code, log = run(TrainGammaPhysNetTool(), [*files, f"--output={output}"], tmp_path, capsys)
        assert code == 2
        assert_one_message(log, "given twice", f"(as {roles}); give each file once",
                           option_error=True)
    assert not output.exists()
    assert names(tmp_path) == ["ctapipe-train-gammaphysnet.provenance.log", "mixed.dl1.h5"]


def test_model_metadata_is_strict_json(tiny_model_file, tmp_path):
    model = load_model_file(tiny_model_file)
    path = tmp_path / "nan.safetensors"
    save_model_file(path, {t: m.network for t, m in model.models.items()},
                    {t: {"training": {"validation": {"val_auc": float("nan")}}} for t in model.models})
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))

    def refuse(constant):
        raise ValueError(f"{constant} in the model metadata")

    document = json.loads(header["__metadata__"]["gammaphysnet"], parse_constant=refuse)
    assert next(iter(document["telescopes"].values()))["training"]["validation"]["val_auc"] is None


# ----------------------------------------------------------------- 2. broken images
BREAKS = {
    "all charges NaN": lambda q, t: (np.full_like(q, np.nan), t),
    "all charges zero": lambda q, t: (np.zeros_like(q), t),
    "all charges -1e6": lambda q, t: (np.full_like(q, -1e6), t),
    "peak times NaN": lambda q, t: (q, np.full_like(t, np.nan)),
    "one 1e6 p.e. pixel": lambda q, t: (np.where(np.arange(q.size) == np.argmax(q), 1e6, q), t),
}


@pytest.fixture(scope="module")
def broken_dl1(simulated_dl1_files, tmp_path_factory):
    """The simulated gamma file with one image of each kind of BREAKS among its first bright
    images (their stored parameters still pass the selection); ``(path, broken rows)``."""
    path = tmp_path_factory.mktemp("broken") / "broken.dl1.h5"
    shutil.copyfile(simulated_dl1_files["gamma"], path)
    with tables.open_file(path, "r+") as h5file:
        parameters = h5file.get_node(PARAMETERS)
        bright = np.flatnonzero((parameters.col("hillas_intensity") >= 100)
                                & (parameters.col("leakage_intensity_width_2") <= 0.1))
        rows = bright[:len(BREAKS)]
        images = h5file.get_node(IMAGES)
        for row, brake in zip(rows, BREAKS.values()):
            image, peak_time = brake(images[row]["image"], images[row]["peak_time"])
            images.modify_column(row, row + 1, column=image[None], colname="image")
            images.modify_column(row, row + 1, column=peak_time[None], colname="peak_time")
    return path, rows


def test_image_checks(simulated_dl1_files):
    with tables.open_file(simulated_dl1_files["proton"]) as h5file:
        image, peak_time = (h5file.get_node(IMAGES).col(c).astype(np.float64)
                            for c in ("image", "peak_time"))
    # the simulated camera's images (real-like, protons up to 100 TeV) all pass
    assert not np.any(np.logical_or.reduce(list(image_check_failures(image, peak_time).values())))
    expected = dict(zip(BREAKS, ([CHECKS[0], CHECKS[1]], [CHECKS[1]], [CHECKS[1], CHECKS[2]],
                                 [CHECKS[0], CHECKS[1]], [CHECKS[2]])))
    for name, brake in BREAKS.items():
        q, t = brake(image[:1].copy(), peak_time[:1].copy())
        failed = [check for check, mask in image_check_failures(q, t).items() if mask[0]]
        assert failed == expected[name], name
    times = peak_time[:1].copy()
    times[0, 0] = 1e6
    assert image_check_failures(image[:1], times)[CHECKS[3]][0]


def _valid_rows(path):
    with tables.open_file(path) as h5file:
        table = h5file.get_node("/dl2/event/telescope/energy/GammaPhysNetEnergy/tel_001").read()
        events = h5file.get_node(PARAMETERS).read()
    # rows of the DL2 table in the order of the DL1 parameter table
    assert np.array_equal(table["event_id"], events["event_id"][:len(table)])
    return table[ENERGY_VALID], table["GammaPhysNetEnergy_tel_energy"]


def test_broken_images_are_invalid_in_apply(broken_dl1, tiny_model_file, tmp_path, capsys):
    path, rows = broken_dl1
    output = tmp_path / "broken.dl2.h5"
    code, log = run(ApplyGammaPhysNetTool(), [f"--input={path}", f"--model={tiny_model_file}",
                                              f"--output={output}", "--no-progress"],
                    tmp_path, capsys)
    assert code == 0, log
    valid, energy = _valid_rows(output)
    assert not np.any(valid[rows]) and np.all(np.isnan(energy[rows]))
    others = np.setdiff1d(np.flatnonzero(np.isfinite(energy) | ~valid), rows)
    assert np.count_nonzero(valid) > 20 and np.all(np.isfinite(energy[valid]))
    assert len(others) > len(rows)
    assert f"{len(rows)} of " in log and "images failed the image checks" in log


def test_broken_images_are_invalid_in_ctapipe_process(broken_dl1, tiny_model_file, gpn_config,
                                                      tmp_path, capsys):
    path, rows = broken_dl1
    output = tmp_path / "broken.dl2.h5"
    with tables.open_file(path) as h5file:
        n_events = int(np.searchsorted(h5file.root.dl1.event.subarray.trigger.col("event_id"),
                                       h5file.get_node(PARAMETERS).col("event_id")[rows[-1]]) + 1)
    code, log = run(ProcessorTool(), [f"--input={path}", f"--output={output}",
                                      f"--config={gpn_config}", f"--max-events={n_events}",
                                      f"--GammaPhysNetComponent.model_paths={tiny_model_file}"],
                    tmp_path, capsys)
    assert code == 0, log
    valid, energy = _valid_rows(output)
    assert not np.any(valid[rows]) and np.all(np.isnan(energy[rows]))
    assert np.any(valid) and np.all(np.isfinite(energy[valid]))
    assert f"{len(rows)} of " in log and "images failed the image checks" in log


# ----------------------------------------------------------------- 3. --resume without checkpoint
def test_resume_before_the_first_checkpoint(simulated_dl1_files, tmp_path, capsys):
    work_dir = tmp_path / "model_training"
    (work_dir / "LST_LST_LSTCam").mkdir(parents=True)  # interrupted in the first epoch
    output = tmp_path / "model.safetensors"
    code, log = run(TrainGammaPhysNetTool(), [
        f"--signal={simulated_dl1_files['gamma_diffuse']}",
        f"--background={simulated_dl1_files['proton']}", f"--output={output}", "--resume",
        "--preset=tiny", "--epochs=1", "--no-progress"], tmp_path, capsys)
    assert code == 1
    assert_one_message(log, work_dir / "LST_LST_LSTCam" / "checkpoint.pt", "--overwrite")
    assert not output.exists() and names(work_dir / "LST_LST_LSTCam") == []


# ----------------------------------------------------------------- 4. read-only output directory
# the three tools in one process (one start-up), without root's power to write anywhere
READ_ONLY_RUNS = """
import sys
from ctapipe.core import run_tool
from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool
from ctapipe_gammaphysnet.tools.simulate_showers import SimulateShowers
from ctapipe_gammaphysnet.tools.train import TrainGammaPhysNetTool

tools = {"simulate": SimulateShowers, "apply": ApplyGammaPhysNetTool,
         "train": TrainGammaPhysNetTool}
for name, argv in zip(tools, sys.argv[1:]):
    print(f"=== {name}", file=sys.stderr, flush=True)
    code = run_tool(tools[name](), argv=argv.split() + ["--no-progress"], raises=False)
    print(f"=== exit code {code}", file=sys.stderr, flush=True)
"""


def unprivileged():
    """Command prefix without root's power to write anywhere (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_read_only_output_directory(simulated_dl1_files, tiny_model_file, tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    existing = read_only / "existing.dl2.h5"
    existing.write_bytes(b"precious")
    before = checksum(existing)
    read_only.chmod(0o555)
    gamma, proton = simulated_dl1_files["gamma"], simulated_dl1_files["proton"]
    argv = [f"--n-showers=5 --output={read_only / 'sim.h5'}",
            f"--input={gamma} --model={tiny_model_file} --output={existing} --overwrite",
            f"--signal={gamma} --background={proton} --output={read_only / 'model.safetensors'}"]
    try:
        result = subprocess.run([*unprivileged(), sys.executable, "-c", READ_ONLY_RUNS, *argv],
                                check=False, cwd=tmp_path, capture_output=True, text=True)
    finally:
        read_only.chmod(0o755)
    logs = result.stderr.split("=== ")[1:]
    assert [log.split()[0] for log in logs] == ["simulate", "exit", "apply", "exit", "train",
                                                "exit"], result.stderr
    for log, code in zip(logs[::2], logs[1::2]):
        assert code.strip() == "exit code 1", log
        assert_one_message(log, read_only, "cannot write there")
    assert names(read_only) == ["existing.dl2.h5"] and checksum(existing) == before


# ----------------------------------------------------------------- 5. reports on one-sided DL2
@pytest.fixture(scope="module")
def dl2_files(simulated_dl1_files, tiny_model_file, tmp_path_factory):
    """DL2 of the simulated gammas and protons (in directories that did not exist), and a copy
    of the gammas' without events."""
    out = tmp_path_factory.mktemp("dl2")
    result = {}
    for name in ("gamma", "proton"):
        result[name] = out / name / f"{name}.dl2.h5"
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={simulated_dl1_files[name]}", f"--model={tiny_model_file}",
            f"--output={result[name]}", "--no-progress",
            f"--provenance-log={out / name}.provenance.log"], cwd=out, raises=True)
    result["empty"] = out / "empty.dl2.h5"
    shutil.copyfile(result["gamma"], result["empty"])
    with tables.open_file(result["empty"], "r+") as h5file:
        for table in h5file.walk_nodes("/", "Table"):
            if table._v_pathname.startswith(("/dl1/event", "/dl2/event", "/simulation/event")):
                table.remove_rows(0, table.nrows)
    return result


def test_report_on_protons_only(dl2_files, tmp_path, capsys):
    from ctapipe_gammaphysnet.tools.report import ReportTool

    code, log = run(ReportTool(), ["--dl2", str(dl2_files["proton"]),
                                   f"--output-dir={tmp_path / 'report'}"], tmp_path, capsys)
    assert code == 1
    assert_one_message(log, dl2_files["proton"], "no gamma events")
    assert names(tmp_path) == ["ctapipe-report-gammaphysnet.provenance.log"]


def test_report_on_gammas_and_an_empty_file(dl2_files, tmp_path, capsys):
    from ctapipe_gammaphysnet.tools.report import ReportTool

    code, log = run(ReportTool(), ["--dl2", str(dl2_files["empty"]), str(dl2_files["gamma"]),
                                   f"--output-dir={tmp_path / 'report'}"], tmp_path, capsys)
    assert code == 0, log
    assert f"{dl2_files['empty']} holds no events: skipped" in log
    assert "no background events" in log and "cannot be computed" in log
    summary = (tmp_path / "report" / "summary.ecsv").read_text()
    assert " auc " not in summary and "nan" not in summary.split("# %ECSV")[-1].split("\n", 1)[-1]
    assert "resolution" in summary
    code, log = run(ReportTool(), ["--dl2", str(dl2_files["empty"]),
                                   f"--output-dir={tmp_path / 'empty'}"], tmp_path, capsys)
    assert code == 1
    assert_one_message(log, dl2_files["empty"], "no events")
    assert not (tmp_path / "empty").exists()


# ----------------------------------------------------------------- 6. bad simulator option
def test_negative_seed_before_any_file(tmp_path, capsys):
    code, log = run(SimulateShowers(), ["--seed=-3", f"--output={tmp_path / 'sim.h5'}"],
                    tmp_path, capsys)
    assert code == 2 and "'seed'" in log and "less than 0" in log and "Traceback" not in log
    assert names(tmp_path) == ["ctapipe-simulate-showers.provenance.log"]


# ----------------------------------------------------------------- 7. temporaries of a killed run
def test_killed_run_leaves_a_temporary_that_the_next_run_sweeps(tmp_path, capsys):
    output = tmp_path / "sim.h5"
    process = subprocess.Popen([str(BIN / "ctapipe-simulate-showers"), "--n-showers=1000000",
                                f"--output={output}", "--no-progress"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temporary = temporary_name(output, process.pid)
    deadline = time.monotonic() + 120
    while not temporary.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert temporary.exists() and not output.exists()

    code, log = run(SimulateShowers(), ["--n-showers=3", f"--output={output}", "--no-progress"],
                    tmp_path, capsys)
    assert code == 0, log
    assert f"removed {temporary}, left by an interrupted run" in log
    assert names(tmp_path) == ["ctapipe-simulate-showers.provenance.log", "sim.h5"]


def test_atomic_output_on_every_exit(tmp_path):
    path = tmp_path / "out" / "file.txt"  # a missing directory is created
    for error in (KeyboardInterrupt, SystemExit, OSError):
        with pytest.raises(error), AtomicOutput(path) as tmp:
            tmp.write_text("half")
            raise error
        assert names(path.parent) == []
    old_umask = os.umask(0o027)
    try:
        with AtomicOutput(path) as tmp:
            tmp.write_text("complete")
            tmp.chmod(0o600)  # as safetensors' save_file does
    finally:
        os.umask(old_umask)
    assert path.read_text() == "complete" and (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(OutputError, match="exists already; use --overwrite"):
        AtomicOutput(path)
    assert names(path.parent) == ["file.txt"]


# ----------------------------------------------------------------- 8. messages that say the problem
def test_clear_messages_for_bad_training_input(simulated_dl1_files, tmp_path, capsys):
    proton = simulated_dl1_files["proton"]
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(simulated_dl1_files["gamma"].read_bytes()[:200_000])
    code, log = run(SimulateShowers(), ["--n-showers=1", "--energy-min=0.01TeV",
                                        "--energy-max=0.011TeV", f"--output={tmp_path / 'none.h5'}",
                                        "--no-progress"], tmp_path, capsys)
    assert code == 0 and "no shower triggered the telescopes" in log
    cases = {
        tmp_path: "is a directory",
        tmp_path / "none.h5": "no simulated shower triggered",
        truncated: "truncated file",
    }
    for signal_file, message in cases.items():
        code, log = run(TrainGammaPhysNetTool(), [f"--signal={signal_file}", f"--background={proton}",
                                                  f"--output={tmp_path / 'm.safetensors'}"],
                        tmp_path, capsys)
        assert code == 2
        assert_one_message(log, signal_file, message)
        assert "H5F" not in log  # no HDF5 C back-trace
    assert not (tmp_path / "m.safetensors").exists()


def test_subarray_option_names_the_path(tmp_path, capsys):
    code, log = run(SimulateShowers(), [f"--subarray={tmp_path / 'missing.h5'}",
                                        f"--output={tmp_path / 'sim.h5'}"], tmp_path, capsys)
    assert code == 2
    assert "--subarray" in log and str(tmp_path / "missing.h5") in log
    assert "object at 0x" not in log and not (tmp_path / "sim.h5").exists()


def test_muon_camera_has_another_pixel_layout(simtel_files, gpn_config, tiny_model_file,
                                              tmp_path, capsys):
    code, log = run(ProcessorTool(), [
        f"--input={simtel_files['lst_muons']}", f"--output={tmp_path / 'muons.h5'}",
        f"--config={gpn_config}", "--SimTelEventSource.focal_length_choice=EQUIVALENT",
        f"--GammaPhysNetComponent.model_paths={tiny_model_file}"], tmp_path, capsys)
    assert code != 0
    assert "another pixel layout" in log and str(tiny_model_file) in log
    assert not (tmp_path / "muons.h5").exists()


# ----------------------------------------------------------------- 9. permissions, provenance, warnings
def test_model_file_gets_the_umask_permissions(tiny_model_file, tmp_path):
    model = load_model_file(tiny_model_file)
    old_umask = os.umask(0o022)
    try:
        path = save_model_file(tmp_path / "m.safetensors",
                               {t: m.network for t, m in model.models.items()}, {})
    finally:
        os.umask(old_umask)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_apply_provenance_names_the_final_output(dl2_files):
    output = dl2_files["gamma"]
    activity = json.loads((output.parent.parent / "gamma.provenance.log").read_text())[-1]
    assert [entry["url"] for entry in activity["output"]] == [str(output)]
    # the missing output directory was created, and holds the output alone
    assert names(output.parent) == ["gamma.dl2.h5"]


def test_telescopes_without_a_model_are_named(real_subarrays, tiny_model_file, caplog):
    """A mixed subarray (LSTs and FlashCams): the LST model leaves the FlashCams, with a warning."""
    subarray = real_subarrays["proton_run202_za20deg_azm0deg_North_test_layout_test-prod"]
    with caplog.at_level(logging.WARNING):
        engine = InferenceEngine([tiny_model_file], subarray)
    uncovered = [t for t in subarray.tel if engine.group_for(t) is None]
    assert uncovered and len(engine.groups) == 4
    message = next(r.getMessage() for r in caplog.records if "no γ-PhysNet model" in r.getMessage())
    assert "FlashCam" in message and str(uncovered[0]) in message
