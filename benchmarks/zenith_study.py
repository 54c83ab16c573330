"""γ-PhysNet models and ctapipe's Random Forests across zenith angles, on the same images.

For each zenith z the test files ``test_gamma_za<z>.dl1.h5`` (point-like gammas) and
``test_proton_za<z>.dl1.h5`` (protons) of ``--test-dir`` are read with ``TableLoader``; every
model predicts every LST image; the images that pass the image selection of the first γ-PhysNet
model and have a prediction from every model are kept, so that all models are judged on the same
images. Printed per zenith and model: energy bias and resolution and 68 % angular containment in
three true-energy bands, and the AUC of gammas against protons; ``--output`` writes them as JSON.
The study and its results: docs/zenith.rst.

Run: ``python benchmarks/zenith_study.py --zenith 20 30 40 --test-dir DIR
--gammaphysnet "NAME=model.safetensors" ... --forests "NAME=rf_prefix" ...`` where a forest prefix
names ``<prefix>_energy.pkl``, ``<prefix>_classifier.pkl`` and ``<prefix>_disp.pkl``.
"""
import argparse
import json
from pathlib import Path

import astropy.units as u
import numpy as np
from ctapipe.io import TableLoader
from ctapipe.reco import Reconstructor
from ctapipe.reco.reconstructor import ReconstructionProperty

from ctapipe_gammaphysnet.evaluation.metrics import (angular_separation_deg, containment_68,
                                                     energy_bias_resolution, roc_auc)
from ctapipe_gammaphysnet.io.model_file import load_model_file
from ctapipe_gammaphysnet.reco.engine import InferenceEngine, table_pointing, telescope_to_altaz
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection

#: true-energy bands (TeV)
BANDS = [(0.1, 0.3), (0.3, 1.0), (1.0, 10.0)]


def read_images(path):
    with TableLoader(path, dl1_images=True, dl1_parameters=True, simulated=True, pointing=True,
                     instrument=True) as loader:
        subarray = loader.subarray
        (table,) = loader.read_telescope_events_by_type().values()
    return subarray, table


def gammaphysnet_predictions(model_path, subarray, table):
    """(energy TeV, alt deg, az deg, gammaness) per row."""
    engine = InferenceEngine([model_path], subarray)
    group = engine.group_for_geometry(subarray.tel[int(table["tel_id"][0])].camera.geometry)
    result = engine.predict_table(group, table, np.ones(len(table), dtype=bool))
    alt, az = telescope_to_altaz(result["fov_lon"], result["fov_lat"], *table_pointing(table))
    return 10 ** result["log_energy"], alt, az, result["gammaness"]


def forest_predictions(prefix, subarray, table):
    """(energy TeV, alt deg, az deg, gammaness) per row, from the three forests of ``prefix``."""
    key = subarray.tel[int(table["tel_id"][0])]
    tables = {}
    for kind in ("energy", "classifier", "disp"):
        forest = Reconstructor.read(f"{prefix}_{kind}.pkl", subarray=subarray)
        tables.update(forest.predict_table(key, table))

    def column(prop, suffix, unit=None):
        result = tables[prop]
        values = result[next(name for name in result.colnames if name.endswith(suffix))]
        return np.asarray(values if unit is None else u.Quantity(values).to_value(unit), dtype=float)

    return (column(ReconstructionProperty.ENERGY, "_tel_energy", u.TeV),
            column(ReconstructionProperty.GEOMETRY, "_tel_alt", u.deg),
            column(ReconstructionProperty.GEOMETRY, "_tel_az", u.deg),
            column(ReconstructionProperty.PARTICLE_TYPE, "_tel_prediction"))


def metrics(gammas, predicted_gammas, predicted_protons, good_gammas, good_protons):
    energy, alt, az, gammaness = predicted_gammas
    true_energy = u.Quantity(gammas["true_energy"]).to_value(u.TeV)
    separation = np.full(len(gammas), np.nan)
    separation[good_gammas] = angular_separation_deg(
        u.Quantity(gammas["true_alt"]).to_value(u.deg)[good_gammas],
        u.Quantity(gammas["true_az"]).to_value(u.deg)[good_gammas], alt[good_gammas], az[good_gammas])
    row = {}
    for low, high in BANDS:
        band = good_gammas & (true_energy >= low) & (true_energy < high)
        bias, resolution = energy_bias_resolution(true_energy[band], energy[band])
        row[f"{low}-{high} TeV"] = {"n_gammas": int(band.sum()), "energy_bias": bias,
                                    "energy_resolution": resolution,
                                    "angular_68_deg": containment_68(separation[band])}
    labels = np.r_[np.ones(good_gammas.sum()), np.zeros(good_protons.sum())]
    row["auc"] = roc_auc(labels, np.r_[gammaness[good_gammas], predicted_protons[3][good_protons]])
    return row


def named(items):
    pairs = [item.rsplit("=", 1) for item in items]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"give NAME=PATH items, got {items}")
    return dict(pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zenith", type=int, nargs="+", default=[20, 30, 40])
    parser.add_argument("--test-dir", type=Path, default=Path("."))
    parser.add_argument("--gammaphysnet", nargs="+", required=True, metavar="NAME=MODEL")
    parser.add_argument("--forests", nargs="*", default=[], metavar="NAME=PREFIX")
    parser.add_argument("--output", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    gammaphysnet, forests = named(args.gammaphysnet), named(args.forests)
    first = next(iter(load_model_file(next(iter(gammaphysnet.values()))).models.values()))
    selection = GammaPhysNetImageSelection(quality_criteria=first.image_selection)

    results = []
    for zenith in args.zenith:
        gamma_subarray, gammas = read_images(args.test_dir / f"test_gamma_za{zenith}.dl1.h5")
        proton_subarray, protons = read_images(args.test_dir / f"test_proton_za{zenith}.dl1.h5")
        predictions = {}
        for name, path in gammaphysnet.items():
            predictions[name] = (gammaphysnet_predictions(path, gamma_subarray, gammas),
                                 gammaphysnet_predictions(path, proton_subarray, protons))
        for name, prefix in forests.items():
            predictions[name] = (forest_predictions(prefix, gamma_subarray, gammas),
                                 forest_predictions(prefix, proton_subarray, protons))
        good_gammas = np.asarray(selection.table_mask(gammas)) & np.logical_and.reduce(
            [np.all(np.isfinite(np.stack(g)), axis=0) for g, _ in predictions.values()])
        good_protons = np.asarray(selection.table_mask(protons)) & np.logical_and.reduce(
            [np.isfinite(p[3]) for _, p in predictions.values()])
        for name, (predicted_gammas, predicted_protons) in predictions.items():
            row = {"zenith_deg": zenith, "model": name, "n_gammas": int(good_gammas.sum()),
                   "n_protons": int(good_protons.sum()),
                   **metrics(gammas, predicted_gammas, predicted_protons, good_gammas, good_protons)}
            results.append(row)
            bands = "  ".join(f"{band}: bias {v['energy_bias']:+.2f} res {v['energy_resolution']:.2f} "
                              f"θ68 {v['angular_68_deg']:.2f}°" for band, v in row.items()
                              if isinstance(v, dict))
            print(f"{zenith:>3}°  {name:<40} AUC {row['auc']:.3f}  {bands}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
