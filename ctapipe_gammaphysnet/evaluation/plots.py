"""Figures of the performance report (matplotlib, Agg backend: no display needed).

Each function takes the report's tables and returns a Figure; reference reconstructors are
drawn dashed so that "ours vs reference" reads at a glance.
"""
import astropy.units as u
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_roc_curves",
    "plot_binned",
    "plot_energy_bias_resolution",
    "plot_gammaness",
    "plot_camera_images",
    "plot_sensitivity",
]


def _style(name, references):
    return {"linestyle": "--" if name in references else "-", "marker": "o", "markersize": 3}


def _reconstructors(table):
    return list(dict.fromkeys(table["reconstructor"]))


def _energy_axis(ax, table, energy_label="true energy"):
    ax.set_xscale("log")
    ax.set_xlabel(f"{energy_label} / {table['low'].unit}")
    ax.grid(True, which="both", alpha=0.3)


def _label(name, references):
    return name + (" (reference)" if name in references else "")


def _errorbar(ax, table, column, references):
    for name in _reconstructors(table):
        rows = table[table["reconstructor"] == name]
        center = rows["center"].value
        ax.errorbar(
            center,
            u.Quantity(rows[column]).value,
            xerr=[center - rows["low"].value, rows["high"].value - center],
            label=_label(name, references),
            **_style(name, references),
        )


def plot_roc_curves(roc, auc, references):
    """One panel per true-energy bin: ROC curves of every classifier, AUC in the legend."""
    bins = sorted(set(zip(roc["low"].value, roc["high"].value)))
    n_cols = min(3, len(bins)) or 1
    n_rows = max(1, int(np.ceil(len(bins) / n_cols)))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 4 * n_rows), squeeze=False)
    unit = roc["low"].unit
    for ax, (low, high) in zip(axes.flat, bins):
        for name in _reconstructors(roc):
            rows = roc[(roc["reconstructor"] == name) & (roc["low"].value == low)]
            auc_row = auc[(auc["reconstructor"] == name) & (auc["low"].value == low)]
            ax.plot(
                rows["false_positive_rate"],
                rows["true_positive_rate"],
                label=f"{_label(name, references)}: AUC {auc_row['auc'][0]:.3f}",
                linestyle=_style(name, references)["linestyle"],
            )
        ax.plot([0, 1], [0, 1], color="gray", linewidth=0.5)
        ax.set_title(f"{low:.3g} – {high:.3g} {unit}")
        ax.set_xlabel("background efficiency")
        ax.set_ylabel("gamma efficiency")
        ax.legend(fontsize="small", loc="lower right")
    for ax in list(axes.flat)[len(bins):]:
        ax.set_visible(False)
    if not bins:
        axes.flat[0].text(0.5, 0.5, "no energy bin with both classes", ha="center")
    fig.tight_layout()
    return fig


def plot_binned(table, column, ylabel, references, title, energy_label="true energy",
                log_y=False):
    """A binned metric vs energy, one line per reconstructor."""
    fig, ax = plt.subplots(figsize=(6.4, 4.5))
    _errorbar(ax, table, column, references)
    _energy_axis(ax, table, energy_label)
    if log_y and np.any(u.Quantity(table[column]).value > 0):  # else a log axis is undefined
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_energy_bias_resolution(table, references, title):
    """Energy bias and resolution vs true energy."""
    fig, (ax_bias, ax_resolution) = plt.subplots(2, 1, figsize=(6.4, 7), sharex=True)
    _errorbar(ax_bias, table, "bias", references)
    _errorbar(ax_resolution, table, "resolution", references)
    ax_bias.axhline(0, color="gray", linewidth=0.5)
    ax_bias.set_ylabel("bias: median (E_reco − E_true) / E_true")
    ax_resolution.set_ylabel("resolution: half 16–84 % width")
    _energy_axis(ax_bias, table)
    _energy_axis(ax_resolution, table)
    ax_bias.set_title(title)
    ax_bias.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_sensitivity(table, references, reference_energy, reference_flux, reference_name):
    """E² × differential sensitivity vs reconstructed energy, with 100/10/1 % of the reference
    source's E² × flux drawn in gray."""
    unit = table["energy_flux_sensitivity"].unit
    fig = plot_binned(table, "energy_flux_sensitivity", f"E² × sensitivity / {unit:latex_inline}",
                      references, "differential sensitivity", "reconstructed energy")
    ax = fig.axes[0]
    for fraction, linestyle in ((1, "-"), (0.1, "--"), (0.01, ":")):
        ax.plot(reference_energy.to_value(table["center"].unit),
                fraction * reference_flux.to_value(unit), color="gray", linewidth=0.8,
                linestyle=linestyle, label=f"{fraction:.0%} {reference_name}")
    ax.set_yscale("log")  # the reference lines are positive, whatever the sensitivity
    ax.legend(fontsize="small")
    return fig


def plot_gammaness(histograms, references):
    """Gammaness distributions of gammas and background, one panel per classifier."""
    names = _reconstructors(histograms)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rows = histograms[histograms["reconstructor"] == name]
        edges = np.append(rows["low"], rows["high"][-1])
        for column, label in (("n_gamma", "gammas"), ("n_background", "background")):
            counts = np.asarray(rows[column], dtype=float)
            density = counts / counts.sum() if counts.sum() > 0 else counts
            ax.stairs(density, edges, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("gammaness")
        ax.set_ylabel("fraction of events")
        ax.set_title(_label(name, references))
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_camera_images(images):
    """Camera images with their truth and the predictions, ``images``: list of dicts."""
    from ctapipe.visualization import CameraDisplay

    n_cols = min(2, len(images))
    n_rows = int(np.ceil(len(images) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(6 * n_cols, 6.4 * n_rows), squeeze=False)
    for ax, entry in zip(axes.flat, images):
        display = CameraDisplay(entry["geometry"], image=entry["image"], ax=ax, title="")
        display.add_colorbar(ax=ax, label="charge / p.e.")
        ax.set_title(entry["title"], fontsize="medium")
        ax.text(
            0.01, 0.01, "\n".join(entry["lines"]), transform=ax.transAxes, fontsize="small",
            va="bottom", family="monospace",
        )
    for ax in list(axes.flat)[len(images):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
