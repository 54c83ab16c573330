"""``ctapipe-report-gammaphysnet``: performance report of the reconstructors in DL2 files."""
from pathlib import Path

from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, List, Path as PathTrait, flag

from ..evaluation.dl2 import check_dl2_file
from ..evaluation.irf import PointLikeIRF
from ..evaluation.model_description import add_models_section
from ..evaluation.offsets import OffsetResolvedMetrics
from ..evaluation.report import PerformanceReport
from ..evaluation.transfer import TransferError, add_transfer_section, check_transfer_dir
from ..io.model_file import ModelFileError, load_model_file
from ..io.outputs import atomic_output_directory
from . import GammaPhysNetTool

__all__ = ["ReportTool", "main"]


class ReportTool(GammaPhysNetTool):
    """Compare every reconstructor found in simulated DL2 files against the MC truth.

    Writes, into ``--output-dir``: report.html, one PNG figure and one ECSV table per figure
    (ROC curves, AUC, gammaness, energy bias/resolution and migration, angular resolution, per
    level; metrics by source offset from the pointing and per point-like sample, maps of the
    predicted source positions, θ²), the summary and the comparison with the reference
    reconstructors. Gamma and background events
    may come in separate files. With point-like gamma files (and diffuse proton files) that
    hold their simulation run table, the effective area (and the sensitivity) of each analysis
    chain are added, computed by ctapipe's IRF components.
    """

    name = "ctapipe-report-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-report-gammaphysnet --dl2 gammas.dl2.h5 protons.dl2.h5 \\
        --output-dir report/ --reference-prefix RandomForest --reference-prefix disp
    """

    dl2_files = List(
        PathTrait(directory_ok=False),
        default_value=[],
        help="simulated DL2 files (gammas and background, mixed or separate)",
    ).tag(config=True)
    output_dir = PathTrait(
        default_value=None, allow_none=True, file_ok=False,
        help="directory to write the report into",
    ).tag(config=True)
    overwrite = Bool(False, help="replace an existing output directory").tag(config=True)
    transfer_dir = PathTrait(
        default_value=None, allow_none=True, exists=True, file_ok=False,
        help="output directory of ctapipe-check-transfer-gammaphysnet: shown in the report",
    ).tag(config=True)

    model_files = List(
        PathTrait(directory_ok=False), default_value=[],
        help="γ-PhysNet model files that made the predictions: the report says what each is and "
             "how it was trained (from the file's metadata)",
    ).tag(config=True)

    aliases = {
        ("i", "dl2"): "ReportTool.dl2_files",
        "model": "ReportTool.model_files",
        ("o", "output-dir"): "ReportTool.output_dir",
        "reference-prefix": "PerformanceReport.reference_prefixes",
        "transfer": "ReportTool.transfer_dir",
    }
    flags = {
        **flag(
            "overwrite", "ReportTool.overwrite",
            "Replace an existing output directory", "Refuse an existing output directory",
        ),
    }
    classes = [PerformanceReport, PointLikeIRF, OffsetResolvedMetrics]

    def setup(self):
        # "--dl2 A B" leaves B as a positional argument: every positional argument is a DL2 file
        self.dl2_files = [*self.dl2_files, *(Path(arg).absolute() for arg in self.extra_args)]
        if not self.dl2_files:
            raise ToolConfigurationError("no DL2 file given: use --dl2 FILE [FILE ...]")
        if self.output_dir is None:
            raise ToolConfigurationError("no output directory given: use --output-dir DIR")
        for path in self.dl2_files:
            try:
                check_dl2_file(path)
            except ValueError as error:
                raise ToolConfigurationError(str(error)) from None
        self.output_dir = Path(self.output_dir).absolute()
        if self.output_dir.exists() and not self.overwrite:
            raise ToolConfigurationError(
                f"output directory {self.output_dir} exists, use --overwrite to replace it"
            )
        try:
            self.report = PerformanceReport(parent=self)
        except ValueError as error:
            raise ToolConfigurationError(str(error)) from None
        for path in self.dl2_files:
            Provenance().add_input_file(path, role="DL2 events")
        if self.transfer_dir is not None:
            try:
                check_transfer_dir(self.transfer_dir)
            except TransferError as error:
                raise ToolConfigurationError(str(error)) from None
        try:
            self.models = [load_model_file(path) for path in self.model_files]
        except ModelFileError as error:
            raise ToolConfigurationError(str(error)) from None
        for path in self.model_files:
            Provenance().add_input_file(path, role="γ-PhysNet model")

    def start(self):
        # written next to the destination, then renamed: no half-written report on failure
        with atomic_output_directory(self.output_dir, self.overwrite) as tmp:
            summary = self.report(self.dl2_files, tmp)
            if self.models:
                add_models_section(tmp / "report.html", self.models)
            if self.transfer_dir is not None:
                add_transfer_section(tmp / "report.html", self.transfer_dir)
        for path in sorted(self.output_dir.iterdir()):
            # PNG/ECSV/HTML carry no CTA reference metadata to read
            Provenance().add_output_file(path, role="performance report", add_meta=False)
        # the tool's result: shown whatever the log level
        summary["valid_fraction"].info.format = ".3f"
        summary["value"].info.format = ".4g"
        print("Performance summary (all energies):")
        print("\n".join(summary.pformat(max_lines=-1, max_width=-1)))
        self.log.info("report written to %s", self.output_dir / "report.html")


def main():
    ReportTool().run()


if __name__ == "__main__":
    main()
