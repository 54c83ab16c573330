"""Metrics checked against hand-computable cases."""
import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from ctapipe_gammaphysnet.evaluation.metrics import (
    PREDICTION_METRICS,
    angular_resolution,
    angular_separation_deg,
    binned,
    containment_68,
    energy_bias_resolution,
    energy_migration,
    field_of_view_position,
    fov_separation_deg,
    predicted_offset_bias,
    prediction_metrics,
    roc_auc,
    roc_curve,
)


def test_auc_perfect_inverted_random():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 500)
    scores = np.where(labels == 1, rng.uniform(0.6, 1, 1000), rng.uniform(0, 0.4, 1000))
    assert roc_auc(labels, scores) == 1.0
    assert roc_auc(labels, 1 - scores) == 0.0

    labels = rng.integers(0, 2, 20000)
    # U statistic of random scores: standard deviation sqrt((n1+n0+1)/(12 n1 n0)) ~ 0.004
    assert roc_auc(labels, rng.uniform(size=20000)) == pytest.approx(0.5, abs=0.02)


def test_auc_ties_by_hand():
    # pairs (signal, background): scores s = [0.5, 0.8], b = [0.5, 0.2]
    # comparisons: 0.5 vs 0.5 tie (1/2), 0.5 > 0.2 (1), 0.8 > 0.5 (1), 0.8 > 0.2 (1) -> 3.5 / 4
    labels = [1, 1, 0, 0]
    scores = [0.5, 0.8, 0.5, 0.2]
    assert roc_auc(labels, scores) == pytest.approx(0.875)
    # all scores equal: every pair ties
    assert roc_auc(labels, [0.3] * 4) == pytest.approx(0.5)


def test_roc_curve_points_and_area():
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.5, 0.8, 0.5, 0.2])
    fpr, tpr, thresholds = roc_curve(labels, scores)
    # selections scores >= 0.8, >= 0.5 (tie enters together), >= 0.2
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    # trapezoidal area under the curve equals the Mann-Whitney AUC, ties included
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 3000)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # many ties
    fpr, tpr, _ = roc_curve(labels, scores)
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(roc_auc(labels, scores), rel=1e-12)


def test_one_class_gives_nan_and_bad_input_raises():
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    fpr, tpr, _ = roc_curve([1, 1], [0.1, 0.2])
    assert np.all(np.isnan(fpr)) and np.allclose(tpr, [0, 0.5, 1])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="labels"):
        roc_auc([2, 0], [0.1, 0.2])


def test_energy_gaussian_error():
    rng = np.random.default_rng(3)
    sigma = 0.2
    true_energy = 10 ** rng.uniform(-1, 1, 50000) * u.TeV
    reco_energy = true_energy * (1 + rng.normal(0, sigma, true_energy.size))
    bias, resolution = energy_bias_resolution(true_energy, reco_energy.to(u.GeV))
    # sampling error of a quantile ~ sigma * 1.5 / sqrt(n) ~ 0.0015
    assert bias == pytest.approx(0, abs=0.005)
    assert resolution == pytest.approx(sigma, rel=0.03)
    # a 10 % overestimate shows as bias 0.1, resolution unchanged (plain arrays too)
    bias, resolution = energy_bias_resolution(true_energy.value, 1.1 * reco_energy.value)
    assert bias == pytest.approx(0.1, abs=0.006)
    assert resolution == pytest.approx(1.1 * sigma, rel=0.03)
    assert np.isnan(energy_bias_resolution([], [])[0])
    with pytest.raises(ValueError, match="both"):
        energy_bias_resolution(true_energy, reco_energy.value)


def test_separation_matches_astropy():
    rng = np.random.default_rng(4)
    n = 1000
    alt1, alt2 = rng.uniform(-90, 90, (2, n))
    az1, az2 = rng.uniform(0, 360, (2, n))
    # include tiny and near-antipodal separations
    alt2[:10], az2[:10] = alt1[:10] + 1e-9, az1[:10]
    alt2[10:20], az2[10:20] = -alt1[10:20], (az1[10:20] + 180 - 1e-7) % 360
    ours = angular_separation_deg(alt1 * u.deg, az1 * u.deg, np.deg2rad(alt2) * u.rad, az2)
    theirs = SkyCoord(az1, alt1, unit="deg").separation(SkyCoord(az2, alt2, unit="deg")).deg
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_68_containment_of_gaussian_direction_errors():
    rng = np.random.default_rng(5)
    sigma = 0.1  # deg, per axis
    n = 40000
    alt_true = rng.uniform(60, 75, n)
    az_true = rng.uniform(0, 360, n)
    # small offsets in a local tangent plane around the true direction
    d_alt, d_cross = rng.normal(0, sigma, (2, n))
    alt_reco = alt_true + d_alt
    az_reco = az_true + d_cross / np.cos(np.deg2rad(alt_true))
    separation = angular_separation_deg(alt_true, az_true, alt_reco, az_reco)
    expected = sigma * np.sqrt(-2 * np.log(0.32))  # Rayleigh 68 % quantile, ~1.51 sigma
    assert angular_resolution(separation * u.deg) == pytest.approx(expected, rel=0.02)
    assert containment_68(np.arange(101)) == pytest.approx(68)
    assert np.isnan(containment_68([]))


def test_binned_energy_resolution():
    rng = np.random.default_rng(6)
    true_energy = 10 ** rng.uniform(-1, 1, 20000) * u.TeV
    sigma = np.where(true_energy < 1 * u.TeV, 0.3, 0.1)
    reco_energy = true_energy * (1 + rng.normal(0, sigma))
    edges = [0.1, 1, 10, 100] * u.TeV
    table = binned(
        energy_bias_resolution, true_energy, edges, true_energy, reco_energy,
        min_events=50, names=["bias", "resolution"],
    )
    assert table["low"].unit == u.TeV
    assert list(table["n_events"][:2]) == [
        np.count_nonzero(true_energy < 1 * u.TeV), np.count_nonzero(true_energy >= 1 * u.TeV)
    ]
    assert table["n_events"][2] == 0
    np.testing.assert_allclose(table["resolution"][:2], [0.3, 0.1], rtol=0.05)
    assert np.isnan(table["bias"][2]) and np.isnan(table["resolution"][2])
    assert table["center"][0].to_value(u.TeV) == pytest.approx(np.sqrt(0.1))
    # a scalar metric gets a single "value" column
    auc = binned(roc_auc, np.arange(4.0), [0, 2, 4], [1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8],
                 min_events=2)
    np.testing.assert_allclose(auc["value"], [1.0, 0.0])


def test_field_of_view_position_is_ctapipes_telescope_frame():
    from astropy.coordinates import AltAz
    from ctapipe.coordinates import TelescopeFrame

    rng = np.random.default_rng(3)
    pointing_alt, pointing_az = rng.uniform(30, 86, 300), rng.uniform(0, 360, 300)
    alt = pointing_alt + rng.uniform(-3, 3, 300)
    az = pointing_az + rng.uniform(-3, 3, 300) / np.cos(np.deg2rad(pointing_alt))
    fov_lon, fov_lat = field_of_view_position(alt * u.deg, az * u.deg, pointing_alt, pointing_az)
    frame = TelescopeFrame(telescope_pointing=SkyCoord(alt=pointing_alt * u.deg,
                                                       az=pointing_az * u.deg, frame=AltAz()))
    expected = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz()).transform_to(frame)
    np.testing.assert_allclose(fov_lon, expected.fov_lon.deg, atol=1e-9)
    np.testing.assert_allclose(fov_lat, expected.fov_lat.deg, atol=1e-9)
    # above the pointing: +fov_lat; at larger azimuth: +fov_lon
    assert field_of_view_position(71.0, 10.0, 70.0, 10.0)[1] == pytest.approx(1.0)
    assert field_of_view_position(70.0, 11.0, 70.0, 10.0)[0] > 0


def test_predicted_offset_bias_by_hand():
    true = np.array([0.4, 0.4, 0.4, 1.0, 1.0])
    # a reconstructor answering the camera centre: minus the true offset
    assert predicted_offset_bias(np.full(5, 0.4), np.zeros(5)) == pytest.approx(-0.4)
    # median of (0.1, -0.1, 0.2, 0.0, -0.5) = 0.0
    assert predicted_offset_bias(true, true + [0.1, -0.1, 0.2, 0.0, -0.5]) == pytest.approx(0.0)
    assert predicted_offset_bias(true * u.deg, (true + 0.05) * u.deg) == pytest.approx(0.05)
    assert np.isnan(predicted_offset_bias([], []))
    with pytest.raises(ValueError, match="non-finite"):
        predicted_offset_bias([0.4], [np.nan])


def test_energy_migration_by_hand():
    edges = [0.1, 1, 10] * u.TeV
    true = [0.5, 0.5, 0.5, 0.5, 5, 5] * u.TeV
    # three of the four low-energy events stay, one migrates up; of the two high ones, one is
    # reconstructed above 10 TeV (outside the matrix)
    reco = [0.2, 0.9, 0.3, 2.0, 3.0, 20.0] * u.TeV
    counts, fractions = energy_migration(true, reco, edges, edges)
    np.testing.assert_array_equal(counts, [[3, 1], [0, 1]])
    np.testing.assert_allclose(fractions, [[0.75, 0.25], [0.0, 0.5]])
    # reconstructed energy in GeV: the same matrix
    np.testing.assert_array_equal(energy_migration(true, reco.to(u.GeV), edges, edges)[0], counts)
    _, empty = energy_migration(true, reco, [10, 100, 1000] * u.TeV, edges)
    assert np.all(np.isnan(empty))
    with pytest.raises(ValueError, match="Quantities"):
        energy_migration(true.value, reco.value, edges, edges)


def test_prediction_metrics_by_hand():
    """AUC over all images, resolutions over the gammas only."""
    label = np.array([1, 1, 1, 0, 0, 0])
    # gammas 0.9, 0.6, 0.4 against hadrons 0.5, 0.3, 0.1: 3 + 3 + 2 of 9 pairs ordered right
    gammaness = np.array([0.9, 0.6, 0.4, 0.5, 0.3, 0.1])
    true_energy = np.array([1.0, 2.0, 4.0, 1.0, 1.0, 1.0])
    # relative errors -0.2, 0, +0.2 on the gammas; the hadrons' energies are far off
    log_energy = np.log10(true_energy * np.array([0.8, 1.0, 1.2, 100.0, 100.0, 100.0]))
    true_direction = np.zeros((6, 2))
    # gammas 0.1, 0.2, 0.3 deg above the true position; hadrons 5 deg off
    direction = np.array([[0.0, 0.1], [0.0, 0.2], [0.0, 0.3], [5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    auc, energy_resolution, angular_resolution_deg = prediction_metrics(
        label, gammaness, true_energy, log_energy, true_direction, direction)
    assert auc == pytest.approx(8 / 9)
    # three errors -0.2, 0, 0.2: the 15.87 % and 84.13 % quantiles interpolate to ±0.2 × 0.6827
    assert energy_resolution == pytest.approx(0.2 * 0.682689, rel=1e-5)
    # 68 % of (0.1, 0.2, 0.3): position 0.68 × 2 = 1.36, i.e. 0.2 + 0.36 × 0.1
    assert angular_resolution_deg == pytest.approx(0.236)
    assert PREDICTION_METRICS == ("auc", "energy_resolution", "angular_resolution_deg")
    np.testing.assert_allclose(fov_separation_deg(true_direction, direction), [0.1, 0.2, 0.3, 5, 5, 5])

    # one gamma (0.4: above 0.3 and 0.1, below 0.5): no resolution; gammas only: no AUC
    one_gamma = prediction_metrics(label[2:], gammaness[2:], true_energy[2:], log_energy[2:],
                                   true_direction[2:], direction[2:])
    assert one_gamma[0] == pytest.approx(2 / 3) and np.all(np.isnan(one_gamma[1:]))
    gammas = prediction_metrics(label[:3], gammaness[:3], true_energy[:3], log_energy[:3],
                                true_direction[:3], direction[:3])
    assert np.isnan(gammas[0]) and gammas[1:] == pytest.approx((energy_resolution, angular_resolution_deg))


def test_bootstrap_difference_error_paired_and_independent():
    """The error of a difference of means: sqrt(2/n) for independent unit-variance samples, zero
    for the same events paired (the events' own scatter cancels)."""
    from ctapipe_gammaphysnet.evaluation.metrics import bootstrap_difference_error

    rng = np.random.default_rng(3)
    n = 1000
    ours, reference = rng.normal(0, 1, n), rng.normal(0, 1, n)
    error = bootstrap_difference_error(np.mean, (ours,), (reference,), paired=False, n_resamples=400)
    assert error == pytest.approx(np.sqrt(2 / n), rel=0.15)
    paired = bootstrap_difference_error(np.mean, (ours + 1,), (ours,), paired=True, n_resamples=50)
    assert paired == pytest.approx(0, abs=1e-12)
    # paired on independent errors: the same as unpaired
    error = bootstrap_difference_error(np.mean, (ours,), (reference,), paired=True, n_resamples=400)
    assert error == pytest.approx(np.sqrt(2 / n), rel=0.15)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_difference_error(np.mean, (ours,), (reference[:10],), paired=True)
    assert np.isnan(bootstrap_difference_error(np.mean, (ours[:0],), (reference,), paired=False))
