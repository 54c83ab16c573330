#!/usr/bin/env python
"""Validate the built-in shower simulator against the real sim_telarray files of the shared data.

1. Every real LST image (``ctapipe-process`` on the sim_telarray files) is re-simulated
   ``--n-per-image`` times with the same particle, energy, direction, X_max (photons) and impact
   distance, on the part of the mirror the file's CORSIKA spheres cover; the median Hillas
   intensity, width and length are compared
   (→ docs/_static/simulator_validation.csv).
2. Diffuse gammas and protons are simulated for LST-1 and their Hillas width and length plotted
   against the intensity, with the real images on top (→ docs/_static/simulator_hillas.png).
3. For bright point-like gammas: miss distance of the true source from the Hillas major axis and
   how often the source lies on the side that the time gradient and the skewness point to.

Usage: python scripts/validate_simulator.py [--data ../shared/data/simtel] [--n-per-image 20]
       [--set angular_age_power=2 photon_detection_efficiency=0.154 ...]
"""
import argparse
import ast
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402
from ctapipe.core import run_tool  # noqa: E402
from ctapipe.io import TableLoader  # noqa: E402
from ctapipe.tools.process import ProcessorTool  # noqa: E402
from traitlets.config import Config  # noqa: E402

from ctapipe_gammaphysnet.simulation import simulate_to_file  # noqa: E402
from ctapipe_gammaphysnet.simulation.camera import CameraSimulator  # noqa: E402
from ctapipe_gammaphysnet.simulation.simulator import ShowerSimulator  # noqa: E402
from ctapipe_gammaphysnet.simulation.validation import (  # noqa: E402
    compare_medians,
    major_axis_geometry,
    read_real_images,
    simulate_matched,
    sphere_limited_mirror_areas,
)

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"


def process_real_files(simtel_dir, workdir):
    """(sim_telarray file, DL1 file with parameters) of every shower file (the muon run has no
    showers), by name."""
    result = {}
    for path in sorted(Path(simtel_dir).glob("*.simtel*")):
        name = path.name.split(".simtel")[0]
        if name == "lst_muons":
            continue
        output = workdir / f"{name}.dl1.h5"
        run_tool(
            ProcessorTool(),
            [f"--input={path}", f"--output={output}", "--overwrite", "--log-level=WARN"],
            cwd=workdir,
            raises=True,
        )
        result[name] = (path, output)
    return result


def simulator_settings(assignments):
    """``NAME=VALUE`` trait settings of ShowerSimulator or CameraSimulator (values as Python
    literals) as options by name (`simulate_to_file`) and as a traitlets Config."""
    options, config = {}, Config()
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        owner = next((c for c in (ShowerSimulator, CameraSimulator)
                      if name in c.class_trait_names(config=True)), None)
        if owner is None or not text:
            raise SystemExit(f"--set {assignment}: not NAME=VALUE with a ShowerSimulator or "
                             "CameraSimulator trait")
        options[name] = ast.literal_eval(text)
        config[owner.__name__][name] = options[name]
    return options, config


def matched_comparison(real_files, n_per_image, config=None):
    rows = []
    for name, (simtel, path) in real_files.items():
        real, subarray = read_real_images(path)
        # like for like: a real file whose CORSIKA spheres are smaller than the dish lit only part
        # of the mirror (test_lasercal_v3: 7.5 m spheres, 177 of the LST's 387 m²)
        mirror_areas = sphere_limited_mirror_areas(simtel, subarray)
        simulated = simulate_matched(real, subarray, n_per_image=n_per_image, seed=1,
                                     mirror_areas=mirror_areas, config=config)
        particle = "gamma" if np.all(real["true_shower_primary_id"] == 0) else "proton"
        energies = real["true_energy"].to_value("TeV")
        row = {
            "file": name[:40].rstrip("_"),
            "particle": particle,
            "energy [TeV]": f"{energies.min():.2f}-{energies.max():.2f}",
            "real images": len(real),
            "mirror [m²]": round(float(np.median([mirror_areas[t] for t in np.unique(real["tel_id"])])), 0),
            "simulated images": len(simulated),
        }
        for parameter, (real_value, sim_value, ratio) in compare_medians(real, simulated).items():
            short = parameter.replace("hillas_", "")
            row[f"{short} real"] = round(real_value, 3 if short != "intensity" else 0)
            row[f"{short} sim"] = round(sim_value, 3 if short != "intensity" else 0)
            row[f"{short} ratio"] = round(ratio, 2)
        rows.append(row)
    return Table(rows=rows)


def hillas_plot(workdir, real_files, n_showers, options):
    samples = {}
    for particle, sample in (
        ("gamma-diffuse", dict(energy_min=0.03, view_cone=2.5, max_impact=400.0)),
        ("proton", dict(energy_min=0.1, view_cone=3.0, max_impact=450.0)),
    ):
        path = simulate_to_file(
            workdir / f"{particle}.dl1.h5", particle=particle, n_showers=n_showers, seed=3,
            overwrite=True, **sample, **options,
        )
        with TableLoader(path, dl1_parameters=True, simulated=True) as loader:
            events = loader.read_telescope_events()
        samples[particle] = events[np.isfinite(events["hillas_intensity"])]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    bins = np.logspace(1.5, 4.5, 13)
    centres = np.sqrt(bins[1:] * bins[:-1])
    for ax, parameter in zip(axes, ("hillas_width", "hillas_length")):
        for (particle, events), colour in zip(samples.items(), ("C0", "C3")):
            intensity = np.asarray(events["hillas_intensity"])
            value = np.asarray(events[parameter])
            ax.scatter(intensity, value, s=3, alpha=0.25, color=colour)
            index = np.digitize(intensity, bins) - 1
            medians = [
                np.median(value[index == i]) if np.sum(index == i) >= 5 else np.nan
                for i in range(len(centres))
            ]
            ax.plot(centres, medians, color=colour, lw=2, label=f"simulated {particle} (median)")
        for _, path in real_files.values():
            real, _ = read_real_images(path)
            is_gamma = np.all(real["true_shower_primary_id"] == 0)
            ax.scatter(
                real["hillas_intensity"], real[parameter].to_value("deg"), marker="*", s=60,
                color="navy" if is_gamma else "darkred", edgecolor="k", lw=0.4, zorder=5,
                label=("sim_telarray gamma" if is_gamma else "sim_telarray proton"),
            )
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("Hillas intensity [p.e.]")
        ax.set_ylabel(f"{parameter.replace('_', ' ')} [deg]")
        ax.set_ylim(0, 0.45 if parameter == "hillas_width" else 0.9)
    fig.suptitle("LST-1, built-in simulator: gammas vs protons, with the real sim_telarray images")
    fig.tight_layout()
    STATIC.mkdir(parents=True, exist_ok=True)
    fig.savefig(STATIC / "simulator_hillas.png", dpi=110)
    return samples


def geometry_check(workdir, n_showers, options):
    path = simulate_to_file(
        workdir / "pointlike.dl1.h5", particle="gamma", n_showers=n_showers, seed=4,
        energy_min=0.05, max_impact=300.0, overwrite=True, **options,
    )
    with TableLoader(path, dl1_parameters=True, simulated=True, pointing=True) as loader:
        events = loader.read_telescope_events()
        subarray = loader.subarray
    bright = events[
        np.isfinite(events["hillas_intensity"])
        & (events["hillas_intensity"] > 300)
        & (events["leakage_intensity_width_2"] < 0.2)
    ]
    miss, along = major_axis_geometry(bright, subarray)
    far = np.asarray(bright["true_impact_distance"]) > 100
    return {
        "images": len(bright),
        "median miss distance [deg]": float(np.median(miss)),
        "source on the early-time side (impact > 100 m)": float(
            np.mean(np.sign(along[far]) == -np.sign(np.asarray(bright["timing_slope"])[far]))
        ),
        "source opposite to the skewness": float(
            np.mean(np.sign(along) == -np.sign(np.asarray(bright["hillas_skewness"])))
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=REPO.parent / "shared" / "data" / "simtel", type=Path)
    parser.add_argument("--n-per-image", default=20, type=int)
    parser.add_argument("--n-showers", default=3000, type=int, help="showers per particle for the plot")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="simulator settings instead of the defaults (ShowerSimulator or "
                        "CameraSimulator traits), e.g. angular_age_power=2")
    args = parser.parse_args()
    options, config = simulator_settings(args.set)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        real_files = process_real_files(args.data, workdir)
        if not real_files:
            parser.error(f"--data {args.data}: no sim_telarray shower files (*.simtel*) there")
        table = matched_comparison(real_files, args.n_per_image, config)
        STATIC.mkdir(parents=True, exist_ok=True)
        table.write(STATIC / "simulator_validation.csv", format="ascii.csv", overwrite=True)
        table.pprint(max_width=250, max_lines=-1)
        hillas_plot(workdir, real_files, args.n_showers, options)
        for key, value in geometry_check(workdir, args.n_showers, options).items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"written: {STATIC / 'simulator_validation.csv'}, {STATIC / 'simulator_hillas.png'}")


if __name__ == "__main__":
    main()
