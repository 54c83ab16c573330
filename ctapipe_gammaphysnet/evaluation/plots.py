"""Figures of the performance report (matplotlib ``Figure`` objects: no pyplot, no display).

Each function takes the report's tables and returns a Figure; reference reconstructors are
drawn dashed so that "ours vs reference" reads at a glance.
"""

import astropy.units as u
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

__all__ = [
    "plot_roc_curves",
    "plot_binned",
    "plot_energy_bias_resolution",
    "plot_gammaness",
    "plot_camera_images",
    "plot_sensitivity",
    "plot_energy_migration",
    "plot_vs_offset",
    "plot_offset_bias_per_sample",
    "plot_fov_maps",
    "plot_theta_squared",
]


def _subplots(*args, figsize, **kwargs):
    """A figure (no pyplot: no global state, no backend to choose) and its axes."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*args, **kwargs)


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
    fig, axes = _subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 4 * n_rows), squeeze=False)
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
    fig, ax = _subplots(figsize=(6.4, 4.5))
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
    fig, (ax_bias, ax_resolution) = _subplots(2, 1, figsize=(6.4, 7), sharex=True)
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
    fig, axes = _subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
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


# the reconstructed source positions, one style per reconstructor (the true one: a red star)
_SOURCE_STYLES = (("o", "orange"), ("s", "cyan"), ("D", "magenta"), ("^", "white"),
                  ("v", "yellow"), ("P", "lime"))


def plot_camera_images(images, hillas=True):
    """Camera images in the ``TelescopeFrame`` (deg), each with a text panel beside it.

    ``images``: list of dicts with ``geometry`` (a ``CameraGeometry``), ``image``, ``title``,
    ``lines`` (the predictions, as text), ``true_source`` (fov_lon, fov_lat in deg, or None),
    ``sources`` (list of (label, fov_lon, fov_lat) of the reconstructed positions) and optionally
    ``hillas`` (dict of fov_lon, fov_lat, length, width, psi in deg), drawn as the 1-σ ellipse if
    ``hillas`` is true.
    """
    from ctapipe.coordinates import TelescopeFrame
    from ctapipe.visualization import CameraDisplay
    from matplotlib.patches import Ellipse

    n_cols = min(2, len(images))
    n_rows = int(np.ceil(len(images) / n_cols))
    # per image a cell of 8 x 4.6 in: the camera (square), its colour bar, the text panel;
    # placed by hand (tight_layout squeezes equal-aspect cameras next to text)
    fig = Figure(figsize=(8 * n_cols, 4.6 * n_rows))
    cameras, bars, panels = [], [], []
    for i in range(len(images)):
        x, y = (i % n_cols) / n_cols, 1 - (i // n_cols + 1) / n_rows
        w, h = 1 / n_cols, 1 / n_rows
        cameras.append(fig.add_axes([x + 0.07 * w, y + 0.11 * h, 0.45 * w, 0.75 * h]))
        bars.append(fig.add_axes([x + 0.53 * w, y + 0.11 * h, 0.015 * w, 0.75 * h]))
        panels.append(fig.add_axes([x + 0.64 * w, y + 0.05 * h, 0.35 * w, 0.85 * h]))
    geometries = {}  # each camera turned into the TelescopeFrame once
    for ax, bar, panel, entry in zip(cameras, bars, panels, images):
        key = id(entry["geometry"])
        if key not in geometries:
            geometries[key] = entry["geometry"].transform_to(TelescopeFrame())
        geometry = geometries[key]
        display = CameraDisplay(geometry, image=entry["image"], ax=ax, title="")
        # the camera fills its box (CameraDisplay would widen the data limits instead)
        margin = 2 * float(np.max(geometry.pixel_width.to_value(u.deg)))
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlim(geometry.pix_x.to_value(u.deg).min() - margin,
                    geometry.pix_x.to_value(u.deg).max() + margin)
        ax.set_ylim(geometry.pix_y.to_value(u.deg).min() - margin,
                    geometry.pix_y.to_value(u.deg).max() + margin)
        display.add_colorbar(cax=bar, label="charge / p.e.")
        ax.set_title(entry["title"], fontsize="medium")
        if hillas and entry.get("hillas"):
            moments = entry["hillas"]
            ax.add_patch(Ellipse((moments["fov_lon"], moments["fov_lat"]), 2 * moments["length"],
                                 2 * moments["width"], angle=moments["psi"], fill=False,
                                 edgecolor="white", linestyle="--", linewidth=1.2,
                                 label="Hillas ellipse"))
        if entry.get("true_source") is not None:
            ax.plot(*entry["true_source"], marker="*", markersize=16, color="red",
                    markeredgecolor="white", linestyle="none", label="true source")
        for (label, lon, lat), (marker, color) in zip(entry.get("sources", []), _SOURCE_STYLES):
            ax.plot(lon, lat, marker=marker, markersize=11, markerfacecolor="none",
                    markeredgewidth=2, color=color, linestyle="none", label=label)
        panel.axis("off")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # a grey background: the white Hillas ellipse shows in it
            panel.legend(handles, labels, loc="upper left", fontsize="small", facecolor="0.75",
                         edgecolor="none", bbox_to_anchor=(0.0, 1.0))
        panel.text(0.0, 0.55, "\n".join(entry["lines"]), transform=panel.transAxes,
                   fontsize="small", va="top", family="monospace")
    return fig


def plot_energy_migration(table, references):
    """Migration matrices, one panel per energy reconstructor: the fraction of each true-energy
    bin's events per bin of reconstructed energy, the diagonal drawn."""
    names = _reconstructors(table)
    fig, axes = _subplots(1, len(names), figsize=(5 * len(names), 4.3), squeeze=False)
    unit = table["true_low"].unit
    for ax, name in zip(axes.flat, names):
        rows = table[table["reconstructor"] == name]
        true_edges = np.unique(np.append(rows["true_low"].value, rows["true_high"].value))
        reco_edges = np.unique(np.append(rows["reco_low"].value, rows["reco_high"].value))
        fraction = np.full((len(true_edges) - 1, len(reco_edges) - 1), np.nan)
        fraction[np.searchsorted(true_edges, rows["true_low"].value),
                 np.searchsorted(reco_edges, rows["reco_low"].value)] = rows["fraction"]
        mesh = ax.pcolormesh(true_edges, reco_edges, fraction.T, vmin=0, vmax=1, cmap="viridis")
        ax.plot(true_edges[[0, -1]], true_edges[[0, -1]], color="white", linewidth=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"true energy / {unit}")
        ax.set_ylabel(f"reconstructed energy / {unit}")
        ax.set_title(_label(name, references))
        fig.colorbar(mesh, ax=ax, label="fraction of the true-energy bin")
    fig.tight_layout()
    return fig


def plot_vs_offset(table, column, ylabel, references, title, diagonal=False):
    """A metric vs true offset from the pointing: diffuse bins as lines (sample "diffuse"), each
    point-like sample as a marker, one colour per reconstructor."""
    fig, ax = _subplots(figsize=(6.4, 4.5))
    markers = "osD^v<>ph*"
    point_names = [n for n in dict.fromkeys(table["sample"]) if n != "diffuse"]
    for k, name in enumerate(_reconstructors(table)):
        color = f"C{k}"
        rows = table[(table["reconstructor"] == name) & (table["sample"] == "diffuse")]
        if len(rows):
            center = rows["center"].value
            ax.errorbar(center, u.Quantity(rows[column]).value,
                        xerr=[center - rows["low"].value, rows["high"].value - center],
                        color=color, label=f"{_label(name, references)}, diffuse",
                        **_style(name, references))
        for i, sample in enumerate(point_names):
            point = table[(table["reconstructor"] == name) & (table["sample"] == sample)]
            ax.plot(point["center"].value, u.Quantity(point[column]).value, linestyle="none",
                    marker=markers[i % len(markers)], color=color, markersize=7,
                    markerfacecolor="none" if name in references else color,
                    label=f"{_label(name, references)}, {sample}")
    if diagonal:
        limit = table["high"].value.max()
        ax.plot([0, limit], [0, limit], color="gray", linewidth=0.7, label="unbiased")
    ax.set_xlabel(f"true offset from the pointing / {table['center'].unit}")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def plot_offset_bias_per_sample(table, references):
    """Predicted-offset bias vs true energy of each point-like sample, one panel per geometry
    reconstructor."""
    names = _reconstructors(table)
    fig, axes = _subplots(1, len(names), figsize=(5.5 * len(names), 4.3), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes.flat, names):
        rows = table[table["reconstructor"] == name]
        for sample in dict.fromkeys(rows["sample"]):
            sample_rows = rows[rows["sample"] == sample]
            center = sample_rows["center"].value
            ax.errorbar(center, sample_rows["offset_bias"].value,
                        xerr=[center - sample_rows["low"].value, sample_rows["high"].value - center],
                        label=f"{sample} ({sample_rows['true_offset'][0].value:.2g}°)",
                        marker="o", markersize=3)
        ax.axhline(0, color="gray", linewidth=0.7)
        _energy_axis(ax, rows)
        ax.set_ylabel("median (predicted − true) offset / deg")
        ax.set_title(_label(name, references))
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_fov_maps(maps, sources, references, min_events):
    """2-D histograms of the predicted source positions in the field of view, one row per
    geometry reconstructor and one column per true-energy band with at least ``min_events``
    events; the true source positions ``sources`` [(fov_lon, fov_lat)] marked +, the pointing x."""
    edges = np.asarray(maps.meta["fov_edges_deg"])
    names = _reconstructors(maps)
    bands = sorted({(low, high) for low, high, n in zip(
        maps["energy_low"].value, maps["energy_high"].value, maps["n_events"]) if n >= min_events})
    bands = bands or [(maps["energy_low"][0].value, maps["energy_high"][0].value)]
    fig, axes = _subplots(len(names), len(bands), figsize=(4 * len(bands), 3.8 * len(names)),
                             squeeze=False)
    unit = maps["energy_low"].unit
    for row, name in enumerate(names):
        for col, (low, high) in enumerate(bands):
            ax = axes[row, col]
            entry = maps[(maps["reconstructor"] == name) & (maps["energy_low"].value == low)]
            counts = np.asarray(entry["counts"][0], dtype=float) if len(entry) else np.zeros(
                (len(edges) - 1,) * 2)
            # square-root colour scale: the tails of a pull stay visible beside the peak
            ax.pcolormesh(edges, edges, counts.T, cmap="magma",
                          norm=PowerNorm(0.5, vmin=0))
            for lon, lat in sources:
                ax.plot(lon, lat, marker="+", color="cyan", markersize=12, mew=1.5)
            ax.plot(0, 0, marker="x", color="white", markersize=8)
            ax.set_aspect("equal")
            ax.set_xlabel("predicted fov_lon / deg")
            ax.set_ylabel("predicted fov_lat / deg")
            ax.set_title(f"{_label(name, references)}\n{low:.3g}–{high:.3g} {unit}"
                         f" ({int(counts.sum())} events)", fontsize="small")
    fig.tight_layout()
    return fig


def plot_theta_squared(table, references):
    """θ² distributions (fraction of events per bin), one panel per true-energy band with
    events, one line per geometry reconstructor."""
    bands = sorted(set(zip(table["energy_low"].value, table["energy_high"].value)))
    bands = [b for b in bands if table["n_events"][table["energy_low"].value == b[0]].sum() > 0] or bands[:1]
    fig, axes = _subplots(1, len(bands), figsize=(4.3 * len(bands), 3.8), squeeze=False)
    unit = table["energy_low"].unit
    for ax, (low, high) in zip(axes.flat, bands):
        for name in _reconstructors(table):
            rows = table[(table["reconstructor"] == name) & (table["energy_low"].value == low)]
            counts = np.asarray(rows["n_events"], dtype=float)
            ax.stairs(counts / counts.sum() if counts.sum() else counts,
                      np.append(rows["low"].value, rows["high"][-1].value),
                      label=_label(name, references),
                      linestyle=_style(name, references)["linestyle"])
        ax.set_xlabel(f"θ² / {table['low'].unit:latex_inline}")
        ax.set_ylabel("fraction of events")
        ax.set_title(f"{low:.3g}–{high:.3g} {unit}", fontsize="small")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
