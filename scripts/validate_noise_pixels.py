#!/usr/bin/env python
"""Pixels without signal: the built-in simulator against the real sim_telarray LST images.

Every shared sim_telarray file (``--data`` directories; the muon run has no showers) is processed
as ``ctapipe-process --write-images`` does, and each real LST image is re-simulated
``--n-per-image`` times with the same particle, energy, direction, X_max (photons) or first
interaction height (protons) and impact distance (`simulate_matched`), once with the waveform
read-out (ctapipe's CameraCalibrator on simulated waveforms, the default) and once with the direct
model (``CameraSimulator.waveforms = False``, with the settings it had before the waveforms), and
once with the waveform read-out in the conditions of the file: its night-sky background tuned to
the real images' pedestal-like charge variance (`tuned_nsb_rate`, as lstchain tunes simulations to
data) and the images placed at the real images' mean time in the read-out window
(`observed_conditions`). For
the pixels outside the cleaning mask it compares the charge quantiles, the peak times relative to
the image's charge-weighted time, the cleaning-mask pixels outside the main island and the
pedestal-like charge variance (`noise_pixel_statistics`, `compare_noise_pixels`), per file and
pooled over all files → docs/_static/noise_pixels.csv (every statistic),
docs/_static/noise_pixels_summary.csv (the largest deviations) and docs/_static/noise_pixels.png.

Usage: python scripts/validate_noise_pixels.py [--data DIR ...] [--n-per-image 10]
"""
import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402
from ctapipe.core import run_tool  # noqa: E402
from ctapipe.tools.process import ProcessorTool  # noqa: E402

from ctapipe_gammaphysnet.simulation.validation import (  # noqa: E402
    compare_noise_pixels,
    noise_pixel_statistics,
    read_real_images,
    observed_conditions,
    simulate_matched,
    sphere_limited_mirror_areas,
)

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"
SHARED = REPO.parent / "shared" / "data"

# the direct model as it was before the waveform read-out (its own defaults then)
DIRECT_MODEL = {"CameraSimulator": {"waveforms": False, "nsb_rate": 0.25, "trigger_time": 15.0}}
MODELS = ("direct", "waveforms", "tuned")
MODEL_NAMES = {
    "direct": "direct model (before)",
    "waveforms": "waveforms, defaults (after)",
    "tuned": "waveforms, NSB and time of the file",
}


def process_real_files(directories, workdir):
    """(sim_telarray file, DL1 file with images) of every shower file of the directories (not the
    muon run), by name."""
    result = {}
    for directory in directories:
        for path in sorted(Path(directory).glob("*.simtel*")):
            name = path.name.split(".simtel")[0]
            if name == "lst_muons":
                continue
            output = workdir / f"{Path(directory).name}_{name}.dl1.h5"
            run_tool(
                ProcessorTool(),
                [f"--input={path}", f"--output={output}", "--write-images", "--overwrite", "--log-level=WARN"],
                cwd=workdir,
                raises=True,
            )
            result[f"{Path(directory).name}/{name}"] = (path, output)
    return result


def pooled(statistics):
    """`noise_pixel_statistics` of several files as one."""
    return {key: np.concatenate([s[key] for s in statistics]) for key in statistics[0]}


def compare_files(real_files, n_per_image, seed=1):
    """Per file and pooled: (real statistics, {model: simulated statistics})."""
    results = {}
    for name, (simtel, path) in real_files.items():
        real, subarray = read_real_images(path, images=True)
        # like for like: the part of the mirror that the file's CORSIKA spheres cover
        mirror_areas = sphere_limited_mirror_areas(simtel, subarray)
        real_statistics = noise_pixel_statistics(real, subarray)
        configs = {"direct": DIRECT_MODEL, "waveforms": {},
                   "tuned": {"CameraSimulator": observed_conditions(real, subarray)}}
        simulated = {
            model: noise_pixel_statistics(
                simulate_matched(real, subarray, n_per_image=n_per_image, seed=seed, config=config, images=True,
                                 mirror_areas=mirror_areas),
                subarray,
            )
            for model, config in configs.items()
        }
        results[name] = (real_statistics, simulated)
        tuned = configs["tuned"]["CameraSimulator"]
        nsb = f"{tuned['nsb_rate']:.3f} p.e./ns" if "nsb_rate" in tuned else "default (no faint image)"
        print(f"{name}: {len(real)} real LST images; NSB {nsb}, image time {tuned['trigger_time']:.1f} ns", flush=True)
    real_all = pooled([r for r, _ in results.values()])
    simulated_all = {model: pooled([s[model] for _, s in results.values()]) for model in MODELS}
    return results, (real_all, simulated_all)


def comparison_table(results, everything):
    """One row per file (first: all files pooled) and statistic: the real value, and per model
    the simulated value and its deviation in units of 10 % (`compare_noise_pixels`)."""
    rows = []
    for name, (real, simulated) in [("all files", everything), *results.items()]:
        by_model = {model: compare_noise_pixels(real, simulated[model]) for model in MODELS}
        for i, (statistic, real_value, _, _) in enumerate(by_model[MODELS[0]]):
            row = {"file": name.split("/")[-1], "statistic": statistic, "real": round(float(real_value), 3)}
            for model, comparison in by_model.items():
                row[model] = round(float(comparison[i][2]), 3)
                row[f"{model} dev/10%"] = round(float(comparison[i][3]), 2)
            rows.append(row)
    return Table(rows=rows)


def summary_table(table):
    """Per file and model: the largest deviation (units of 10 %) among the charge quantiles and
    among the time quantiles, and the deviations of the ±3 ns fraction and pedestal variance."""
    rows = []
    for name in dict.fromkeys(table["file"]):
        part = table[table["file"] == name]
        statistic = np.asarray(part["statistic"])
        for model in MODELS:
            deviation = np.asarray(part[f"{model} dev/10%"], dtype=float)

            def largest(prefix):
                values = deviation[np.char.startswith(statistic.astype(str), prefix)]
                return values[np.argmax(np.abs(values))]

            rows.append({
                "file": name,
                "camera model": MODEL_NAMES[model],
                "charge q1-q99": largest("charge q"),
                "time q1-q99": largest("time q"),
                "time within ±3 ns": deviation[np.char.startswith(statistic.astype(str), "time fraction")][0],
                "pedestal variance": deviation[np.char.startswith(statistic.astype(str), "pedestal")][0],
            })
    return Table(rows=rows)


def plot(everything, path):
    real, simulated = everything
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    bins = {"charge": np.linspace(-4, 8, 97), "time": np.linspace(-40, 40, 81)}
    for ax, name, label in zip(axes[:2], ("charge", "time"), ("charge [p.e.]", "peak time − image time [ns]")):
        ax.hist(real[name], bins=bins[name], density=True, histtype="stepfilled", alpha=0.35, color="k",
                label="sim_telarray (ctapipe-process)")
        for (model, values), colour in zip(simulated.items(), ("C3", "C0", "C2")):
            ax.hist(values[name], bins=bins[name], density=True, histtype="step", lw=1.5, color=colour,
                    label=f"built-in, {MODEL_NAMES[model]}")
        ax.set_xlabel(f"pixels outside the cleaning mask: {label}")
        ax.set_yscale("log" if name == "charge" else "linear")
        ax.legend(fontsize=7)
    ax = axes[2]
    levels = np.arange(1, 100)
    ax.plot(levels, np.percentile(real["charge"], levels), color="k", lw=2, label="sim_telarray")
    for (model, values), colour in zip(simulated.items(), ("C3", "C0", "C2")):
        ax.plot(levels, np.percentile(values["charge"], levels), color=colour, label=f"built-in, {MODEL_NAMES[model]}")
    ax.set_xlabel("quantile [%]")
    ax.set_ylabel("charge [p.e.]")
    ax.legend(fontsize=7)
    fig.suptitle("LST images: pixels without signal, real sim_telarray vs matched built-in simulation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", type=Path, default=[SHARED / "simtel", SHARED / "simtel-extra"])
    parser.add_argument("--n-per-image", default=10, type=int)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        real_files = process_real_files(args.data, Path(tmp))
        if not real_files:
            parser.error(f"--data {' '.join(map(str, args.data))}: no sim_telarray shower files (*.simtel*) there")
        results, everything = compare_files(real_files, args.n_per_image)
    table = comparison_table(results, everything)
    STATIC.mkdir(parents=True, exist_ok=True)
    table.write(STATIC / "noise_pixels.csv", format="ascii.csv", overwrite=True)
    table.pprint(max_width=250, max_lines=-1)
    summary = summary_table(table)
    summary.write(STATIC / "noise_pixels_summary.csv", format="ascii.csv", overwrite=True)
    summary.pprint(max_width=250, max_lines=-1)
    plot(everything, STATIC / "noise_pixels.png")
    print(f"written: {STATIC / 'noise_pixels.csv'}, {STATIC / 'noise_pixels.png'}")


if __name__ == "__main__":
    main()
