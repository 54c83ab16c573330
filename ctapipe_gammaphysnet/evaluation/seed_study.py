"""How much γ-PhysNet depends on its weight initialisation, with and without attention.

N networks are trained with attention and N without, on the same images in the same order and
with the same split; only the seed of the weight initialisation (and of dropout) differs. All of
them are evaluated on the same test images, which gives per group:

* mean ± std over seeds of the AUC, energy resolution and 68 % angular resolution, overall and
  per bin of true energy, and an F-test of "attention lowers the spread";
* the agreement of the Grad-CAM maps of different seeds on the same images (mean pairwise
  Pearson correlation per task);
* ensembles formed from disjoint sets of seeds: how much two ensembles differ event by event
  compared with two single networks, and whether the ensemble spread is calibrated (fraction of
  true values within ±1σ).

Every member is saved as a model file, so the study doubles as the training of an ensemble.
"""
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from astropy.table import Table, vstack
from ctapipe.core import Component
from ctapipe.core.traits import Float, Int, List
from matplotlib.figure import Figure
from scipy import stats

from ..io.dl1_dataset import DL1ImageStream
from ..io.model_file import save_model_file
from ..nn.ensemble import average_members
from ..training.trainer import GammaPhysNetTrainer
from .explain import GRAD_CAM_TASKS, explain_images, map_correlation
from .metrics import (
    angular_separation_deg,
    binned,
    containment_68,
    energy_bias_resolution,
    roc_auc,
)

__all__ = ["SeedVariabilityStudy", "SeedStudyResult", "performance", "ensemble_pairs",
           "uncertainty_scale"]

METRICS = ("auc", "energy_resolution", "angular_resolution_deg")
#: fraction of a Gaussian within ±1σ, and of a 2-D Gaussian within its RMS radius
#: (sqrt(-2 ln R) is the RMS angular distance of the members from their mean for small spreads)
EXPECTED_COVERAGE = {"energy": stats.norm.cdf(1) - stats.norm.cdf(-1), "direction": 1 - np.exp(-1)}
CALIBRATION_COLUMNS = ("energy_coverage", "energy_scale", "energy_coverage_scaled",
                       "direction_coverage", "direction_scale", "direction_coverage_scaled",
                       "median_log_energy_std", "median_direction_spread_deg",
                       "median_gammaness_std")


def _angular_distance(direction_a, direction_b):
    """Distance (deg) between two sets of (fov_lon, fov_lat) directions."""
    return angular_separation_deg(direction_a[:, 1], direction_a[:, 0],
                                  direction_b[:, 1], direction_b[:, 0])


def _metrics(labels, gammaness, true_energy, log_energy, direction, true_direction):
    gamma = labels == 1
    auc = roc_auc(labels, gammaness) if len(labels) else np.nan
    if gamma.sum() >= 2:
        _, resolution = energy_bias_resolution(true_energy[gamma], 10 ** log_energy[gamma])
        angular = containment_68(_angular_distance(direction[gamma], true_direction[gamma]))
    else:
        resolution = angular = np.nan
    return auc, resolution, angular


def performance(outputs, targets, energy_edges, min_events=10):
    """AUC, energy and angular resolution of one set of predictions: overall and per energy bin.

    Returns a Table with one row per bin plus a first row ``energy_bin == "all"`` (edges 0, inf).
    Bins with fewer than ``min_events`` images get NaN.
    """
    arrays = (targets["label"], outputs["gammaness"], targets["true_energy_tev"],
              outputs["log_energy"], outputs["direction"], targets["direction"])
    table = binned(_metrics, targets["true_energy_tev"], np.asarray(energy_edges), *arrays,
                   min_events=min_events, names=list(METRICS))
    overall = _metrics(*arrays)
    rows = [("all", 0.0, np.inf, len(targets["label"]), *overall)]
    rows += [(f"{row['low']:.3g}-{row['high']:.3g} TeV", row["low"], row["high"], row["n_events"],
              *(row[m] for m in METRICS)) for row in table]
    return Table(rows=rows, names=["energy_bin", "energy_min_tev", "energy_max_tev", "n_images",
                                   *METRICS])


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


@dataclass
class SeedStudyResult:
    """Tables of a seed study (also written as ECSV) and the member model files."""

    members: Table
    variability: Table
    grad_cam: Table
    ensembles: Table
    model_files: dict  # (attention, seed) → path of the model file relative to the output dir


class SeedVariabilityStudy(Component):
    """Trains N seeds with and N without attention and measures their spread."""

    n_seeds = Int(5, help="Networks trained per group (with / without attention)").tag(config=True)
    first_seed = Int(0, help="Seeds are first_seed … first_seed + n_seeds - 1").tag(config=True)
    ensemble_size = Int(
        2, help="Members per ensemble; two ensembles of disjoint seeds are compared, which needs "
                "n_seeds ≥ 2 × ensemble_size").tag(config=True)
    data_seed = Int(
        0, help="Seed of the image order, the same for every member, so members differ only by "
                "their initialisation").tag(config=True)
    validation_fraction = Float(0.1, help="Fraction of the events used for validation").tag(config=True)
    chunk_size = Int(2000, help="Subarray events read from a file at once").tag(config=True)
    shuffle_buffer = Int(4096, help="Images held in the shuffle buffer").tag(config=True)
    energy_bins_tev = List(Float(), default_value=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
                           help="Edges of the true-energy bins (TeV)").tag(config=True)
    min_events_per_bin = Int(10, help="Bins with fewer test images get no metric").tag(config=True)
    n_explain_images = Int(100, help="Test images on which the Grad-CAM maps are compared").tag(config=True)
    grad_cam_stage = Int(-1, help="Stage whose output Grad-CAM explains").tag(config=True)

    classes = [GammaPhysNetTrainer]

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        if self.n_seeds < 2:
            raise ValueError(f"n_seeds must be at least 2 to measure a spread, not {self.n_seeds}")
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size must be at least 2, not {self.ensemble_size}")
        if 2 * self.ensemble_size > self.n_seeds:
            self.log.warning("%d seeds do not make two disjoint ensembles of %d: only single "
                             "networks are compared between trainings", self.n_seeds,
                             self.ensemble_size)
        edges = np.asarray(self.energy_bins_tev)
        if len(edges) < 2 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"energy_bins_tev must be increasing positive edges, not {list(edges)}")
        self.trainer = GammaPhysNetTrainer(parent=self)

    @property
    def seeds(self):
        return list(range(self.first_seed, self.first_seed + self.n_seeds))

    def streams(self, files, tel_type, selection, test_files=None):
        """Training, validation and test streams; the test stream is the validation split unless
        test files are given (then all their images)."""
        def stream(stream_files, split, fraction, shuffle):
            return DL1ImageStream(stream_files, tel_type, selection, split=split,
                                  validation_fraction=fraction, chunk_size=self.chunk_size,
                                  shuffle_buffer=shuffle, seed=self.data_seed)

        train = stream(files, "train", self.validation_fraction, self.shuffle_buffer)
        validation = stream(files, "validation", self.validation_fraction, 0)
        # every event of a test file is on the 'validation' side of a split with fraction 1
        test = stream(test_files, "validation", 1.0, 0) if test_files else validation
        return train, validation, test

    def run(self, grid, tel_type, streams, output_dir, metadata=None, final_dir=None):
        """Train and evaluate all members; write tables, summary and plots into ``output_dir``.

        ``final_dir``: where ``output_dir`` will be moved when complete (default: ``output_dir``);
        the ensemble configurations name the member files there.
        """
        output_dir = Path(output_dir)
        final_dir = Path(final_dir or output_dir).absolute()
        train, validation, test = streams
        explain_inputs = self._explain_inputs(test)
        predictions, grad_cams, model_files, rows = {}, {}, {}, []
        targets = None
        for attention in (True, False):
            for seed in self.seeds:
                name = f"{'attention' if attention else 'no_attention'}_seed{seed}"
                self.trainer.seed, self.trainer.attention = seed, attention
                self.log.info("training %s", name)
                network, summary = self.trainer.train(grid, train, validation,
                                                      output_dir / "training" / name)
                path = output_dir / "members" / f"{name}.safetensors"
                trainer_config = {k: v for k, v in self.trainer.trait_values().items()
                                  if self.trainer.traits()[k].metadata.get("config")}
                save_model_file(path, {tel_type: network}, {tel_type: {
                    "image_selection": train.selection.quality_criteria,
                    "training": {**(metadata or {}), "trainer": trainer_config, **summary}}})
                model_files[(attention, seed)] = path.relative_to(output_dir)

                device = self.trainer.torch_device()
                outputs, member_targets = self.trainer.predict(network.to(device), test, device)
                if targets is None:
                    targets = member_targets
                elif not np.array_equal(targets["log_energy"], member_targets["log_energy"]):
                    raise RuntimeError("the test stream gave different images to two members")
                predictions[(attention, seed)] = outputs
                explained = explain_images(network, *explain_inputs, stage=self.grad_cam_stage)
                grad_cams[(attention, seed)] = explained["grad_cam"]
                table = performance(outputs, targets, self.energy_bins_tev, self.min_events_per_bin)
                table.add_column(attention, 0, name="attention")
                table.add_column(seed, 1, name="seed")
                rows.append(table)

        result = SeedStudyResult(
            members=vstack(rows),
            variability=self._variability(vstack(rows)),
            grad_cam=self._grad_cam_agreement(grad_cams, len(explain_inputs[0]), explained["stage"]),
            ensembles=self._ensembles(predictions, targets),
            model_files=model_files,
        )
        self._write(result, output_dir, final_dir)
        return result

    def _explain_inputs(self, test):
        """The first test images, on which every member's Grad-CAM maps are computed."""
        images, times = [], []
        for sample in test:
            images.append(sample["image"])
            times.append(sample["peak_time"])
            if len(images) >= self.n_explain_images:
                break
        if not images:
            raise RuntimeError("the test stream gave no images")
        return np.stack(images), np.stack(times)

    def _variability(self, members):
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

    def _grad_cam_agreement(self, grad_cams, n_images, stage):
        rows = []
        for attention in (True, False):
            for task in GRAD_CAM_TASKS:
                correlations = np.stack([
                    map_correlation(grad_cams[(attention, a)][task], grad_cams[(attention, b)][task])
                    for a, b in itertools.combinations(self.seeds, 2)])
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

    def _ensembles(self, predictions, targets):
        """Single networks vs ensembles of k and of all seeds.

        Per size: the RMS difference, event by event, between two ensembles of disjoint seeds
        (two independent 'repeated trainings'; needs 2 × size ≤ n_seeds), the mean performance over
        every ensemble of that size, and the calibration of its spread (size ≥ 2).
        """
        gamma = targets["label"] == 1
        sizes = {1, self.n_seeds} | ({self.ensemble_size} if 2 * self.ensemble_size <= self.n_seeds else set())
        nan = float("nan")
        rows = []
        for attention in (True, False):
            for size in sorted(sizes):
                differences = []
                for first, second in ensemble_pairs(self.seeds, size):
                    a, _ = average_members([predictions[(attention, s)] for s in first])
                    b, _ = average_members([predictions[(attention, s)] for s in second])
                    differences.append([
                        np.sqrt(np.mean((a["gammaness"] - b["gammaness"]) ** 2)),
                        np.sqrt(np.mean((a["log_energy"][gamma] - b["log_energy"][gamma]) ** 2)),
                        np.sqrt(np.mean(_angular_distance(a["direction"][gamma],
                                                          b["direction"][gamma]) ** 2)),
                    ])
                differences = np.asarray(differences).reshape(-1, 3)
                row = {"attention": attention, "members": size, "n_pairs": len(differences)}
                for i, name in enumerate(("gammaness", "log_energy", "direction_deg")):
                    row[f"rms_delta_{name}"] = differences[:, i].mean() if len(differences) else nan

                ensembles = [[predictions[(attention, s)] for s in subset]
                             for subset in itertools.combinations(self.seeds, size)]
                metrics = []
                for members in ensembles:
                    mean, _ = average_members(members)
                    metrics.append(_metrics(targets["label"], mean["gammaness"],
                                            targets["true_energy_tev"], mean["log_energy"],
                                            mean["direction"], targets["direction"]))
                row.update(zip(METRICS, np.mean(metrics, axis=0)))
                row.update(self._calibration(ensembles, targets) if size >= 2 else dict.fromkeys(
                    CALIBRATION_COLUMNS, nan))
                rows.append(row)
        table = Table(rows=rows)
        table.meta["note"] = (
            "rms_delta_*: mean over pairs of disjoint seed sets (NaN: fewer than 2 × members seeds); "
            "performance and coverage: mean over all ensembles of that size (coverage NaN for a single "
            f"network); coverage expected for a calibrated Gaussian spread: energy "
            f"{EXPECTED_COVERAGE['energy']:.3f}, direction {EXPECTED_COVERAGE['direction']:.3f}")
        return table

    @staticmethod
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
                      "direction": _angular_distance(mean["direction"], targets["direction"])}
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

    def hypothesis_tests(self, variability):
        """Per metric (all energies): std with / without attention and the two-sided F-test p-value."""
        overall = variability[variability["energy_bin"] == "all"]
        tests = {}
        for metric in METRICS:
            with_attention = overall[overall["attention"]][f"{metric}_std"][0]
            without = overall[~overall["attention"]][f"{metric}_std"][0]
            dof = self.n_seeds - 1
            if np.isfinite(with_attention) and np.isfinite(without) and without > 0 and with_attention > 0:
                ratio = (with_attention / without) ** 2
                p = 2 * min(stats.f.cdf(ratio, dof, dof), stats.f.sf(ratio, dof, dof))
            else:
                ratio = p = np.nan
            tests[metric] = {"std_attention": with_attention, "std_no_attention": without,
                             "variance_ratio": ratio, "p_value": min(p, 1.0)}
        return tests

    def _write(self, result, output_dir, final_dir):
        for name in ("members", "variability", "grad_cam", "ensembles"):
            getattr(result, name).write(output_dir / f"{name}.ecsv", format="ascii.ecsv")
        for attention in (True, False):
            self._write_ensemble_config(result, attention, output_dir, final_dir)
        tests = self.hypothesis_tests(result.variability)
        (output_dir / "hypothesis.json").write_text(json.dumps(tests, indent=2))
        (output_dir / "summary.md").write_text(self.summary_markdown(result, tests))
        self._plots(result, output_dir)

    def _write_ensemble_config(self, result, attention, output_dir, final_dir):
        """ctapipe configuration of the ensemble of all seeds of a group, with its factors."""
        name = "attention" if attention else "no_attention"
        ensembles = result.ensembles
        row = ensembles[(ensembles["attention"] == attention) & (ensembles["members"] == self.n_seeds)][0]
        paths = [str(final_dir / result.model_files[(attention, seed)]) for seed in self.seeds]
        config = {
            "GammaPhysNetComponent": {"model_paths": paths},
            "GammaPhysNetReconstructor": {
                "energy_uncertainty_scale": round(float(row["energy_scale"]), 4),
                "direction_uncertainty_scale": round(float(row["direction_scale"]), 4),
            },
        }
        header = (f"# γ-PhysNet ensemble: the {self.n_seeds} seeds {'with' if attention else 'without'} "
                  "attention of this seed study, the spread factors fitted on its test gammas.\n"
                  f"# ctapipe-process --config gpn.yaml --config ensemble_{name}.yaml ...\n")
        (output_dir / f"ensemble_{name}.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))

    def summary_markdown(self, result, tests):
        """Human-readable summary of a study."""
        def value(mean, std, digits=3):
            if not np.isfinite(mean):
                return "n/a"
            return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"

        trainer = self.trainer
        lines = [
            "# γ-PhysNet seed variability",
            "",
            f"{self.n_seeds} seeds ({', '.join(map(str, self.seeds))}) with and without attention, "
            f"preset `{trainer.preset}`, {trainer.epochs} epochs max., batch {trainer.batch_size}; "
            "identical images, order and split, only the initialisation differs. "
            "Values: mean ± standard deviation over seeds.",
            "",
            "## Performance",
            "",
            "| energy bin | images | attention | AUC | energy resolution | angular resolution (deg) |",
            "|---|---|---|---|---|---|",
        ]
        for row in result.variability:
            lines.append(
                f"| {row['energy_bin']} | {row['n_images']} | {'yes' if row['attention'] else 'no'} | "
                + " | ".join(value(row[f"{m}_mean"], row[f"{m}_std"]) for m in METRICS) + " |")
        lines += ["", "## Does attention lower the spread between seeds?", "",
                  "| metric | std with attention | std without | variance ratio | F-test p |",
                  "|---|---|---|---|---|"]
        for metric, test in tests.items():
            lines.append(f"| {metric} | {test['std_attention']:.4f} | {test['std_no_attention']:.4f} | "
                         f"{test['variance_ratio']:.2f} | {test['p_value']:.2f} |")
        lower = [m for m, t in tests.items() if t["variance_ratio"] < 1]
        significant = [m for m, t in tests.items() if t["p_value"] < 0.05]
        lines += ["", f"Attention gives the smaller spread for {len(lower)} of {len(tests)} metrics "
                  f"({', '.join(lower) or 'none'}); significant at p < 0.05: "
                  f"{', '.join(significant) or 'none'}. With {self.n_seeds} seeds a standard "
                  f"deviation is itself uncertain by about {100 / np.sqrt(2 * (self.n_seeds - 1)):.0f} %."]
        lines += ["", "## Agreement of the Grad-CAM maps of different seeds", "",
                  "Mean Pearson correlation over seed pairs and test images (stage "
                  f"{result.grad_cam.meta['stage']}); pairs with a constant map are left out and counted.", "",
                  "| task | attention | mean correlation | constant-map pairs |", "|---|---|---|---|"]
        for row in result.grad_cam:
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
        for row in result.ensembles:
            cells = ["n/a" if not np.isfinite(row[c]) else f"{row[c]:.4f}" for c in columns]
            lines.append(f"| {'yes' if row['attention'] else 'no'} | {row['members']} | "
                         + " | ".join(cells) + " |")
        lines += ["", "The factors make the spread a calibrated uncertainty: fitted on every other "
                  "test gamma, their coverage checked on the others. The ensembles of all seeds, "
                  "with their factors, are ready for `ctapipe-process --config gpn.yaml --config "
                  "ensemble_attention.yaml` (or `ensemble_no_attention.yaml`); member model files: "
                  "`members/`.", ""]
        return "\n".join(lines)

    def _plots(self, result, output_dir):
        labels = {True: "attention", False: "no attention"}
        colors = {True: "C0", False: "C1"}
        members = result.members[result.members["energy_bin"] == "all"]
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

        variability = result.variability[result.variability["energy_bin"] != "all"]
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
        ensembles = result.ensembles[result.ensembles["n_pairs"] > 0]
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

