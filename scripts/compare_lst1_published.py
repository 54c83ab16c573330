#!/usr/bin/env python
"""The standard analysis on the built-in simulator against the published LST-1 Monte Carlo curves.

Reads the Random-Forest predictions (``RandomForest*_tel`` columns: one telescope, mono, as
LST-1) of point-like test gammas from DL2 files (by default the main job's four 0.4° wobble
samples) and computes, in the published bins of true energy, the angular resolution (68.27 %
containment) and the energy resolution (half the 15.87–84.13 % inter-quantile range of
(E_reco − E_true) / E_true) with pyirf's own functions, as the published curves were, after the
forests' quality cuts and, like them, an energy-dependent gammaness cut that keeps
``--gamma-efficiency`` of the gammas per bin of reconstructed energy. Statistical errors are the
spread of ``--bootstrap`` resamplings of the events. The published values are those of
docs/_static/lst1_published_performance.csv (its header gives their source) at ``--zenith``.

Writes docs/_static/lst1_comparison.csv (the table of docs/simulation.rst).

Usage: python scripts/compare_lst1_published.py [--demo-output demo_output | --dl2 FILE ...]
       [--zenith 23.63] [--gamma-efficiency 0.7] [--output docs/_static/lst1_comparison.csv]
"""
import argparse
import operator
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable, Table, vstack
from ctapipe.io import TableLoader
from pyirf.benchmarks import angular_resolution, energy_bias_resolution
from pyirf.cuts import calculate_percentile_cut, evaluate_binned_cut

from ctapipe_gammaphysnet.evaluation.metrics import angular_separation_deg

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"
PUBLISHED = STATIC / "lst1_published_performance.csv"
WOBBLE_SAMPLES = [f"test_gamma_0.4deg_pa{angle}.dl2.h5" for angle in (0, 90, 180, 270)]
PREFIXES = {"energy": "RandomForestEnergy_tel", "geometry": "RandomForestDisp_tel",
            "classifier": "RandomForestClassifier_tel"}
#: fewer events in a bin give no value (the report's ``min_events``)
MIN_EVENTS = 10
#: the agreement asked for: RF on the simulator within ±20 % of the published value
TOLERANCE = 0.2
#: true energies (TeV) of the comparison: the bins starting in this range are documented
GOAL_RANGE = (0.05, 10.0)


def read_published(zenith, gamma_efficiency, path=PUBLISHED):
    """The published curves at one zenith and gamma efficiency, one row per true-energy bin."""
    table = Table.read(path, format="ascii.csv", comment="#")
    rows = table[np.isclose(table["zenith_deg"], zenith)
                 & np.isclose(table["gamma_efficiency"], gamma_efficiency)]
    if len(rows) == 0:
        raise ValueError(f"no published values at zenith {zenith}° and gamma efficiency "
                         f"{gamma_efficiency} in {path}: choose from zenith "
                         f"{sorted(set(table['zenith_deg']))}, efficiency "
                         f"{sorted(set(table['gamma_efficiency']))}")
    return rows


def read_forest_events(paths):
    """Telescope events of the DL2 files valid for the three forests (their quality cuts)."""
    tables = []
    for path in paths:
        with TableLoader(path, dl2=True, simulated=True, pointing=True) as loader:
            tables.append(loader.read_telescope_events())
    events = vstack(tables, metadata_conflicts="silent")
    valid = np.logical_and.reduce([np.asarray(events[f"{p}_is_valid"]) for p in PREFIXES.values()])
    events = events[valid]
    geometry = PREFIXES["geometry"]
    theta = angular_separation_deg(
        events["true_alt"].quantity.to_value(u.deg), events["true_az"].quantity.to_value(u.deg),
        events[f"{geometry}_alt"].quantity.to_value(u.deg),
        events[f"{geometry}_az"].quantity.to_value(u.deg))
    return QTable({
        "true_energy": events["true_energy"].quantity.to(u.TeV),
        "reco_energy": events[f"{PREFIXES['energy']}_energy"].quantity.to(u.TeV),
        "theta": theta * u.deg,
        "gh_score": np.asarray(events[f"{PREFIXES['classifier']}_prediction"]),
    })


def gammaness_selection(events, gamma_efficiency, energy_bins):
    """Energy-dependent gammaness cut keeping ``gamma_efficiency`` of the gammas per bin of
    reconstructed energy, as lstchain's IRF tools compute it (pyirf)."""
    cuts = calculate_percentile_cut(events["gh_score"], events["reco_energy"], bins=energy_bins,
                                    fill_value=1.0, percentile=100 * (1 - gamma_efficiency),
                                    min_events=MIN_EVENTS)
    return evaluate_binned_cut(events["gh_score"], events["reco_energy"], cuts, operator.ge)


def resolutions(events, energy_bins):
    """Angular resolution (deg), energy resolution and bias per true-energy bin (pyirf)."""
    angular = angular_resolution(events, energy_bins)
    energy = energy_bias_resolution(events, energy_bins)
    return (angular[angular.colnames[-1]].to_value(u.deg), np.asarray(energy["resolution"]),
            np.asarray(energy["bias"]))


def bootstrap_errors(events, energy_bins, n_resamplings, seed=0):
    """Standard deviation of the resolutions over resamplings of the events."""
    rng = np.random.default_rng(seed)
    samples = [resolutions(events[rng.integers(0, len(events), len(events))], energy_bins)[:2]
               for _ in range(n_resamplings)]
    with warnings.catch_warnings():
        # bins without events: NaN in every resampling
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(np.array(samples), axis=0)


def comparison_table(events, published, gamma_efficiency, n_resamplings):
    edges = np.append(published["true_energy_low_tev"], published["true_energy_high_tev"][-1])
    energy_bins = edges * u.TeV
    events = events[gammaness_selection(events, gamma_efficiency, energy_bins)]
    angular, energy, bias = resolutions(events, energy_bins)
    angular_error, energy_error = bootstrap_errors(events, energy_bins, n_resamplings)
    counts = np.histogram(events["true_energy"].to_value(u.TeV), edges)[0]
    enough = counts >= MIN_EVENTS

    def columns(name, rf, error, reference):
        rf = np.where(enough, rf, np.nan)
        ratio = rf / reference
        return {
            f"{name} published": reference,
            f"{name} RF": rf,
            f"{name} RF error": np.where(enough, error, np.nan),
            f"{name} ratio": ratio,
            f"{name} within 20 %": np.where(enough, np.abs(ratio - 1) <= TOLERANCE, False),
        }

    table = Table({"E_true low [TeV]": edges[:-1], "E_true high [TeV]": edges[1:],
                   "RF events": counts})
    table.update(columns("angular resolution [deg]", angular, angular_error,
                         np.asarray(published["angular_resolution_deg"])))
    table.update(columns("energy resolution", energy, energy_error,
                         np.asarray(published["energy_resolution"])))
    table["energy bias RF"] = np.where(enough, bias, np.nan)
    table["energy bias published"] = published["energy_bias"]
    return table


def _value(value, error=None):
    if not np.isfinite(value):
        return "—"
    return f"{value:.3f}" if error is None else f"{value:.3f} ± {error:.3f}"


def document_table(table):
    """The comparison as docs/simulation.rst shows it: the bins starting in `GOAL_RANGE`, as
    strings ("—": fewer than `MIN_EVENTS` images)."""
    rows = []
    low = table["E_true low [TeV]"]
    in_range = (low >= GOAL_RANGE[0]) & (low < GOAL_RANGE[1])
    for row in table[in_range]:
        cells = [f"{row['E_true low [TeV]']:.3f}–{row['E_true high [TeV]']:.3f}", str(row["RF events"])]
        for name in ("angular resolution [deg]", "energy resolution"):
            enough = np.isfinite(row[f"{name} RF"])
            cells += [_value(row[f"{name} published"]),
                      _value(row[f"{name} RF"], row[f"{name} RF error"]),
                      _value(row[f"{name} ratio"]),
                      ("yes" if row[f"{name} within 20 %"] else "no") if enough else "—"]
        rows.append(cells)
    names = ["E_true [TeV]", "RF images", "θ68 published [deg]", "θ68 RF [deg]", "θ68 ratio",
             "θ68 within ±20 %", "σE published", "σE RF", "σE ratio", "σE within ±20 %"]
    return Table(rows=rows, names=names, dtype=[str] * len(names))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-output", type=Path, default=REPO / "demo_output",
                        help="the main job's output directory (``make demo``): its four 0.4° "
                             "wobble test samples are read")
    parser.add_argument("--dl2", nargs="+", type=Path,
                        help="DL2 files of point-like test gammas with the forests' predictions "
                             "(instead of --demo-output)")
    parser.add_argument("--zenith", type=float, default=23.63,
                        help="published Monte Carlo node (10.00, 23.63, 32.06 or 43.20°)")
    parser.add_argument("--gamma-efficiency", type=float, default=0.7,
                        help="gammaness-cut efficiency (0.4, 0.7 or 0.9 published)")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamplings for the errors")
    parser.add_argument("--output", type=Path, default=STATIC / "lst1_comparison.csv")
    args = parser.parse_args()
    dl2 = args.dl2 or [args.demo_output / name for name in WOBBLE_SAMPLES]
    missing = [str(path) for path in dl2 if not path.is_file()]
    if missing:
        parser.error(f"DL2 files not found: {', '.join(missing)}")

    published = read_published(args.zenith, args.gamma_efficiency)
    table = comparison_table(read_forest_events(dl2), published, args.gamma_efficiency,
                             args.bootstrap)
    table.pprint_all()
    document_table(table).write(args.output, format="ascii.csv", overwrite=True)
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
