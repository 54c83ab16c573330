"""Which γ-PhysNet models made a report's predictions, and how they were trained.

A report compares reconstructors; a reader needs to know what each γ-PhysNet model is (size,
inputs, heads) and what it was trained on (images, epochs, zenith range, its validation metrics)
to judge the figures. This reads it from the model files' own metadata and adds it to the report
(``models.ecsv`` and a section at the top of ``report.html``).
"""
import html
from pathlib import Path

from astropy.table import Table

from .report_render import html_table

__all__ = ["model_table", "add_models_section"]


def _names(paths):
    return ", ".join(Path(p).name for p in paths or ()) or "—"


def model_table(model_files):
    """One row per loaded model file (`io.model_file.ModelFile`) and telescope type: architecture
    and training."""
    rows = []
    for model_file in model_files:
        for tel_type, model in model_file.models.items():
            config = model.network.config
            training = model.metadata.get("training", {})
            trainer = training.get("trainer", {})
            validation = training.get("validation", {})
            zenith = model.zenith_range
            calibration = training.get("energy_calibration")
            rows.append({
                "model_file": model_file.path.name,
                "telescope_type": tel_type,
                "created": model_file.metadata.get("created", ""),
                "preset": trainer.get("preset", "—"),
                "channels": "-".join(map(str, config.channels)),
                "attention": config.attention,
                "inputs": config.inputs,
                "heads": "image parameters, disp" if config.image_parameters else "pooled features, cell votes",
                "pointing_aware": config.pointing,
                "signal_files": _names(training.get("signal_files")),
                "background_files": _names(training.get("background_files")),
                "n_train_images": training.get("n_train_images", -1),
                "epochs_trained": training.get("epochs_trained", -1),
                "best_epoch": training.get("best_epoch", -1),
                "zenith_range_deg": "—" if zenith is None else f"{zenith[0]:g}–{zenith[1]:g}",
                "val_auc": validation.get("val_auc", float("nan")),
                "val_energy_resolution": validation.get("val_energy_resolution", float("nan")),
                "val_angular_resolution_deg": validation.get("val_angular_resolution_deg", float("nan")),
                "energy_calibration": "none" if calibration is None else (
                    f"log10 E += {calibration['offset_dex']:.3f} {calibration['slope']:+.3f} log10 E "
                    f"({calibration['n_validation_gammas']} validation gammas)"),
            })
    return Table(rows=rows)


def add_models_section(report_html, model_files):
    """Write ``models.ecsv`` of the loaded ``model_files`` next to ``report_html`` and add the
    models' section after its summary of the inputs."""
    report_html = Path(report_html)
    table = model_table(model_files)
    table.write(report_html.parent / "models.ecsv")
    section = (
        "<h2>γ-PhysNet models</h2>"
        "<p>The model files that made the γ-PhysNet predictions"
        f" ({html.escape(_names(f.path for f in model_files))}),"
        " from their own metadata: architecture, training images and epochs, the pointing zenith"
        " range of the training images, the validation metrics of the epoch kept (before the"
        " energy calibration) and the energy calibration applied after training. Table:"
        " <a href=\"models.ecsv\">models.ecsv</a>.</p>"
        + html_table(table)
    )
    page = report_html.read_text(encoding="utf-8")
    report_html.write_text(page.replace("<h2>", section + "\n<h2>", 1), encoding="utf-8")
