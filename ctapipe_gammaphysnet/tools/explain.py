"""``ctapipe-explain-gammaphysnet``: Grad-CAM and attention maps of γ-PhysNet on camera images."""
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack
from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, Int, List, Path as PathTrait, flag
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader
from ctapipe.io.astropy_helpers import write_table

from ..evaluation.explain import ExplanationFigure, explain_images
from ..io.dl1_dataset import DL1InputError, check_dl1_images, compute_targets
from ..io.model_file import ModelFileError, load_model_file
from ..io.outputs import atomic_output_directory
from ..progress import progress_bar
from ..reco.engine import match_models, table_pointing
from ..selection import GammaPhysNetImageSelection
from . import GammaPhysNetTool

__all__ = ["ExplainGammaPhysNetTool", "main"]

MAPS_FILE = "explanations.h5"


class ExplainGammaPhysNetTool(GammaPhysNetTool):
    """Show what γ-PhysNet looks at in chosen or random camera images of a DL1 file.

    For each image: charge, peak time, a Grad-CAM map per task (gammaness, energy, fov_lon,
    fov_lat) and the spatial-attention map of every stage, all on the camera's pixels, in one PNG
    with the predictions and the simulated truth in its title; every map also goes into
    ``explanations.h5`` (one table per telescope type, one row per image).
    """

    name = "ctapipe-explain-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-explain-gammaphysnet --model gammaphysnet.safetensors \\
        --input gamma.dl1.h5 --n-events 10 --output explain_gamma
    ctapipe-explain-gammaphysnet --model m.safetensors --input gamma.dl1.h5 \\
        --event-ids 1201 --event-ids 3405 --output explain_chosen --overwrite
    """

    model_path = PathTrait(None, allow_none=True, exists=None, directory_ok=False,
                           help="γ-PhysNet model file (.safetensors)").tag(config=True)
    input_path = PathTrait(None, allow_none=True, exists=None, directory_ok=False,
                           help="DL1 file with images").tag(config=True)
    output_dir = PathTrait(None, allow_none=True, file_ok=False,
                           help="Output directory (PNGs and explanations.h5)").tag(config=True)
    n_events = Int(5, help="Number of random events to explain (ignored with event_ids)").tag(config=True)
    event_ids = List(Int(), default_value=[],
                     help="Explain these events (event_id) instead of random ones").tag(config=True)
    seed = Int(0, help="Seed of the random choice of events").tag(config=True)
    stage = Int(-1, help="Stage whose output Grad-CAM explains (0 = first, -1 = last)").tag(config=True)
    chunk_size = Int(2000, help="Subarray events read at once").tag(config=True)
    overwrite = Bool(False, help="Replace an existing output directory").tag(config=True)

    aliases = {
        ("m", "model"): "ExplainGammaPhysNetTool.model_path",
        ("i", "input"): "ExplainGammaPhysNetTool.input_path",
        ("o", "output"): "ExplainGammaPhysNetTool.output_dir",
        "n-events": "ExplainGammaPhysNetTool.n_events",
        "event-ids": "ExplainGammaPhysNetTool.event_ids",
        "seed": "ExplainGammaPhysNetTool.seed",
        "stage": "ExplainGammaPhysNetTool.stage",
    }
    flags = flag("overwrite", "ExplainGammaPhysNetTool.overwrite",
                 "Replace an existing output directory", "Refuse to replace existing output")
    classes = [GammaPhysNetImageSelection]

    def setup(self):
        for trait, option in (("model_path", "--model"), ("input_path", "--input"),
                              ("output_dir", "--output")):
            if getattr(self, trait) is None:
                raise ToolConfigurationError(f"no {trait.replace('_', ' ')} given ({option})")
        if not self.event_ids and self.n_events < 1:
            raise ToolConfigurationError(f"--n-events must be at least 1, not {self.n_events}")
        self.output_dir = Path(self.output_dir).absolute()
        if self.output_dir.exists() and not self.overwrite:
            raise ToolConfigurationError(f"{self.output_dir}: output exists, use --overwrite to replace it")
        try:
            self.model_file = load_model_file(self.model_path)
        except ModelFileError as err:
            raise ToolConfigurationError(str(err)) from None
        self._check_input()
        self.subarray = SubarrayDescription.from_hdf(self.input_path)

        # telescope type in the file → network, matched by camera geometry
        try:
            matched, _ = match_models([self.model_file], self.subarray)
        except ModelFileError as err:
            raise ToolConfigurationError(str(err)) from None
        self.models = {str(self.subarray.tel[tel_id]): (self.subarray.tel[tel_id], model)
                       for tel_id, (model,) in matched.items()}
        for model in {id(m): m for _, m in self.models.values()}.values():
            n_stages = len(model.network.stages)
            if not -n_stages <= self.stage < n_stages:
                raise ToolConfigurationError(
                    f"--stage {self.stage}: the {model.tel_type} network has {n_stages} stages")
        self.selection = GammaPhysNetImageSelection.for_models(
            [model.image_selection for _, model in self.models.values()], parent=self,
            description=str(self.model_path))
        Provenance().add_input_file(str(self.model_path), role="reconstruction model", add_meta=False)
        Provenance().add_input_file(str(self.input_path), role="DL1/Event")

    def _check_input(self):
        try:
            self.n_subarray_events, self.simulated = check_dl1_images(self.input_path)
        except DL1InputError as err:
            raise ToolConfigurationError(str(err)) from None

    def _chunks(self, **options):
        """Telescope-event tables of the modelled telescope types, chunk by chunk."""
        types = [t for t, _ in self.models.values()]
        with TableLoader(self.input_path, **options) as loader:
            for start in range(0, self.n_subarray_events, self.chunk_size):
                stop = min(start + self.chunk_size, self.n_subarray_events)
                tables_by_type = loader.read_telescope_events_by_type(types, start=start, stop=stop)
                for tel_type, table in tables_by_type.items():
                    if len(table) > 0:
                        yield str(tel_type), table

    def _select_events(self):
        """(obs_id, event_id) pairs to explain: the chosen ones, or random ones with good images."""
        available = set()
        passing = set()
        for _, table in self._chunks(dl1_parameters=True, simulated=False, instrument=False,
                                     pointing=False):
            keys = list(zip(table["obs_id"].tolist(), table["event_id"].tolist()))
            available.update(keys)
            mask = self.selection.table_mask(table)
            passing.update(k for k, good in zip(keys, mask) if good)
        if self.event_ids:
            chosen = {k for k in available if k[1] in set(self.event_ids)}
            missing = set(self.event_ids) - {k[1] for k in chosen}
            if missing:
                raise ToolConfigurationError(
                    f"{self.input_path}: no image of a modelled camera for event_id(s) "
                    f"{sorted(missing)}")
            return chosen
        if not passing:
            raise ToolConfigurationError(
                f"{self.input_path}: no image of a modelled camera passes the image selection "
                "(GammaPhysNetImageSelection.quality_criteria)")
        candidates = sorted(passing)
        if len(candidates) < self.n_events:
            self.log.warning("only %d events with good images, explaining all of them", len(candidates))
        rng = np.random.default_rng(self.seed)
        picked = rng.choice(len(candidates), size=min(self.n_events, len(candidates)), replace=False)
        return {candidates[i] for i in picked}

    def _read_images(self, events):
        """The selected images, per telescope type, with truth when the file is simulated."""
        selected = {}
        for tel_type, table in self._chunks(dl1_images=True, dl1_parameters=False,
                                            simulated=self.simulated, instrument=self.simulated,
                                            pointing=True):
            keys = zip(table["obs_id"].tolist(), table["event_id"].tolist())
            mask = np.array([k in events for k in keys])
            if np.any(mask):
                selected.setdefault(tel_type, []).append(table[mask])
        return {tel_type: vstack(parts) for tel_type, parts in selected.items()}

    def start(self):
        events = self._select_events()
        images = self._read_images(events)
        self.log.info("explaining %d images of %d events", sum(map(len, images.values())), len(events))
        with atomic_output_directory(self.output_dir, self.overwrite) as tmp:
            for tel_type, table in images.items():
                self._explain(tel_type, table, tmp)
        self.log.info("explanations written to %s", self.output_dir)

    def _explain(self, tel_type, table, directory):
        description, model = self.models[tel_type]
        image = np.asarray(table["image"], dtype=np.float32)
        peak_time = np.asarray(table["peak_time"], dtype=np.float32)
        zenith = 90.0 - table_pointing(table)[0] if model.network.config.pointing else None
        result = explain_images(model.network, image, peak_time, stage=self.stage, pointing_zenith=zenith)
        truth = compute_targets(table) if self.simulated else None

        maps = Table({"obs_id": table["obs_id"], "event_id": table["event_id"],
                      "tel_id": table["tel_id"], "image": image, "peak_time": peak_time})
        outputs = result["outputs"]
        maps["gammaness"] = outputs["gammaness"]
        maps["log_energy"] = outputs["log_energy"]
        maps["fov_lon"], maps["fov_lat"] = outputs["direction"][:, 0], outputs["direction"][:, 1]
        if truth is not None:
            maps["true_label"] = truth["label"]
            maps["true_log_energy"] = truth["log_energy"]
            maps["true_fov_lon"] = truth["direction"][:, 0]
            maps["true_fov_lat"] = truth["direction"][:, 1]
        for task, values in result["grad_cam"].items():
            maps[f"grad_cam_{task}"] = values
        for stage, values in result["attention"].items():
            maps[f"attention_stage{stage}"] = values
        maps.meta.update(model=str(self.model_path), model_tel_type=model.tel_type,
                         grad_cam_stage=result["stage"], input=str(self.input_path))
        write_table(maps, directory / MAPS_FILE, f"/explanations/{tel_type}")

        figure = ExplanationFigure(description.camera.geometry, maps.colnames)
        for i in progress_bar(range(len(maps)), desc=f"plots {tel_type}", unit="image", leave=False):
            row = maps[i]
            name = f"obs{row['obs_id']}_event{row['event_id']}_tel{row['tel_id']:03d}.png"
            figure.save(row, directory / name)

    def finish(self):
        if self.output_dir.exists():
            for path in sorted(self.output_dir.iterdir()):
                Provenance().add_output_file(str(path), role="explanation", add_meta=False)


def main():
    ExplainGammaPhysNetTool().run()


if __name__ == "__main__":
    main()
