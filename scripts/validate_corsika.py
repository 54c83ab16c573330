#!/usr/bin/env python
"""Validate the built-in shower model photon field by photon field against real CORSIKA showers.

1. Every shower of the CORSIKA IACT files (``--data``) is re-simulated ``--n-matched`` times with the
   built-in shower model: same primary, energy, direction, first-interaction height, atmosphere
   (CORSIKA's layer parameters), observation level, telescope spheres and cores. Per sphere the
   photons, the ideal image (centroid offset from the source, width, length), the arrival-time
   spread and the emission heights are compared, like for like (see
   `ctapipe_gammaphysnet.simulation.corsika_reference`), and the scatter between showers at
   similar core distance (→ docs/_static/corsika_photon_field.csv, corsika_scatter.csv,
   corsika_photon_field.png, corsika_ratios.png).
2. The showers of the sim_telarray files (``--simtel-data``) are re-simulated the same way and
   the photons at every telescope sphere compared with CORSIKA's count as sim_telarray recorded it
   (the light pool at 1.37 TeV and for protons up to 8.5 TeV, of which no CORSIKA IACT file is
   here; → docs/_static/simtel_light_pool.csv).
3. The CORSIKA photons of the showers shared with the sim_telarray file ``--simtel`` (from the
   CORSIKA file of the same name in ``--data``) go through the project's camera model and are compared
   with the sim_telarray images pixel by pixel
   (→ docs/_static/corsika_detector.csv).

Usage: python scripts/validate_corsika.py [--data ../shared/data/corsika] [--n-matched 10]
       [--set angular_age_power=2 ...]  (shower-model settings of ShowerSimulator, by name)
"""
import argparse
import ast
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402

from ctapipe_gammaphysnet.simulation.camera import CameraSimulator  # noqa: E402
from ctapipe_gammaphysnet.simulation.corsika_reference import (  # noqa: E402
    compare_detector_images,
    compare_photon_fields,
    read_corsika,
    SHOWER_MODEL_TRAITS,
    read_simtel_light_pool,
    scatter_between_showers,
    summarise_detector_comparison,
    summarise_photon_fields,
)

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"
SHARED = REPO.parent / "shared" / "data"
SIMTEL = SHARED / "simtel" / "gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test.simtel.zst"

PANELS = (
    ("photons", "photons at the sphere", True),
    ("centroid_offset", "centroid offset from the source [deg]", False),
    ("width", "width of the ideal image [deg]", False),
    ("length", "length of the ideal image [deg]", False),
    ("time_spread", "arrival-time spread (16-84 %) [ns]", True),
    ("height_median", "median emission height [km a.s.l.]", False),
)


def short_name(name):
    """File names short enough for a table: the two runs of the LST subsystem by model version."""
    name = re.sub(r"gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_(\d\.\d\.\d)_test.*", r"run7 LSTs \1", name)
    return name.split(".")[0][:28].rstrip("_") if not name.startswith("run7") else name


def photon_field_plot(table, path):
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    files = list(dict.fromkeys(table["file"]))
    for ax, (quantity, label, log) in zip(axes.ravel(), PANELS):
        for colour, name in zip(plt.cm.tab10.colors, files):
            part = table[table["file"] == name]
            if quantity == "photons":
                part = part[~part["efficiency_applied"]]
                if len(part) == 0:
                    continue
            # the core distance axis is logarithmic: spheres at the core are drawn at 1 m
            distance = np.maximum(np.asarray(part["impact_distance"]), 1.0)
            ax.scatter(distance, part[f"corsika_{quantity}"], s=22, color=colour, marker="o",
                       label=f"CORSIKA {short_name(name)}")
            ax.scatter(distance, part[f"model_{quantity}"], s=22, facecolor="none", edgecolor=colour,
                       marker="s", label="model (median of matched)")
        ax.set_xlabel("core distance [m] (spheres within 1 m at 1 m)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("Photon field at the telescope spheres: CORSIKA (filled) vs matched built-in showers (open)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=100)


RATIO_PANELS = (
    ("photons", "photons"),
    ("centroid_offset", "centroid offset"),
    ("core_width", "core width"),
    ("core_length", "core length"),
    ("time_spread", "arrival-time spread"),
    ("height_median", "median emission height above ground"),
)


def ratio_plot(table, path):
    """Per sphere, model / CORSIKA against core distance, with the ±20 % goal band."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex=True)
    distance = np.maximum(np.asarray(table["impact_distance"]), 1.0)
    for ax, (quantity, label) in zip(axes.ravel(), RATIO_PANELS):
        reference = np.asarray(table[f"corsika_{quantity}"], dtype=float)
        model = np.asarray(table[f"model_{quantity}"], dtype=float)
        if quantity == "height_median":
            reference = reference - np.asarray(table["observation_level"])
            model = model - np.asarray(table["observation_level"])
        usable = np.ones(len(table), dtype=bool)
        if quantity == "photons":
            usable = ~np.asarray(table["efficiency_applied"])
        for colour, name in zip(plt.cm.tab10.colors, dict.fromkeys(table["file"])):
            members = usable & (np.asarray(table["file"]) == name)
            if members.any():
                ax.scatter(distance[members], model[members] / reference[members], s=14, color=colour,
                           label=short_name(name))
        ax.axhspan(0.8, 1.2, color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{label}: model / CORSIKA", fontsize=10)
        ax.set_xlabel("core distance [m] (spheres within 1 m at 1 m)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("Matched built-in showers / CORSIKA per telescope sphere (grey: ±20 % goal)")
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, dpi=100)


def simtel_light_pool(directories, n_matched, model_options):
    """Per sim_telarray file with showers: the photon counts at the spheres, model / CORSIKA's as
    sim_telarray recorded them, by core distance, and the photons emitted by the whole shower."""
    rows = []
    for path in sorted(p for d in directories for p in Path(d).glob("*.simtel*")):
        showers = read_simtel_light_pool(path)
        if not showers:
            continue
        table = compare_photon_fields(showers, n_matched=n_matched, seed=1, **model_options)
        summary = {row["quantity"]: row for row in summarise_photon_fields(table)}
        photons = summary["photons (no CEFFIC files)"]
        energy = np.asarray(table["energy"])
        rows.append({
            "file": short_name(path.name),
            "particle": showers[0].particle,
            "energy [TeV]": f"{energy.min():.2f}-{energy.max():.2f}",
            "sphere radii [m]": "/".join(f"{r:g}" for r in np.unique(table["sphere_radius"])),
            "spheres": photons["spheres"],
            **{key: photons[key] for key in photons.colnames if key.startswith("ratio")},
            "emitted ratio": summary["photons emitted by the whole shower (per shower)"]["ratio all"],
        })
    return Table(rows=rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=SHARED / "corsika", type=Path)
    parser.add_argument("--simtel", default=SIMTEL, type=Path)
    parser.add_argument("--n-matched", default=10, type=int, help="model showers per CORSIKA shower")
    parser.add_argument("--n-noise", default=20, type=int, help="camera noise realisations per image")
    parser.add_argument("--simtel-data", nargs="*", type=Path,
                        default=[SHARED / "simtel", SHARED / "simtel-extra"],
                        help="directories of sim_telarray files for the light-pool comparison")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="shower-model settings instead of the defaults (ShowerSimulator traits "
                        "such as angular_age_power=2)")
    args = parser.parse_args()
    model_options = {}
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        if name not in SHOWER_MODEL_TRAITS or not value:
            parser.error(f"--set {assignment}: not NAME=VALUE with NAME one of {', '.join(SHOWER_MODEL_TRAITS)}")
        model_options[name] = ast.literal_eval(value)
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such directory")
    files = sorted(p for p in args.data.iterdir() if p.is_file() and not p.name.startswith("README"))
    if not files:
        parser.error(f"no CORSIKA files in {args.data}")

    showers = [shower for path in files for shower in read_corsika(path)]
    print(f"{len(showers)} CORSIKA showers (re-uses counted) in {len(files)} files")
    table = compare_photon_fields(showers, n_matched=args.n_matched, seed=1, **model_options)
    summary = summarise_photon_fields(table)
    scatter = Table(
        np.hstack([np.asarray(scatter_between_showers(table, q)) for q in ("photons", "width", "length")])
    )
    STATIC.mkdir(parents=True, exist_ok=True)
    for column in ("corsika_scatter", "model_scatter"):
        scatter[column] = np.round(scatter[column], 3)
    scatter["ratio"] = np.round(scatter["model_scatter"] / scatter["corsika_scatter"], 2)
    scatter["file"] = [short_name(n) for n in scatter["file"]]
    summary.write(STATIC / "corsika_photon_field.csv", format="ascii.csv", overwrite=True)
    scatter.write(STATIC / "corsika_scatter.csv", format="ascii.csv", overwrite=True)
    photon_field_plot(table, STATIC / "corsika_photon_field.png")
    ratio_plot(table, STATIC / "corsika_ratios.png")
    summary.pprint(max_width=250, max_lines=-1)
    scatter.pprint(max_width=250, max_lines=-1)
    light_pool = simtel_light_pool(args.simtel_data, args.n_matched, model_options)
    light_pool.write(STATIC / "simtel_light_pool.csv", format="ascii.csv", overwrite=True)
    light_pool.pprint(max_width=250, max_lines=-1)
    x_max = np.unique(np.asarray(table[["file", "event", "corsika_x_max", "model_x_max"]]))
    x_max = x_max[np.isfinite(x_max["corsika_x_max"])]
    difference = x_max["model_x_max"] - x_max["corsika_x_max"]
    print(
        f"X_max model - CORSIKA ({len(x_max)} showers): median {np.median(difference):+.0f} g/cm², "
        f"RMS CORSIKA {np.std(x_max['corsika_x_max']):.0f}, model {np.std(x_max['model_x_max']):.0f} g/cm²"
    )

    # the camera model as it is, then with its photon detection efficiency scaled so that the
    # CORSIKA photons give sim_telarray's photo-electrons (shape separated from normalisation), with
    # the waveform front-end and with the direct model
    # the CORSIKA file of the same run: same name, .corsika instead of .simtel
    corsika = read_corsika(args.data / args.simtel.name.replace(".simtel", ".corsika"))
    detector = compare_detector_images(corsika, args.simtel, n_noise=args.n_noise, seed=2)
    pe_ratio = float(np.median(detector["model_expected_pe"] / detector["sim_telarray_true_pe"]))
    efficiency = CameraSimulator.class_traits()["photon_detection_efficiency"].default_value / pe_ratio
    variants = {
        "model as is": detector,
        f"PDE {efficiency:.3f}": compare_detector_images(
            corsika, args.simtel, n_noise=args.n_noise, seed=2,
            camera_config={"CameraSimulator": {"photon_detection_efficiency": efficiency}},
        ),
        f"PDE {efficiency:.3f}, direct model": compare_detector_images(
            corsika, args.simtel, n_noise=args.n_noise, seed=2,
            camera_config={"CameraSimulator": {"photon_detection_efficiency": efficiency, "waveforms": False}},
        ),
    }
    combined = Table({"quantity": summarise_detector_comparison(detector)["quantity"]})
    for label, part in variants.items():
        summary = summarise_detector_comparison(part)
        combined[f"{label}: median (range; images)"] = [
            f"{row['median']:g} ({row['min']:g} to {row['max']:g}; {row['images']})" for row in summary
        ]
    combined.write(STATIC / "corsika_detector.csv", format="ascii.csv", overwrite=True)
    for part in variants.values():
        part.pprint(max_width=250, max_lines=-1)
    combined.pprint(max_width=250, max_lines=-1)
    print(f"written: {STATIC}/corsika_photon_field.csv, corsika_scatter.csv, corsika_photon_field.png, "
          "corsika_ratios.png, simtel_light_pool.csv, "
          "corsika_detector.csv")


if __name__ == "__main__":
    main()
