"""One image selection: what training used is what inference applies, in both inference paths."""
import logging
from importlib.resources import files

import numpy as np
import pytest
import tables
import yaml
from astropy.table import join
from ctapipe.core import run_tool
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader
from ctapipe.tools.process import ProcessorTool
from traitlets.config import Config

from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.reco.components import GammaPhysNetReconstructor
from ctapipe_gammaphysnet.selection import TRAINING_CRITERIA, GammaPhysNetImageSelection
from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool

EDGE = "leakage_intensity_width_2"


def _resource(name):
    return yaml.safe_load((files("ctapipe_gammaphysnet.resources") / name).read_text())


@pytest.fixture(scope="module")
def subarray(simulated_dl1_files):
    return SubarrayDescription.from_hdf(simulated_dl1_files["gamma"])


def _resave(model_path, path, **telescope_metadata):
    """The networks of ``model_path`` in a new file whose per-type metadata is replaced."""
    model_file = load_model_file(model_path)
    networks = {t: m.network for t, m in model_file.models.items()}
    save_model_file(path, networks, {t: telescope_metadata for t in networks})
    return path


def test_training_cuts_are_recorded_and_applied(tiny_model_file, subarray, tmp_path):
    """The tiny model's file records the training tool's cuts, and the reconstructor applies
    exactly the recorded ones, whatever they are."""
    (model,) = load_model_file(tiny_model_file).models.values()
    assert model.image_selection == list(TRAINING_CRITERIA)
    reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[tiny_model_file])
    assert isinstance(reconstructor.quality_query, GammaPhysNetImageSelection)
    assert list(map(tuple, reconstructor.quality_query.quality_criteria)) == model.image_selection

    stricter = [("bright", "hillas_intensity >= 200"), ("compact", EDGE + " <= 0.05")]
    other = _resave(tiny_model_file, tmp_path / "other_cuts.safetensors",
                    image_selection=stricter, training={})
    reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[other])
    assert list(map(tuple, reconstructor.quality_query.quality_criteria)) == stricter


def test_resources_use_the_training_cuts():
    """baseline_rf.yaml's forests see the images γ-PhysNet is trained on; gpn.yaml leaves the
    selection to the model file."""
    baseline = _resource("baseline_rf.yaml")
    sections = [tool[model]["QualityQuery"]["quality_criteria"]
                for tool, model in (("TrainEnergyRegressor", "EnergyRegressor"),
                                    ("TrainParticleClassifier", "ParticleClassifier"),
                                    ("TrainDispReconstructor", "DispReconstructor"))
                for tool in [baseline[tool]]]
    assert all(list(map(tuple, criteria)) == list(TRAINING_CRITERIA) for criteria in sections)

    def names(node):
        if isinstance(node, dict):
            return set(node) | set().union(*map(names, node.values()))
        return set()

    assert not names(_resource("gpn.yaml")) & {"GammaPhysNetImageSelection", "QualityQuery",
                                               "StereoQualityQuery", "quality_criteria"}


def test_override_admitting_more_images_warns(tiny_model_file, subarray, caplog):
    looser = [("enough intensity", "hillas_intensity >= 50")]
    config = Config({"GammaPhysNetImageSelection": {"quality_criteria": looser}})
    with caplog.at_level(logging.WARNING):
        reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[tiny_model_file],
                                                  config=config)
    assert list(map(tuple, reconstructor.quality_query.quality_criteria)) == looser
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("leave out the training cuts" in m and EDGE in m for m in warnings), warnings

    # stricter than the training: every training cut kept (however spaced), one added
    caplog.clear()
    stricter = [(name, expression.replace(" ", "")) for name, expression in TRAINING_CRITERIA]
    config = Config({"GammaPhysNetImageSelection": {
        "quality_criteria": stricter + [("bright", "hillas_intensity > 300")]}})
    with caplog.at_level(logging.WARNING):
        GammaPhysNetReconstructor(subarray, model_paths=[tiny_model_file], config=config)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_stereo_quality_query_configuration_is_reported(tiny_model_file, subarray, caplog):
    config = Config({"GammaPhysNetReconstructor": {"StereoQualityQuery": {
        "quality_criteria": [("> 3 pixels", "parameters.morphology.n_pixels > 3")]}}})
    with caplog.at_level(logging.WARNING):
        GammaPhysNetReconstructor(subarray, model_paths=[tiny_model_file], config=config)
    assert any("StereoQualityQuery" in r.getMessage() and "not used" in r.getMessage()
               for r in caplog.records)


def test_old_model_files_get_the_training_defaults(tiny_model_file, subarray, tmp_path, caplog):
    old = _resave(tiny_model_file, tmp_path / "old.safetensors", training={"epochs": 2})
    (model,) = load_model_file(old).models.values()
    assert model.image_selection is None
    with caplog.at_level(logging.INFO, logger="ctapipe_gammaphysnet.selection"):
        reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[old])
    assert list(map(tuple, reconstructor.quality_query.quality_criteria)) == list(TRAINING_CRITERIA)
    assert any("no image selection recorded" in r.getMessage() for r in caplog.records)

    # the first files kept the cuts among the training details: those are used
    kept = _resave(tiny_model_file, tmp_path / "first.safetensors",
                   training={"quality_criteria": [["enough intensity", "hillas_intensity >= 80"]]})
    reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[kept])
    assert reconstructor.quality_query.quality_criteria == [("enough intensity",
                                                             "hillas_intensity >= 80")]


def _telescope_results(path):
    with TableLoader(path, dl1_parameters=True, dl2=True, simulated=False, pointing=False) as loader:
        tables_by_type = loader.read_telescope_events_by_type()
    (table,) = tables_by_type.values()
    return table


@pytest.fixture(scope="module")
def processed(simulated_dl1_files, tiny_model_file, gpn_config, tmp_path_factory):
    """The simulated gamma file (LST-1 images) through ctapipe-process with gpn.yaml and
    through ctapipe-apply-gammaphysnet."""
    out = tmp_path_factory.mktemp("selection")
    source = simulated_dl1_files["gamma"]
    process, apply = out / "process.dl2.h5", out / "apply.dl2.h5"
    run_tool(ProcessorTool(), argv=[
        f"--input={source}", f"--output={process}", f"--config={gpn_config}",
        f"--GammaPhysNetComponent.model_paths={tiny_model_file}", "--log-level=WARN"],
        cwd=out, raises=True)
    run_tool(ApplyGammaPhysNetTool(), argv=[
        f"--input={source}", f"--output={apply}", f"--model={tiny_model_file}", "--no-progress",
        "--log-level=WARN"], cwd=out, raises=True)
    return process, apply


def test_edge_images_are_written_invalid(processed):
    """Images at the camera edge (leakage₂ > 0.2) that ctapipe's default StereoQualityQuery
    would pass get no prediction from ctapipe-process, nor from the batched tool."""
    process, apply = processed
    table = _telescope_results(process)
    intensity = np.asarray(table["hillas_intensity"])
    width = table["hillas_width"].quantity.value
    passes_stereo_defaults = (intensity > 50) & (width > 0) & (table["morphology_n_pixels"] > 3)
    edge = passes_stereo_defaults & (np.asarray(table[EDGE]) > 0.2)
    inside = (intensity >= 50) & (np.asarray(table[EDGE]) <= 0.2) & (width > 0)
    assert np.count_nonzero(edge) >= 1 and np.count_nonzero(inside) >= 20

    for prefix, column in (("GammaPhysNetEnergy", "energy"), ("GammaPhysNetClassifier",
                                                              "prediction")):
        valid = np.asarray(table[f"{prefix}_tel_is_valid"])
        values = np.asarray(table[f"{prefix}_tel_{column}"])
        assert not np.any(valid[edge]) and np.all(np.isnan(values[edge]))
        np.testing.assert_array_equal(valid, inside)

    batched = _telescope_results(apply)
    both = join(table, batched, keys=["obs_id", "event_id", "tel_id"], table_names=["p", "a"])
    assert len(both) == len(table)
    np.testing.assert_array_equal(both["GammaPhysNetEnergy_tel_is_valid_p"],
                                  both["GammaPhysNetEnergy_tel_is_valid_a"])

    # the statistics ctapipe-process writes are those of the image selection
    with tables.open_file(process) as h5:
        statistics = h5.root.dl2.service.tel_event_statistics.GammaPhysNetReconstructor.read()
    assert [c.decode() for c in statistics["criteria"]][1:] == [n for n, _ in TRAINING_CRITERIA]
