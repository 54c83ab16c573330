"""The published LST-1 curves in the docs and the comparison that uses them
(scripts/compare_lst1_published.py, docs/simulation.rst)."""
import importlib.util
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable, Table

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "docs" / "_static"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location(
        "compare_lst1_published", REPO / "scripts" / "compare_lst1_published.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_values_cover_every_node_and_efficiency(compare):
    table = Table.read(compare.PUBLISHED, format="ascii.csv", comment="#")
    assert sorted(set(table["zenith_deg"])) == [10.0, 23.63, 32.06, 43.2]
    assert sorted(set(table["gamma_efficiency"])) == [0.4, 0.7, 0.9]
    for zenith in set(table["zenith_deg"]):
        for efficiency in set(table["gamma_efficiency"]):
            rows = compare.read_published(zenith, efficiency)
            # the paper's bins: 5 per decade from 20 GeV to 20 TeV, contiguous
            assert np.allclose(rows["true_energy_low_tev"], np.geomspace(0.02, 20, 16)[:-1], rtol=1e-3)
            assert np.allclose(rows["true_energy_high_tev"][:-1], rows["true_energy_low_tev"][1:])
            assert np.all((rows["angular_resolution_deg"] > 0.05) & (rows["angular_resolution_deg"] < 0.5))
            assert np.all((rows["energy_resolution"] > 0.1) & (rows["energy_resolution"] < 3.0))
    # a tighter gammaness cut selects better-reconstructed gammas (as in the paper's figures)
    tight, loose = compare.read_published(23.63, 0.4), compare.read_published(23.63, 0.9)
    assert np.all(tight["angular_resolution_deg"][3:] < loose["angular_resolution_deg"][3:])


def test_unknown_node_is_refused_with_the_choices(compare):
    with pytest.raises(ValueError, match="zenith 20.0.*choose from zenith"):
        compare.read_published(20.0, 0.7)


def _number(cell):
    return float(str(cell).split("±")[0]) if str(cell) != "—" else np.nan


def test_documented_table_matches_published_values(compare):
    """The table of docs/simulation.rst: its published columns are the 23.63°, 70 % curve, its
    ratios are RF / published and its verdicts follow from them."""
    doc = Table.read(STATIC / "lst1_comparison.csv", format="ascii.csv")
    published = compare.read_published(23.63, 0.7)
    low = published["true_energy_low_tev"]
    published = published[(low >= compare.GOAL_RANGE[0]) & (low < compare.GOAL_RANGE[1])]
    assert len(doc) == len(published) == 12
    for name, unit, column in (("θ68", " [deg]", "angular_resolution_deg"),
                               ("σE", "", "energy_resolution")):
        reference = np.array([_number(c) for c in doc[f"{name} published{unit}"]])
        assert np.allclose(reference, published[column], atol=5e-4)
        rf = np.array([_number(c) for c in doc[f"{name} RF{unit}"]])
        ratio = np.array([_number(c) for c in doc[f"{name} ratio"]])
        # the RF values are rounded to 0.001
        assert np.allclose(ratio, rf / published[column], rtol=0.01, atol=0, equal_nan=True)
        within = np.asarray(doc[f"{name} within ±20 %"])
        assert np.all((within == "yes") == (np.abs(ratio - 1) <= compare.TOLERANCE))
        assert np.all((within == "—") == np.isnan(ratio))


def test_comparison_on_events_of_known_resolution(compare):
    """Gaussian energy errors of 20 % and directions with a known 68.27 % radius come out of the
    comparison; the gammaness cut keeps the asked fraction; thin bins get no value."""
    rng = np.random.default_rng(1)
    published = compare.read_published(23.63, 0.7)
    edges = np.append(published["true_energy_low_tev"], published["true_energy_high_tev"][-1])
    n = 3000
    # 3000 gammas in each bin from 0.05 to 5 TeV (bins 2-11), 5 in the 5-8 TeV bin
    in_bins = [np.geomspace(edges[i], edges[i + 1], n, endpoint=False) for i in range(2, 12)]
    true_energy = np.concatenate(in_bins + [np.full(5, 6.0)])
    radius = 0.1 * np.sqrt(-2 * np.log(1 - 0.6827))  # 2-d Gaussian of 0.1°: its 68.27 % radius
    events = QTable({
        "true_energy": true_energy * u.TeV,
        "reco_energy": true_energy * (1 + rng.normal(0, 0.2, len(true_energy))) * u.TeV,
        "theta": 0.1 * np.hypot(*rng.normal(0, 1, (2, len(true_energy)))) * u.deg,
        "gh_score": rng.uniform(0, 1, len(true_energy)),
    })
    table = compare.comparison_table(events, published, 0.7, n_resamplings=5)
    filled = table[2:12]
    assert np.all(np.abs(filled["RF events"] / n - 0.7) < 0.08)
    assert np.allclose(filled["angular resolution [deg] RF"], radius, rtol=0.06)
    assert np.allclose(filled["energy resolution RF"], 0.2, rtol=0.08)
    assert np.all(filled["angular resolution [deg] RF error"] < 0.02)
    thin = table[12:]
    assert np.all(thin["RF events"] < compare.MIN_EVENTS)
    assert np.all(np.isnan(thin["angular resolution [deg] RF"]))
    assert not np.any(thin["energy resolution within 20 %"])
    document = compare.document_table(table)
    assert list(document["θ68 RF [deg]"][-2:]) == ["—", "—"]
