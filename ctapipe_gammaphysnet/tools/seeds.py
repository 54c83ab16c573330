"""``ctapipe-train-gammaphysnet-seeds``: seed variability of γ-PhysNet with and without attention."""
from pathlib import Path

from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, List, Path as PathTrait, Unicode, flag

from ..geometry import CameraGrid
from ..io.dl1_dataset import DL1InputError, inspect_training_files
from ..selection import GammaPhysNetImageSelection
from ..evaluation.seed_study import SeedVariabilityStudy
from ..training.trainer import GammaPhysNetTrainer
from ..io.outputs import atomic_output_directory
from . import TRAINER_ALIASES, GammaPhysNetTool, TrainingFiles

__all__ = ["TrainGammaPhysNetSeedsTool", "main"]


class TrainGammaPhysNetSeedsTool(GammaPhysNetTool, TrainingFiles):
    """Train γ-PhysNet with N seeds with attention and N without, on identical data, and report
    the spread of the results, the agreement of their Grad-CAM maps, and what ensembles of the
    seeds gain. Writes ECSV tables, summary.md, PNG plots and every member's model file."""

    name = "ctapipe-train-gammaphysnet-seeds"
    description = __doc__
    examples = """
    ctapipe-train-gammaphysnet-seeds \\
        --signal gamma_diffuse.dl1.h5 --background proton.dl1.h5 \\
        --test test_gamma.dl1.h5 --test test_proton.dl1.h5 \\
        --real real_gamma.dl1.h5 --real real_proton.dl1.h5 \\
        --output seed_study --n-seeds 5 --preset small --epochs 10
    """

    test_files = List(PathTrait(), default_value=[],
                      help="DL1 files of the test images (default: the validation split)").tag(config=True)
    real_files = List(PathTrait(), default_value=[],
                      help="DL1 files with images of real simulations (sim_telarray files through "
                           "ctapipe-process --write-images): every member also predicts their "
                           "images of the studied camera, and the spread is measured on them "
                           "too").tag(config=True)
    output_dir = PathTrait(None, allow_none=True, file_ok=False,
                           help="Output directory of the study").tag(config=True)
    telescope_type = Unicode(None, allow_none=True,
                             help="Telescope type to study (needed if the files hold several)").tag(config=True)
    overwrite = Bool(False, help="Replace an existing output directory").tag(config=True)

    aliases = {
        ("s", "signal"): "TrainGammaPhysNetSeedsTool.signal_files",
        ("b", "background"): "TrainGammaPhysNetSeedsTool.background_files",
        ("t", "test"): "TrainGammaPhysNetSeedsTool.test_files",
        "real": "TrainGammaPhysNetSeedsTool.real_files",
        ("o", "output"): "TrainGammaPhysNetSeedsTool.output_dir",
        "telescope-type": "TrainGammaPhysNetSeedsTool.telescope_type",
        "n-seeds": "SeedVariabilityStudy.n_seeds",
        "ensemble-size": "SeedVariabilityStudy.ensemble_size",
        **TRAINER_ALIASES,
    }
    flags = {
        **flag("overwrite", "TrainGammaPhysNetSeedsTool.overwrite",
               "Replace an existing output directory", "Refuse to replace existing output"),
        **flag("progress", "GammaPhysNetTrainer.progress_bar", "Show progress bars", "Hide progress bars"),
    }
    classes = [SeedVariabilityStudy, GammaPhysNetTrainer, GammaPhysNetImageSelection]

    def setup(self):
        if self.output_dir is None:
            raise ToolConfigurationError("no output directory given (--output)")
        self.check_training_files_given()
        self.output_dir = Path(self.output_dir).absolute()
        if self.output_dir.exists() and not self.overwrite:
            raise ToolConfigurationError(f"{self.output_dir}: output exists, use --overwrite to replace it")
        try:
            self.study = SeedVariabilityStudy(parent=self)
        except ValueError as err:
            raise ToolConfigurationError(str(err)) from None
        files = self.read_training_files()
        try:
            test_files = inspect_training_files(self.test_files)
            real_files = inspect_training_files(self.real_files)
        except DL1InputError as err:
            raise ToolConfigurationError(str(err)) from None
        for test_file in test_files:
            Provenance().add_input_file(str(test_file.path), role="DL1/Event test")
        for real_file in real_files:
            Provenance().add_input_file(str(real_file.path), role="DL1/Event real test")

        present = {str(t): t for f in files for t in f.subarray.telescope_types}
        if self.telescope_type is None:
            if len(present) != 1:
                raise ToolConfigurationError(
                    f"the files hold several telescope types ({', '.join(sorted(present))}): "
                    "choose one with --telescope-type")
            self.telescope_type = next(iter(present))
        if self.telescope_type not in present:
            raise ToolConfigurationError(f"telescope type {self.telescope_type} is not in the input "
                                         f"files (present: {', '.join(sorted(present))})")
        self.grid = CameraGrid.from_geometry(present[self.telescope_type].camera.geometry)
        if test_files and not any(self.telescope_type in {str(t) for t in f.subarray.telescope_types}
                                  for f in test_files):
            raise ToolConfigurationError(f"no test file holds telescope type {self.telescope_type}")

        selection = GammaPhysNetImageSelection(parent=self)
        self.streams = self.study.streams(files, self.telescope_type, selection, test_files)
        counts = [stream.count() for stream in self.streams]
        self.log.info("%s: %d training, %d validation and %d test images pass the quality cuts",
                      self.telescope_type, *counts)
        real_streams = self.study.real_streams(real_files, self.grid, selection)
        real_counts = [stream.count() for stream in real_streams]
        self.real_streams = [stream for stream, n in zip(real_streams, real_counts) if n > 0]
        n_real = sum(real_counts)
        if real_files and n_real == 0:
            raise ToolConfigurationError(
                f"no image of the real files shows the camera of {self.telescope_type} and passes "
                "the image selection")
        if real_files:
            self.log.info("%d real images of that camera pass the quality cuts", n_real)
        for split, n in zip(("training", "validation", "test"), counts):
            if n == 0:
                raise ToolConfigurationError(
                    f"{self.telescope_type}: no {split} images left after the image selection "
                    "(GammaPhysNetImageSelection.quality_criteria)")
        self.metadata = {"signal_files": [str(p) for p in self.signal_files],
                         "background_files": [str(p) for p in self.background_files],
                         "test_files": [str(p) for p in self.test_files],
                         "real_files": [str(p) for p in self.real_files],
                         "n_images": dict(zip(("train", "validation", "test"), counts))}

    def start(self):
        with atomic_output_directory(self.output_dir, self.overwrite) as tmp:
            self.result = self.study.run(self.grid, self.telescope_type, self.streams, tmp,
                                         metadata=self.metadata, final_dir=self.output_dir,
                                         real_streams=self.real_streams)
        tests = self.result.hypothesis_tests()
        for metric, test in tests.items():
            self.log.info("%s: std %.4g with attention, %.4g without (F-test p = %.2f)", metric,
                          test["std_attention"], test["std_no_attention"], test["p_value"])
        self.log.info("seed study written to %s", self.output_dir / "summary.md")

    def finish(self):
        if self.output_dir.exists():
            for path in sorted(self.output_dir.rglob("*")):
                if path.is_file() and path.suffix in (".ecsv", ".md", ".png", ".json", ".yaml", ".safetensors"):
                    Provenance().add_output_file(str(path), role="seed study", add_meta=False)


def main():
    TrainGammaPhysNetSeedsTool().run()


if __name__ == "__main__":
    main()
