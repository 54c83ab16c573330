"""The summary of a seed study (`evaluation.seed_study`): what the members' predictions say.

From the predictions of N networks with and N without attention on the same test images:

* the metrics of each member, overall and per bin of true energy (`performance`), their mean ±
  std over seeds (`seed_variability`) and an F-test of "attention lowers the spread"
  (`hypothesis_tests`);
* the agreement of the Grad-CAM maps of different seeds on the same images (mean pairwise
  Pearson correlation per task, `grad_cam_agreement`);
* ensembles formed from disjoint sets of seeds (`ensemble_table`): how much two ensembles differ
  event by event compared with two single networks, and whether the ensemble spread is
  calibrated (fraction of true values within ±1σ) with the factor that calibrates it;

and, where the study was given real images (sim_telarray files), the metrics and F-tests on
them as well (`real_image_performance`), all written by `SeedStudyResult.write` as ECSV tables,
``hypothesis.json``, ``summary.md``, PNG plots
and one ctapipe configuration per group for the ensemble of all its seeds.
"""
import itertools
import json
from dataclasses import dataclass

import numpy as np
import yaml
from astropy.table import Table
from matplotlib.figure import Figure
from scipy import stats

from ..nn.ensemble import average_members
from .explain import GRAD_CAM_TASKS, map_correlation
from .metrics import PREDICTION_METRICS, binned, fov_separation_deg, prediction_metrics

__all__ = ["METRICS", "SeedStudyResult", "performance", "seed_variability", "grad_cam_agreement",
           "ensemble_table", "ensemble_pairs", "uncertainty_scale", "hypothesis_tests",
           "real_image_performance", "REAL_IMAGES"]

METRICS = PREDICTION_METRICS
#: fraction of a Gaussian within ±1σ, and of a 2-D Gaussian within its RMS radius
#: (sqrt(-2 ln R) is the RMS angular distance of the members from their mean for small spreads)
EXPECTED_COVERAGE = {"energy": stats.norm.cdf(1) - stats.norm.cdf(-1), "direction": 1 - np.exp(-1)}
CALIBRATION_COLUMNS = ("energy_coverage", "energy_scale", "energy_coverage_scaled",
                       "direction_coverage", "direction_scale", "direction_coverage_scaled",
                       "median_log_energy_std", "median_direction_spread_deg",
                       "median_gammaness_std")
GROUPS = {True: "attention", False: "no_attention"}
PERFORMANCE_COLUMNS = ["energy_bin", "energy_min_tev", "energy_max_tev", "n_images", *METRICS]
#: ``energy_bin`` of the rows measured on the real images (all their energies together)
REAL_IMAGES = "real images"


def _metrics(outputs, targets):
    """`prediction_metrics` of network outputs against the targets of their images."""
    return prediction_metrics(targets["label"], outputs["gammaness"], targets["true_energy_tev"],
                              outputs["log_energy"], targets["direction"], outputs["direction"])


def performance(outputs, targets, energy_edges, min_events=10):
    """AUC, energy and angular resolution of one set of predictions: overall and per energy bin.

    Returns a Table with one row per bin plus a first row ``energy_bin == "all"`` (edges 0, inf).
    Bins with fewer than ``min_events`` images get NaN.
    """
    arrays = (targets["label"], outputs["gammaness"], targets["true_energy_tev"],
              outputs["log_energy"], targets["direction"], outputs["direction"])
    table = binned(prediction_metrics, targets["true_energy_tev"], np.asarray(energy_edges), *arrays,
                   min_events=min_events, names=list(METRICS))
    rows = [("all", 0.0, np.inf, len(targets["label"]), *prediction_metrics(*arrays))]
    rows += [(f"{row['low']:.3g}-{row['high']:.3g} TeV", row["low"], row["high"], row["n_events"],
              *(row[m] for m in METRICS)) for row in table]
    return Table(rows=rows, names=PERFORMANCE_COLUMNS)


def real_image_performance(outputs, targets):
    """The metrics on the real images as a `performance` row, all energies in one row labelled
    ``REAL_IMAGES``: a few dozen real images fill no energy bin."""
    return Table(rows=[(REAL_IMAGES, np.nan, np.nan, len(targets["label"]), *_metrics(outputs, targets))],
                 names=PERFORMANCE_COLUMNS)


def uncertainty_scale(error, spread, coverage):
    """Factor ``k`` such that a fraction ``coverage`` of the errors lie within ``k × spread``."""
    error, spread = np.asarray(error), np.asarray(spread)
    usable = np.isfinite(error) & np.isfinite(spread) & (spread > 0)
    return float(np.quantile(error[usable] / spread[usable], coverage)) if usable.any() else np.nan


def ensemble_pairs(seeds, size):
    """Every unordered pair of disjoint sets of ``size`` seeds: two independent 'repeated trainings'."""
    pairs = []
    for first in itertools.combinations(seeds, size):
        rest = [s for s in seeds if s not in first]
        for second in itertools.combinations(rest, size):
            if first < second:
                pairs.append((first, second))
    return pairs


def seed_variability(members):
    """Mean and standard deviation over seeds of each metric, per group and energy bin of the
    ``members`` table (the `performance` tables of all members, with ``attention`` and ``seed``)."""
    rows = []
    for attention in (True, False):
        group = members[members["attention"] == attention]
        for energy_bin in dict.fromkeys(group["energy_bin"]):
            in_bin = group[group["energy_bin"] == energy_bin]
            row = {"attention": attention, "energy_bin": energy_bin,
                   "energy_min_tev": in_bin["energy_min_tev"][0],
                   "energy_max_tev": in_bin["energy_max_tev"][0],
                   "n_images": in_bin["n_images"][0], "n_seeds": len(in_bin)}
            for metric in METRICS:
                values = np.asarray(in_bin[metric], dtype=float)
                finite = values[np.isfinite(values)]
                row[f"{metric}_mean"] = finite.mean() if len(finite) else np.nan
                row[f"{metric}_std"] = finite.std(ddof=1) if len(finite) >= 2 else np.nan
            rows.append(row)
    return Table(rows=rows)


def grad_cam_agreement(grad_cams, seeds, n_images, stage):
    """Mean Pearson correlation of the Grad-CAM maps (``grad_cams[(attention, seed)][task]``)
    over the pairs of seeds of each group, per task."""
    rows = []
    for attention in (True, False):
        for task in GRAD_CAM_TASKS:
            correlations = np.stack([
                map_correlation(grad_cams[(attention, a)][task], grad_cams[(attention, b)][task])
                for a, b in itertools.combinations(seeds, 2)])
            valid = np.isfinite(correlations)
            rows.append({
                "attention": attention, "task": task,
                "mean_correlation": correlations[valid].mean() if valid.any() else np.nan,
                "std_correlation": correlations[valid].std() if valid.any() else np.nan,
                "n_seed_pairs": len(correlations), "n_images": n_images,
                # constant maps (all zero after the ReLU) have no correlation
                "n_pairs_constant_map": int((~valid).sum()),
            })
    table = Table(rows=rows)
    table.meta["stage"] = stage
    return table


def ensemble_table(predictions, targets, seeds, ensemble_size):
    """Single networks vs ensembles of ``ensemble_size`` and of all seeds.

    ``predictions[(attention, seed)]``: the outputs of each member on the test images, whose
    targets are ``targets``. Per size: the RMS difference, event by event, between two ensembles
    of disjoint seeds (two independent 'repeated trainings'; needs 2 × size ≤ n_seeds), the mean
    performance over every ensemble of that size, and the calibration of its spread (size ≥ 2).
    """
    n_seeds = len(seeds)
    gamma = targets["label"] == 1
    sizes = {1, n_seeds} | ({ensemble_size} if 2 * ensemble_size <= n_seeds else set())
    nan = float("nan")
    rows = []
    for attention in (True, False):
        for size in sorted(sizes):
            differences = []
            for first, second in ensemble_pairs(seeds, size):
                a, _ = average_members([predictions[(attention, s)] for s in first])
                b, _ = average_members([predictions[(attention, s)] for s in second])
                differences.append([
                    np.sqrt(np.mean((a["gammaness"] - b["gammaness"]) ** 2)),
                    np.sqrt(np.mean((a["log_energy"][gamma] - b["log_energy"][gamma]) ** 2)),
                    np.sqrt(np.mean(fov_separation_deg(a["direction"][gamma],
                                                       b["direction"][gamma]) ** 2)),
                ])
            differences = np.asarray(differences).reshape(-1, 3)
            row = {"attention": attention, "members": size, "n_pairs": len(differences)}
            for i, name in enumerate(("gammaness", "log_energy", "direction_deg")):
                row[f"rms_delta_{name}"] = differences[:, i].mean() if len(differences) else nan

            ensembles = [[predictions[(attention, s)] for s in subset]
                         for subset in itertools.combinations(seeds, size)]
            metrics = [_metrics(average_members(members)[0], targets) for members in ensembles]
            row.update(zip(METRICS, np.mean(metrics, axis=0)))
            row.update(_calibration(ensembles, targets) if size >= 2 else dict.fromkeys(
                CALIBRATION_COLUMNS, nan))
            rows.append(row)
    table = Table(rows=rows)
    table.meta["note"] = (
        "rms_delta_*: mean over pairs of disjoint seed sets (NaN: fewer than 2 × members seeds); "
        "performance and coverage: mean over all ensembles of that size (coverage NaN for a single "
        f"network); coverage expected for a calibrated Gaussian spread: energy "
        f"{EXPECTED_COVERAGE['energy']:.3f}, direction {EXPECTED_COVERAGE['direction']:.3f}")
    return table


def _calibration(ensembles, targets):
    """Spread of the ensembles and how well it describes their error, on the gamma images.

    ``*_coverage``: fraction of true values within ±1σ of the ensemble mean, σ being the
    spread. ``*_scale``: the factor on σ that gives the expected coverage, fitted on every other
    gamma image; ``*_coverage_scaled``: the coverage of the scaled σ on the images not used in
    the fit. All are means over the ensembles.
    """
    gamma = np.flatnonzero(targets["label"] == 1)
    fit, check = gamma[::2], gamma[1::2]
    values = {column: [] for column in CALIBRATION_COLUMNS}
    for members in ensembles:
        mean, spread = average_members(members)
        errors = {"energy": np.abs(mean["log_energy"] - targets["log_energy"]),
                  "direction": fov_separation_deg(mean["direction"], targets["direction"])}
        sigmas = {"energy": spread["log_energy_std"], "direction": spread["direction_spread"]}
        for task in ("energy", "direction"):
            error, sigma = errors[task], sigmas[task]
            scale = uncertainty_scale(error[fit], sigma[fit], EXPECTED_COVERAGE[task])
            values[f"{task}_coverage"].append(np.mean(error[gamma] <= sigma[gamma]))
            values[f"{task}_scale"].append(scale)
            values[f"{task}_coverage_scaled"].append(np.mean(error[check] <= scale * sigma[check]))
        values["median_log_energy_std"].append(np.median(spread["log_energy_std"][gamma]))
        values["median_direction_spread_deg"].append(np.median(spread["direction_spread"][gamma]))
        values["median_gammaness_std"].append(np.median(spread["gammaness_std"]))
    return {column: np.mean(v) for column, v in values.items()}


def hypothesis_tests(variability, n_seeds, energy_bin="all"):
    """Per metric (all energies of the simulated test images, or ``energy_bin=REAL_IMAGES``): std
    with / without attention and the two-sided F-test p-value."""
    overall = variability[variability["energy_bin"] == energy_bin]
    tests = {}
    for metric in METRICS:
        with_attention = overall[overall["attention"]][f"{metric}_std"][0]
        without = overall[~overall["attention"]][f"{metric}_std"][0]
        dof = n_seeds - 1
        if np.isfinite(with_attention) and np.isfinite(without) and without > 0 and with_attention > 0:
            ratio = (with_attention / without) ** 2
            p = 2 * min(stats.f.cdf(ratio, dof, dof), stats.f.sf(ratio, dof, dof))
        else:
            ratio = p = np.nan
        tests[metric] = {"std_attention": with_attention, "std_no_attention": without,
                         "variance_ratio": ratio, "p_value": min(p, 1.0)}
    return tests


@dataclass
class SeedStudyResult:
    """Tables of a seed study (also written as ECSV) and the member model files."""

    seeds: list
    training: str  # how the members were trained, for the summary ("preset `small`, …")
    members: Table
    variability: Table
    grad_cam: Table
    ensembles: Table
    model_files: dict  # (attention, seed) → path of the model file relative to the output dir

    def hypothesis_tests(self, energy_bin="all"):
        """`hypothesis_tests` of this study's variability."""
        return hypothesis_tests(self.variability, len(self.seeds), energy_bin)

    @property
    def has_real_images(self):
        return REAL_IMAGES in set(self.variability["energy_bin"])

    def write(self, output_dir, final_dir):
        """Tables, ensemble configurations, tests, summary and plots into ``output_dir``;
        the ensemble configurations name the member files in ``final_dir``, where
        ``output_dir`` will be when complete."""
        for name in ("members", "variability", "grad_cam", "ensembles"):
            getattr(self, name).write(output_dir / f"{name}.ecsv", format="ascii.ecsv")
        for attention in (True, False):
            self._write_ensemble_config(attention, output_dir, final_dir)
        tests = {"simulated": self.hypothesis_tests()}
        if self.has_real_images:
            tests["real"] = self.hypothesis_tests(REAL_IMAGES)
        (output_dir / "hypothesis.json").write_text(json.dumps(tests, indent=2))
        (output_dir / "summary.md").write_text(self.summary_markdown(tests))
        self._plots(output_dir)

    def _write_ensemble_config(self, attention, output_dir, final_dir):
        """ctapipe configuration of the ensemble of all seeds of a group, with its factors."""
        name = GROUPS[attention]
        ensembles = self.ensembles
        row = ensembles[(ensembles["attention"] == attention)
                        & (ensembles["members"] == len(self.seeds))][0]
        paths = [str(final_dir / self.model_files[(attention, seed)]) for seed in self.seeds]
        config = {
            "GammaPhysNetComponent": {"model_paths": paths},
            "GammaPhysNetReconstructor": {
                "energy_uncertainty_scale": round(float(row["energy_scale"]), 4),
                "direction_uncertainty_scale": round(float(row["direction_scale"]), 4),
            },
        }
        header = (f"# γ-PhysNet ensemble: the {len(self.seeds)} seeds "
                  f"{'with' if attention else 'without'} attention of this seed study, the spread "
                  "factors fitted on its test gammas.\n"
                  f"# ctapipe-process --config gpn.yaml --config ensemble_{name}.yaml ...\n")
        (output_dir / f"ensemble_{name}.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))

    def _test_lines(self, sample, tests, n_seeds):
        rows = self.variability[self.variability["energy_bin"]
                                == ("all" if sample == "simulated" else REAL_IMAGES)]
        lines = ["", f"On the {sample} test images ({rows['n_images'][0]} images):", "",
                 "| metric | std with attention | std without | variance ratio | F-test p |",
                 "|---|---|---|---|---|"]
        for metric, test in tests.items():
            lines.append(f"| {metric} | {test['std_attention']:.4f} | {test['std_no_attention']:.4f} | "
                         f"{test['variance_ratio']:.2f} | {test['p_value']:.2f} |")
        lower = [m for m, t in tests.items() if t["variance_ratio"] < 1]
        significant = [m for m, t in tests.items() if t["p_value"] < 0.05]
        return lines + ["", f"Attention gives the smaller spread for {len(lower)} of {len(tests)} "
                        f"metrics ({', '.join(lower) or 'none'}); significant at p < 0.05: "
                        f"{', '.join(significant) or 'none'}. With {n_seeds} seeds a standard "
                        f"deviation is itself uncertain by about {100 / np.sqrt(2 * (n_seeds - 1)):.0f} %."]

    def summary_markdown(self, tests):
        """Human-readable summary of the study."""
        def value(mean, std, digits=3):
            if not np.isfinite(mean):
                return "n/a"
            return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"

        n_seeds = len(self.seeds)
        lines = [
            "# γ-PhysNet seed variability",
            "",
            f"{n_seeds} seeds ({', '.join(map(str, self.seeds))}) with and without attention, "
            f"{self.training}; "
            "identical images, order and split, only the initialisation differs. "
            "Values: mean ± standard deviation over seeds.",
            "",
            "## Performance",
            "",
            "| energy bin | images | attention | AUC | energy resolution | angular resolution (deg) |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.variability:
            lines.append(
                f"| {row['energy_bin']} | {row['n_images']} | {'yes' if row['attention'] else 'no'} | "
                + " | ".join(value(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS) + " |")
        lines += ["", "## Does attention lower the spread between seeds?"]
        for sample, sample_tests in tests.items():
            lines += self._test_lines(sample, sample_tests, n_seeds)
        lines += ["", "## Agreement of the Grad-CAM maps of different seeds", "",
                  "Mean Pearson correlation over seed pairs and test images (stage "
                  f"{self.grad_cam.meta['stage']}); pairs with a constant map are left out and counted.", "",
                  "| task | attention | mean correlation | constant-map pairs |", "|---|---|---|---|"]
        for row in self.grad_cam:
            lines.append(f"| {row['task']} | {'yes' if row['attention'] else 'no'} | "
                         f"{value(row['mean_correlation'], row['std_correlation'])} | "
                         f"{row['n_pairs_constant_map']} of {row['n_seed_pairs'] * row['n_images']} |")
        lines += ["", "## Ensembles", "",
                  "RMS difference, event by event, between two independent trainings (disjoint seed "
                  "sets): single networks (1 member) vs ensembles; and the fraction of gamma images "
                  "whose true value lies within ±1σ of the ensemble mean (expected: "
                  f"{EXPECTED_COVERAGE['energy']:.2f} for log-energy, "
                  f"{EXPECTED_COVERAGE['direction']:.2f} for the direction).", "",
                  "| attention | members | Δ gammaness | Δ log10 E | Δ direction (deg) | AUC | "
                  "energy resolution | angular resolution (deg) | energy within 1σ | "
                  "direction within 1σ | median σ(log10 E) | median σ direction (deg) | "
                  "energy factor | energy within factor × σ | direction factor | "
                  "direction within factor × σ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        columns = ("rms_delta_gammaness", "rms_delta_log_energy", "rms_delta_direction_deg", *METRICS,
                   "energy_coverage", "direction_coverage", "median_log_energy_std",
                   "median_direction_spread_deg", "energy_scale", "energy_coverage_scaled",
                   "direction_scale", "direction_coverage_scaled")
        for row in self.ensembles:
            cells = ["n/a" if not np.isfinite(row[c]) else f"{row[c]:.4f}" for c in columns]
            lines.append(f"| {'yes' if row['attention'] else 'no'} | {row['members']} | "
                         + " | ".join(cells) + " |")
        lines += ["", "The factors make the spread a calibrated uncertainty: fitted on every other "
                  "test gamma, their coverage checked on the others. The ensembles of all seeds, "
                  "with their factors, are ready for `ctapipe-process --config gpn.yaml --config "
                  "ensemble_attention.yaml` (or `ensemble_no_attention.yaml`); member model files: "
                  "`members/`.", ""]
        return "\n".join(lines)

    def _plots(self, output_dir):
        labels = {True: "attention", False: "no attention"}
        colors = {True: "C0", False: "C1"}
        members = self.members[self.members["energy_bin"] == "all"]
        figure = Figure(figsize=(12, 3.8), layout="constrained")
        for ax, metric in zip(figure.subplots(1, len(METRICS)), METRICS):
            for i, attention in enumerate((True, False)):
                group = members[members["attention"] == attention]
                values = np.asarray(group[metric], dtype=float)
                ax.plot(np.full(len(values), i), values, "o", color=colors[attention], alpha=0.6)
                ax.errorbar(i + 0.15, np.nanmean(values), np.nanstd(values, ddof=1), fmt="s",
                            color="k", capsize=4)
            ax.set_xticks([0, 1], [labels[True], labels[False]])
            ax.set_xlim(-0.5, 1.5)
            ax.set_title(metric.replace("_", " "))
        figure.suptitle("one point per seed; black: mean ± std")
        figure.savefig(output_dir / "seeds_overall.png", dpi=90)

        variability = self.variability[~np.isin(self.variability["energy_bin"], ["all", REAL_IMAGES])]
        figure = Figure(figsize=(12, 3.8), layout="constrained")
        for ax, metric in zip(figure.subplots(1, len(METRICS)), METRICS):
            for attention in (True, False):
                group = variability[variability["attention"] == attention]
                center = np.sqrt(np.asarray(group["energy_min_tev"]) * np.asarray(group["energy_max_tev"]))
                ax.errorbar(center * (1.03 if attention else 0.97), group[f"{metric}_mean"],
                            group[f"{metric}_std"], fmt="o", capsize=3, color=colors[attention],
                            label=labels[attention])
            ax.set_xscale("log")
            ax.set_xlabel("true energy (TeV)")
            ax.set_title(f"{metric.replace('_', ' ')} (mean ± std over seeds)")
            ax.legend()
        figure.savefig(output_dir / "seeds_vs_energy.png", dpi=90)

        figure = Figure(figsize=(12, 3.8), layout="constrained")
        columns = ("rms_delta_gammaness", "rms_delta_log_energy", "rms_delta_direction_deg")
        ensembles = self.ensembles[self.ensembles["n_pairs"] > 0]
        for ax, column in zip(figure.subplots(1, len(columns)), columns):
            ticks, tick_labels = [], []
            for i, attention in enumerate((True, False)):
                group = ensembles[ensembles["attention"] == attention]
                x = i * 3 + np.arange(len(group))
                ax.bar(x, group[column], color=colors[attention])
                ticks += list(x)
                tick_labels += [f"{m}, {'att.' if attention else 'no att.'}" for m in group["members"]]
            ax.set_xticks(ticks, tick_labels)
            ax.set_title(f"{column.replace('rms_delta_', 'RMS Δ ')} between trainings")
            ax.set_xlabel("members")
        figure.savefig(output_dir / "ensembles.png", dpi=90)
