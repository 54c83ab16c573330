"""ctapipe-apply-gammaphysnet: same DL2 as ctapipe-process, table-based prediction, safe output,
and the DL2 accepted by ctapipe's IRF tools."""
import os

import numpy as np
import pytest
import tables
from astropy.table import join
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.io import HDF5Merger, TableLoader
from ctapipe.reco.reconstructor import ReconstructionProperty

from ctapipe_gammaphysnet.reco.components import (
    CLASSIFICATION_GROUP,
    GammaPhysNetClassifier,
    GammaPhysNetReconstructor,
)
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
from ctapipe_gammaphysnet.tools.apply import ApplyGammaPhysNetTool

PREFIXES = ["GammaPhysNetEnergy", "GammaPhysNetGeometry", "GammaPhysNetClassifier"]
# ctapipe's StereoMeanCombiner estimates the energy spread with np.cov event by event but with
# its own weighted std on tables: the two ctapipe paths differ there, not the network results
CTAPIPE_PATHS_DIFFER = {"GammaPhysNetEnergy_energy_uncert"}


@pytest.fixture(scope="session")
def applied_files(real_dl1_files, tiny_model_file, gpn_config, tmp_path_factory):
    """ctapipe-apply-gammaphysnet (with gpn.yaml) on every real DL1 file, by short name."""
    out = tmp_path_factory.mktemp("applied")
    result = {}
    for name, path in real_dl1_files.items():
        output = out / f"{name}.dl2.h5"
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={path}", f"--output={output}", f"--model={tiny_model_file}",
            f"--config={gpn_config}", "--chunk-size=2", "--batch-size=3", "--no-progress",
        ], cwd=out, raises=True)
        result[name] = output
    return result


def _dl2_layout(path):
    with tables.open_file(path) as h5file:
        return {node._v_pathname: tuple(sorted(node.colnames))
                for node in h5file.walk_nodes("/dl2", "Table")}


def _compare(a, b, keys, name):
    joined = join(a, b, keys=keys, table_names=["apply", "process"])
    assert len(joined) == len(a) == len(b), name
    for column in a.colnames:
        if not column.startswith(tuple(PREFIXES)) or column in CTAPIPE_PATHS_DIFFER:
            continue
        x, y = joined[f"{column}_apply"], joined[f"{column}_process"]
        if x.dtype.kind == "f":
            # 1e-5 of the column's scale: float32 network outputs computed in batches of another
            # size differ in the last bits, which matters for values near zero (core positions,
            # the stereo ang_distance_uncert sqrt(-2 ln r) of identical directions, ~1e-6)
            y = np.asarray(y)
            scale = np.nanmax(np.abs(y), initial=0.0)
            np.testing.assert_allclose(np.asarray(x), y, rtol=1e-5, atol=1e-5 * scale + 1e-6,
                                       equal_nan=True, err_msg=f"{name}: {column}")
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{name}: {column}")


def test_apply_tool_agrees_with_process(applied_files, gpn_dl2_files):
    for name, applied in applied_files.items():
        processed = gpn_dl2_files[name]
        # the same DL2 tables with the same columns
        assert _dl2_layout(applied) == _dl2_layout(processed), name
        options = dict(dl1_parameters=False, simulated=False, true_parameters=False,
                       pointing=False)
        with TableLoader(applied, **options) as a, TableLoader(processed, **options) as b:
            _compare(a.read_telescope_events(), b.read_telescope_events(),
                     ["obs_id", "event_id", "tel_id"], name)
            _compare(a.read_subarray_events(), b.read_subarray_events(),
                     ["obs_id", "event_id"], name)
        # the input (DL1 images and parameters, simulation) was copied along
        with tables.open_file(applied) as h5file:
            assert "/dl1/event/telescope/images" in h5file
            assert "/simulation/event/subarray/shower" in h5file


def test_predict_table(real_dl1_files, tiny_model_file):
    with TableLoader(real_dl1_files["gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test"],
                     dl1_images=True, simulated=False, true_parameters=False) as loader:
        subarray = loader.subarray
        by_type = loader.read_telescope_events_by_type()
    reconstructor = GammaPhysNetReconstructor(subarray, model_paths=[tiny_model_file])
    classifier = GammaPhysNetClassifier(subarray, model_paths=[tiny_model_file])
    types = {str(t): t for t in subarray.telescope_types}
    for type_name, table in by_type.items():
        key = types[type_name]
        predictions = reconstructor.predict_table(key, table)
        predictions.update(classifier.predict_table(key, table))
        assert set(predictions) == {ReconstructionProperty.ENERGY, ReconstructionProperty.GEOMETRY,
                                    ReconstructionProperty.PARTICLE_TYPE}
        # the model's training cuts (the tool's defaults)
        quality = GammaPhysNetImageSelection().table_mask(table)
        energy = predictions[ReconstructionProperty.ENERGY]
        np.testing.assert_array_equal(energy["GammaPhysNetEnergy_tel_is_valid"], quality)
        assert np.all(energy["GammaPhysNetEnergy_tel_energy"][quality] > 0)
        gammaness = predictions[ReconstructionProperty.PARTICLE_TYPE]["GammaPhysNetClassifier_tel_prediction"]
        assert np.all((gammaness[quality] >= 0) & (gammaness[quality] <= 1))
        assert np.all(np.isnan(gammaness[~quality]))
        assert predictions[ReconstructionProperty.GEOMETRY]["GammaPhysNetGeometry_tel_alt"].unit == "deg"


def test_input_without_images_is_refused(real_dl1_files, tiny_model_file, tmp_path):
    no_images = tmp_path / "no_images.dl1.h5"
    with HDF5Merger(no_images, dl1_images=False) as merger:
        merger(real_dl1_files["test_lasercal_v3"])
    output = tmp_path / "out.dl2.h5"
    with pytest.raises(ToolConfigurationError, match="no DL1 images"):
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={no_images}", f"--output={output}", f"--model={tiny_model_file}",
        ], cwd=tmp_path, raises=True)
    assert not output.exists()


def test_output_is_never_destroyed(real_dl1_files, tiny_model_file, tmp_path):
    dl1 = real_dl1_files["test_lasercal_v3"]
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "existing.dl2.h5"
    output.write_bytes(b"precious")

    def apply(*argv):
        run_tool(ApplyGammaPhysNetTool(), argv=[f"--input={dl1}", *argv, "--no-progress"],
                 cwd=tmp_path, raises=True)

    with pytest.raises(ToolConfigurationError, match="exists"):
        apply(f"--output={output}", f"--model={tiny_model_file}")
    # a bad model with --overwrite: refused before anything is written
    with pytest.raises(ToolConfigurationError, match="does not exist"):
        apply(f"--output={output}", f"--model={tmp_path / 'missing.safetensors'}", "--overwrite")
    with pytest.raises(ToolConfigurationError, match="is the input"):
        apply(f"--output={dl1}", f"--model={tiny_model_file}", "--overwrite")
    with pytest.raises(ToolConfigurationError, match="does not exist"):
        run_tool(ApplyGammaPhysNetTool(), argv=[
            f"--input={tmp_path / 'missing.h5'}", f"--output={output}",
            f"--model={tiny_model_file}"], cwd=tmp_path, raises=True)
    assert output.read_bytes() == b"precious"
    assert [p.name for p in output.parent.iterdir()] == [output.name]  # no temporaries left

    apply(f"--output={output}", f"--model={tiny_model_file}", "--overwrite")
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
    with TableLoader(output) as loader:
        assert "GammaPhysNetEnergy_energy" in loader.read_subarray_events().colnames


def test_irf_preprocessing_reads_our_prefixes(gpn_dl2_files):
    """ctapipe's IRF tools read DL2 through DL2EventPreprocessor, one prefix per property."""
    from ctapipe.io.dl2_tables_preprocessing import DL2EventPreprocessor
    from traitlets.config import Config

    preprocessor = DL2EventPreprocessor(config=Config(_irf_config()))
    with TableLoader(gpn_dl2_files["test_lasercal_v3"], observation_info=True) as loader:
        events = loader.read_subarray_events()
    selected = events[preprocessor.quality_query.get_table_mask(events)]
    assert len(selected) > 0
    normalised = preprocessor.normalise_column_names(selected)
    for column in ("reco_energy", "reco_alt", "reco_az", "gh_score"):
        assert np.all(np.isfinite(normalised[column])), column


def _irf_config():
    return {"DL2EventPreprocessor": {
        "energy_reconstructor": "GammaPhysNetEnergy",
        "geometry_reconstructor": "GammaPhysNetGeometry",
        "gammaness_classifier": "GammaPhysNetClassifier",
        "DL2EventQualityQuery": {"quality_criteria": [
            ["valid classifier", "GammaPhysNetClassifier_is_valid"],
            ["valid geometry", "GammaPhysNetGeometry_is_valid"],
            ["valid energy", "GammaPhysNetEnergy_is_valid"],
        ]},
    }}


def test_irf_tools_accept_our_dl2(gpn_dl2_files, tmp_path):
    """ctapipe-optimize-event-selection and ctapipe-compute-irf (need pyirf) on our DL2."""
    pytest.importorskip("pyirf")
    import json

    from ctapipe.tools.compute_irf import IrfTool
    from ctapipe.tools.optimize_event_selection import EventSelectionOptimizer

    config = tmp_path / "irf.json"
    # percentile cuts: the sensitivity optimiser needs a significant bin, which a 2-epoch tiny model
    # on a few real events may not give; the format is what this test checks
    config.write_text(json.dumps({
        **_irf_config(), "EventSelectionOptimizer": {"optimization_algorithm": "PercentileCuts"}}))
    gamma = gpn_dl2_files["test_lasercal_v3"]
    proton = gpn_dl2_files["proton_run202_za20deg_azm0deg_North_test_layout_test-prod"]
    cuts, irf = tmp_path / "cuts.fits", tmp_path / "irf.fits.gz"
    run_tool(EventSelectionOptimizer(), argv=[
        f"--gamma-file={gamma}", f"--proton-file={proton}", f"--output={cuts}",
        f"--config={config}"], cwd=tmp_path, raises=True)
    run_tool(IrfTool(), argv=[
        f"--gamma-file={gamma}", f"--proton-file={proton}", f"--cuts={cuts}",
        f"--output={irf}", f"--config={config}", "--no-do-background"], cwd=tmp_path, raises=True)
    assert cuts.exists() and irf.exists()


def test_classification_group_matches_ctapipe_version(applied_files):
    path = next(iter(applied_files.values()))
    with tables.open_file(path) as h5file:
        assert f"/dl2/event/subarray/{CLASSIFICATION_GROUP}/GammaPhysNetClassifier" in h5file
