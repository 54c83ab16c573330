"""``ctapipe-train-gammaphysnet``: train γ-PhysNet on ctapipe DL1 files with images."""
import logging
import math
import shutil

from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, List, Path as PathTrait, Unicode, flag

from ..geometry import CameraGrid
from ..io.dl1_dataset import ImageStreamOptions
from ..selection import GammaPhysNetImageSelection
from ..io.model_file import save_model_file
from ..io.outputs import check_output
from ..training import distributed
from ..training.augmentation import ImageAugmentation
from ..training.trainer import GammaPhysNetTrainer
from . import TRAINER_ALIASES, GammaPhysNetTool, TrainingFiles

__all__ = ["TrainGammaPhysNetTool", "main"]


class TrainGammaPhysNetTool(GammaPhysNetTool, TrainingFiles, ImageStreamOptions):
    """Train γ-PhysNet (gammaness, energy, direction, impact) on simulated DL1 images.

    One network is trained per telescope type found in the files (or the types given), and all of
    them are saved in one model file for the ``GammaPhysNetReconstructor`` / ``Classifier``.
    Started by ``torchrun --nproc-per-node N``, the N processes train one model data-parallel;
    rank 0 writes the model, checkpoints, metrics, logs and provenance.
    """

    name = "ctapipe-train-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-train-gammaphysnet \\
        --signal gamma_diffuse.dl1.h5 --background proton.dl1.h5 \\
        --output gammaphysnet.safetensors --preset small --epochs 10

    torchrun --nproc-per-node 4 --no-python ctapipe-train-gammaphysnet \
        --signal gamma_diffuse.dl1.h5 --background proton.dl1.h5 \
        --output gammaphysnet.safetensors --preset paper --batch-size 1024
    """

    output_path = PathTrait(None, allow_none=True, directory_ok=False,
                            help="Output model file (.safetensors)").tag(config=True)
    work_dir = PathTrait(
        None, allow_none=True, file_ok=False,
        help="Checkpoints and metrics (default: <output stem>_training next to the output)",
    ).tag(config=True)
    telescope_types = List(Unicode(), default_value=[],
                           help="Telescope types to train (default: every type present)").tag(config=True)
    overwrite = Bool(False, help="Overwrite the output model and work directory").tag(config=True)
    resume = Bool(False, help="Continue from the checkpoints in the work directory").tag(config=True)

    aliases = {
        ("s", "signal"): "TrainGammaPhysNetTool.signal_files",
        ("b", "background"): "TrainGammaPhysNetTool.background_files",
        ("o", "output"): "TrainGammaPhysNetTool.output_path",
        "work-dir": "TrainGammaPhysNetTool.work_dir",
        "telescope-type": "TrainGammaPhysNetTool.telescope_types",
        **TRAINER_ALIASES,
        "learning-rate": "GammaPhysNetTrainer.learning_rate",
        "loss-balancing": "GammaPhysNetTrainer.loss_balancing",
        "seed": "GammaPhysNetTrainer.seed",
    }
    flags = {
        **flag("overwrite", "TrainGammaPhysNetTool.overwrite",
               "Overwrite existing output", "Refuse to overwrite existing output"),
        **flag("resume", "TrainGammaPhysNetTool.resume",
               "Resume from the last checkpoints", "Start from scratch"),
        **flag("pointing-aware", "GammaPhysNetTrainer.pointing_aware",
               "The network takes the pointing zenith angle as an input (files of several pointings)",
               "The network does not see the pointing (files of one pointing)"),
        **flag("attention", "GammaPhysNetTrainer.attention",
               "Use dual attention", "Train without the attention modules"),
        **flag("progress", "GammaPhysNetTrainer.progress_bar",
               "Show progress bars", "Hide progress bars"),
        **flag("compile", "GammaPhysNetTrainer.compile",
               "torch.compile the training steps (faster after 1-2 min of compilation)",
               "Train eagerly"),
    }
    classes = [GammaPhysNetTrainer, ImageAugmentation, GammaPhysNetImageSelection]

    def setup(self):
        if self.output_path is None:
            raise ToolConfigurationError("no output model file given (--output)")
        self.check_training_files_given()
        if self.output_path.exists() and not (self.overwrite or self.resume):
            raise ToolConfigurationError(
                f"{self.output_path}: output exists; use --overwrite to replace it or --resume")
        self.work_dir = self.work_dir or self.output_path.with_name(self.output_path.stem + "_training")
        if self.work_dir.exists() and not (self.overwrite or self.resume):
            raise ToolConfigurationError(
                f"{self.work_dir}: work directory of an earlier training exists; "
                "use --resume to continue it or --overwrite to start again")
        # before hours of training: the model can be written there
        check_output(self.output_path, overwrite=True)

        self.files = self.read_training_files()

        present = sorted({str(t) for f in self.files for t in f.subarray.telescope_types})
        unknown = set(self.telescope_types) - set(present)
        if unknown:
            raise ToolConfigurationError(
                f"telescope types {sorted(unknown)} are not in the input files (present: {present})")
        self.trainer = GammaPhysNetTrainer(parent=self)
        self.selection = GammaPhysNetImageSelection(parent=self)
        self.enter_context(distributed.process_group(self.trainer.torch_device()))
        if not distributed.is_main_process():
            self.log_level = logging.WARNING
            self.update_logging_config()

        self.streams = {}
        for tel_type in self.telescope_types or present:
            streams = self.image_streams(self.files, tel_type, self.selection, self.trainer.seed)
            counts = {split: stream.count() for split, stream in streams.items()}
            self.log.info("%s: %d training and %d validation images pass the quality cuts",
                          tel_type, counts["train"], counts["validation"])
            if counts["train"] == 0 or counts["validation"] == 0:
                if self.telescope_types:
                    raise ToolConfigurationError(
                        f"{tel_type}: no images left after the quality cuts for "
                        f"{'training' if counts['train'] == 0 else 'validation'} "
                        f"({counts['train']} training, {counts['validation']} validation)")
                self.log.warning("%s: skipped, too few images after the quality cuts", tel_type)
                continue
            self.streams[tel_type] = (streams, counts)
        if not self.streams:
            raise ToolConfigurationError(
                "no images left after the image selection "
                "(GammaPhysNetImageSelection.quality_criteria)")

    def start(self):
        self.networks, self.metadata = {}, {}
        fresh_start = self.overwrite and not self.resume
        if fresh_start and self.work_dir.exists() and distributed.is_main_process():
            shutil.rmtree(self.work_dir)
        for tel_type, (streams, counts) in self.streams.items():
            self.log.info("training %s (%s preset, %s)", tel_type, self.trainer.preset,
                          "attention" if self.trainer.attention else "no attention")
            network, summary = self.trainer.train(
                self._grid(tel_type), streams["train"], streams["validation"],
                self.work_dir / tel_type, resume=self.resume)
            self.networks[tel_type] = network
            for name, value in summary["validation"].items():
                if not math.isfinite(value):
                    self.log.warning("%s: %s cannot be computed on the validation images (e.g. an "
                                     "AUC needs gammas and hadrons): null in the model file",
                                     tel_type, name)
            training = {
                "signal_files": [str(p) for p in self.signal_files],
                "background_files": [str(p) for p in self.background_files],
                "n_train_images": counts["train"],
                "n_validation_images": counts["validation"],
                "trainer": {k: v for k, v in self.trainer.trait_values().items()
                            if self.trainer.traits()[k].metadata.get("config")},
                "augmentation": self.trainer.augmentation.settings(),
                **summary,
            }
            # inference applies the same selection, and warns outside the zenith range (reco)
            self.metadata[tel_type] = {"image_selection": self.selection.quality_criteria,
                                       "pointing": {"zenith_range_deg": summary["pointing_zenith_range_deg"]},
                                       "training": training}

    def _grid(self, tel_type):
        for training_file in self.files:
            for tel in training_file.subarray.telescope_types:
                if str(tel) == tel_type:
                    return CameraGrid.from_geometry(tel.camera.geometry)
        raise KeyError(tel_type)

    def finish(self):
        if distributed.is_main_process():
            save_model_file(self.output_path, self.networks, self.metadata,
                            overwrite=self.overwrite or self.resume)
            Provenance().add_output_file(str(self.output_path), role="reconstruction model",
                                         add_meta=False)
            self.log.info("model written to %s", self.output_path)
        # the other ranks leave only once the model is written (torchrun then reports success)
        distributed.barrier()

    def write_provenance(self):
        # called after the process group is gone: the launcher's rank decides
        if distributed.launch_rank() == 0:
            super().write_provenance()


def main():
    TrainGammaPhysNetTool().run()


if __name__ == "__main__":
    main()
