"""``ctapipe-check-transfer-gammaphysnet``: the reconstructors on real images vs simulated ones."""
from pathlib import Path

import numpy as np
from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, List, Path as PathTrait, flag

from ..evaluation.transfer import TransferCheck, TransferError, plot_transfer
from ..io.outputs import atomic_output_directory
from . import GammaPhysNetTool

__all__ = ["CheckTransferTool", "main"]


def _markdown(table, columns):
    """A markdown table of ``columns`` of ``table`` (floats with 3 significant digits)."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "" if not np.isfinite(value) else f"{value:.3g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join(cell(row[c]) for c in columns) + " |")
    return "\n".join(lines)


VERDICT_COLUMNS = ["reconstructor", "particle", "metric", "n_images", "real", "real_error",
                   "expected", "transfer_ratio", "transfer_ratio_error", "difference", "verdict"]
SUMMARY_COLUMNS = ["reconstructor", "particle", "intensity_band", "n_images", "metric", "real",
                   "real_error", "expected", "transfer_ratio", "difference", "median_gammaness",
                   "expected_median_gammaness"]
COMPARISON_COLUMNS = ["reconstructor", "reference", "particle", "metric", "n_images", "real",
                      "reference_real", "difference", "difference_error", "verdict"]


class CheckTransferTool(GammaPhysNetTool):
    """Judge every reconstructor of real-simulation DL2 files against its expectation.

    The telescope-level results on real images (e.g. sim_telarray files through
    ``ctapipe-process --config gpn.yaml`` with the Random Forests) are compared with the same
    reconstructors on simulated test images of matched true energy and intensity: per image, and
    per intensity band, E_reco/E_true, the angular error and the gammaness, the transfer ratio
    (real / expected error) and a verdict. Writes into ``--output-dir``: images.ecsv (one row
    per real image), summary.ecsv, verdicts.ecsv, proton_gammaness.ecsv, transfer.md and
    transfer.png, and with ``--reference-prefix`` comparison.ecsv (each reconstructor against
    the reference on the same real images); nothing if it fails.
    """

    name = "ctapipe-check-transfer-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-check-transfer-gammaphysnet \\
        --real test_lasercal_v3.dl2.h5 --real proton_run202.dl2.h5 \\
        --simulated test_gamma.dl2.h5 --simulated test_proton.dl2.h5 --output-dir transfer/
    """

    real_files = List(
        PathTrait(exists=True, directory_ok=False), default_value=[],
        help="DL2 files of real simulations (telescope-level results, DL1 parameters, truth)",
    ).tag(config=True)
    simulated_files = List(
        PathTrait(exists=True, directory_ok=False), default_value=[],
        help="DL2 files of simulated test images with the same reconstructors (the expectation)",
    ).tag(config=True)
    output_dir = PathTrait(
        default_value=None, allow_none=True, file_ok=False,
        help="directory to write the transfer check into",
    ).tag(config=True)
    overwrite = Bool(False, help="replace an existing output directory").tag(config=True)

    aliases = {
        "real": "CheckTransferTool.real_files",
        "simulated": "CheckTransferTool.simulated_files",
        ("o", "output-dir"): "CheckTransferTool.output_dir",
        "reference-prefix": "TransferCheck.reference_prefixes",
    }
    flags = {
        **flag("overwrite", "CheckTransferTool.overwrite",
               "Replace an existing output directory", "Refuse an existing output directory"),
    }
    classes = [TransferCheck]

    def setup(self):
        if not self.real_files:
            raise ToolConfigurationError("no real DL2 file given: use --real FILE")
        if not self.simulated_files:
            raise ToolConfigurationError("no simulated DL2 file given: use --simulated FILE")
        if self.output_dir is None:
            raise ToolConfigurationError("no output directory given: use --output-dir DIR")
        self.output_dir = Path(self.output_dir).absolute()
        if self.output_dir.exists() and not self.overwrite:
            raise ToolConfigurationError(
                f"output directory {self.output_dir} exists, use --overwrite to replace it")
        try:
            self.check = TransferCheck(parent=self)
        except ValueError as error:
            raise ToolConfigurationError(str(error)) from None
        for path in self.real_files:
            Provenance().add_input_file(path, role="DL2 events of real simulations")
        for path in self.simulated_files:
            Provenance().add_input_file(path, role="DL2 events of simulated test images")

    def start(self):
        try:
            # read and compared before anything is written
            result = self.check(self.real_files, self.simulated_files)
        except TransferError as error:
            raise ToolConfigurationError(str(error)) from None
        images = result.images
        images.meta["real_files"] = [str(p) for p in self.real_files]
        images.meta["simulated_files"] = [str(p) for p in self.simulated_files]
        with atomic_output_directory(self.output_dir, self.overwrite) as tmp:
            images.write(tmp / "images.ecsv")
            result.summary.write(tmp / "summary.ecsv")
            result.verdicts.write(tmp / "verdicts.ecsv")
            if result.proton_gammaness is not None:
                result.proton_gammaness.write(tmp / "proton_gammaness.ecsv")
            if result.comparison is not None:
                result.comparison.write(tmp / "comparison.ecsv")
            plot_transfer(result).savefig(tmp / "transfer.png", dpi=90)
            comparison = ("" if result.comparison is None else
                          "\n\n## Against the reference on the same real images\n\n"
                          + _markdown(result.comparison, COMPARISON_COLUMNS))
            (tmp / "transfer.md").write_text(
                "# Transfer check: real vs simulated images\n\n## Verdicts (all intensities)\n\n"
                + _markdown(result.verdicts, VERDICT_COLUMNS) + comparison
                + "\n\n## Per intensity band (p.e.)\n\n"
                + _markdown(result.summary, SUMMARY_COLUMNS) + "\n", encoding="utf-8")
        for path in sorted(self.output_dir.iterdir()):
            Provenance().add_output_file(path, role="transfer check", add_meta=False)
        n_selected = int(np.count_nonzero(images["selected"]))
        self.log.info("%d real images, %d selected and matched", len(images), n_selected)
        verdicts = result.verdicts
        for column in ("real", "real_error", "expected", "transfer_ratio", "transfer_ratio_error",
                       "difference"):
            verdicts[column].info.format = ".3g"
        # the tool's result: shown whatever the log level
        print("Transfer check (real vs simulated images, all intensities):")
        print("\n".join(verdicts[VERDICT_COLUMNS].pformat(max_lines=-1, max_width=-1)))
        if result.comparison is not None:
            comparison = result.comparison
            for column in ("real", "reference_real", "difference", "difference_error"):
                comparison[column].info.format = ".3g"
            print("Against the reference on the same real images:")
            print("\n".join(comparison[COMPARISON_COLUMNS].pformat(max_lines=-1, max_width=-1)))
        self.log.info("transfer check written to %s", self.output_dir)


def main():
    CheckTransferTool().run()


if __name__ == "__main__":
    main()
