"""Performance metrics of gamma-ray reconstruction, as plain numpy functions.

Used by the report and by the training loop (per-epoch validation), so that both quote the same
numbers. Definitions (see ARCHITECTURE.md):

- AUC: area under the ROC curve, labels 1 = gamma (signal), scores 1 = gamma-like;
- energy bias: median of the relative error (E_reco - E_true) / E_true;
- energy resolution: half the width of the central 68.27 % interval (the 15.87 % to 84.13 %
  quantiles, "16-84 %") of the relative error, i.e. sigma for a Gaussian error;
- angular resolution: 68 % containment radius of the angular distance to the true direction;
- the metrics of a set of network predictions (`prediction_metrics`): the AUC over all images,
  energy and angular resolution over the gamma images;
- predicted-offset bias: median of (predicted − true) offset of the source from the pointing
  (negative: predictions pulled toward the camera centre);
- energy migration: the fraction of the events of each true-energy bin per bin of
  reconstructed energy;
- the statistical error of a difference of two reconstructors' metrics: the bootstrap standard
  deviation, resampling the events (the same events for both when they share them).

Inputs must be finite: non-finite values raise a ValueError instead of turning into a silent NaN.
Metrics of an empty sample (or of a ROC with one class only) are NaN by definition.
"""
import astropy.units as u
import numpy as np
from astropy.table import QTable
from scipy.special import ndtr
from scipy.stats import rankdata

__all__ = [
    "roc_curve",
    "roc_auc",
    "relative_energy_error",
    "energy_bias_resolution",
    "angular_separation_deg",
    "containment_68",
    "angular_resolution",
    "fov_separation_deg",
    "PREDICTION_METRICS",
    "prediction_metrics",
    "field_of_view_position",
    "predicted_offset_bias",
    "energy_migration",
    "binned",
    "bootstrap_error",
    "bootstrap_difference_error",
    "significance_verdict",
]

#: quantiles of a normal distribution at -1 and +1 sigma
ONE_SIGMA_QUANTILES = (float(ndtr(-1.0)), float(ndtr(1.0)))


def _finite_array(values, name, unit=None):
    """``values`` as a float array (in ``unit`` when a Quantity), refusing non-finite entries."""
    if isinstance(values, u.Quantity):
        values = values.to_value(unit) if unit is not None else values.value
    array = np.asanyarray(values, dtype=float)
    if np.ma.isMaskedArray(array):
        if np.any(np.ma.getmaskarray(array)):
            raise ValueError(f"{name} has masked entries")
        array = np.ma.getdata(array)
    if not np.all(np.isfinite(array)):
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{name} has {n_bad} non-finite value(s)")
    return array


def _labels_scores(labels, scores):
    labels = np.asarray(labels)
    if labels.dtype != bool:
        if not np.all(np.isin(labels, (0, 1))):
            raise ValueError("labels must be 0 (background) or 1 (signal)")
        labels = labels.astype(bool)
    scores = _finite_array(scores, "scores")
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and scores must be 1-d arrays of equal length, got {labels.shape}"
            f" and {scores.shape}"
        )
    return labels, scores


def _rate(counts, total):
    """Cumulative counts as a fraction of ``total``, starting at 0; NaN when ``total`` is 0."""
    if total == 0:
        return np.full(len(counts) + 1, np.nan)
    return np.append(0.0, counts / total)


def roc_curve(labels, scores):
    """Receiver operating characteristic of a classifier.

    Parameters
    ----------
    labels : array of {0, 1} or bool
        true class, 1 = signal (gamma)
    scores : array of float
        classifier output, larger = more signal-like (gammaness)

    Returns
    -------
    false_positive_rate, true_positive_rate, thresholds : np.ndarray
        one point per distinct score, for the selection ``scores >= threshold``, with
        thresholds in decreasing order; the first point (threshold +inf) is (0, 0).
        A rate whose class is absent from ``labels`` is NaN.
    """
    labels, scores = _labels_scores(labels, scores)
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    sorted_labels = labels[order]

    # the last index of each group of equal scores: ties enter the selection together
    group_ends = np.flatnonzero(np.diff(sorted_scores))
    group_ends = np.append(group_ends, len(scores) - 1) if len(scores) else group_ends

    true_positives = np.cumsum(sorted_labels)[group_ends]
    false_positives = (group_ends + 1) - true_positives
    n_signal = np.count_nonzero(labels)
    fpr = _rate(false_positives, len(labels) - n_signal)
    tpr = _rate(true_positives, n_signal)
    thresholds = np.append(np.inf, sorted_scores[group_ends])
    return fpr, tpr, thresholds


def roc_auc(labels, scores):
    """Area under the ROC curve, computed exactly as the Mann-Whitney U / (n_signal n_background).

    Tied scores count one half, as the trapezoidal area under :func:`roc_curve` does.
    NaN when only one class is present.
    """
    labels, scores = _labels_scores(labels, scores)
    n_signal = np.count_nonzero(labels)
    n_background = len(labels) - n_signal
    if n_signal == 0 or n_background == 0:
        return np.nan
    ranks = rankdata(scores)  # average ranks for ties
    u_statistic = ranks[labels].sum() - n_signal * (n_signal + 1) / 2
    return float(u_statistic / (n_signal * n_background))


def relative_energy_error(true_energy, reco_energy):
    """(E_reco - E_true) / E_true; Quantities are compared in the same unit."""
    unit = true_energy.unit if isinstance(true_energy, u.Quantity) else None
    if isinstance(reco_energy, u.Quantity) != isinstance(true_energy, u.Quantity):
        raise ValueError("true and reconstructed energy must both be Quantities or both plain")
    true = _finite_array(true_energy, "true_energy", unit)
    reco = _finite_array(reco_energy, "reco_energy", unit)
    if true.shape != reco.shape:
        raise ValueError(f"energy arrays differ in shape: {true.shape} vs {reco.shape}")
    if np.any(true <= 0):
        raise ValueError("true_energy must be positive")
    return (reco - true) / true


def energy_bias_resolution(true_energy, reco_energy):
    """Energy bias (median relative error) and resolution (half 16-84 % width), NaN if empty."""
    relative_error = relative_energy_error(true_energy, reco_energy)
    if relative_error.size == 0:
        return np.nan, np.nan
    low, median, high = np.quantile(
        relative_error, [ONE_SIGMA_QUANTILES[0], 0.5, ONE_SIGMA_QUANTILES[1]]
    )
    return float(median), float(0.5 * (high - low))


def angular_separation_deg(alt1, az1, alt2, az2):
    """Great-circle distance in degrees between (alt1, az1) and (alt2, az2).

    Angles in degrees or as Quantities. Vincenty's formula: accurate for tiny and for antipodal
    separations alike (the arccos of a dot product loses precision below ~1 arcsec).
    """
    lat1, lon1, lat2, lon2 = (
        np.deg2rad(_finite_array(a, name, u.deg))
        for a, name in ((alt1, "alt1"), (az1, "az1"), (alt2, "alt2"), (az2, "az2"))
    )
    delta_lon = lon2 - lon1
    sin_lat1, cos_lat1 = np.sin(lat1), np.cos(lat1)
    sin_lat2, cos_lat2 = np.sin(lat2), np.cos(lat2)
    cross = np.hypot(
        cos_lat2 * np.sin(delta_lon),
        cos_lat1 * sin_lat2 - sin_lat1 * cos_lat2 * np.cos(delta_lon),
    )
    dot = sin_lat1 * sin_lat2 + cos_lat1 * cos_lat2 * np.cos(delta_lon)
    return np.rad2deg(np.arctan2(cross, dot))


def containment_68(values):
    """68 % quantile of ``values`` (a containment radius), NaN if empty."""
    values = _finite_array(values, "values")
    if values.size == 0:
        return np.nan
    return float(np.quantile(values, 0.68))


def angular_resolution(separation):
    """68 % containment radius in deg of the angular distances ``separation`` (deg or Quantity)."""
    return containment_68(_finite_array(separation, "separation", u.deg))


def fov_separation_deg(direction_a, direction_b):
    """Angular distance in deg between two sets of directions in a telescope's field of view,
    arrays (n, 2) of (fov_lon, fov_lat) in deg (the network's ``direction`` output)."""
    direction_a, direction_b = np.asarray(direction_a), np.asarray(direction_b)
    return angular_separation_deg(direction_a[:, 1], direction_a[:, 0],
                                  direction_b[:, 1], direction_b[:, 0])


#: names of the values `prediction_metrics` returns, in its order
PREDICTION_METRICS = ("auc", "energy_resolution", "angular_resolution_deg")


def prediction_metrics(label, gammaness, true_energy_tev, log_energy, true_direction, direction):
    """AUC, energy resolution and 68 % angular resolution (deg) of a set of network predictions.

    One entry per image: ``label`` 1 = gamma, ``gammaness``, ``true_energy_tev``, ``log_energy``
    = log10(E_reco / TeV), ``true_direction`` and ``direction`` as (fov_lon, fov_lat) in deg.
    The AUC is over all images (NaN with one class only); the resolutions over the gamma images
    (NaN with fewer than two). The order of the values is `PREDICTION_METRICS`.
    """
    label = np.asarray(label)
    gamma = label == 1
    auc = roc_auc(label, gammaness)
    if np.count_nonzero(gamma) < 2:
        return auc, np.nan, np.nan
    _, resolution = energy_bias_resolution(np.asarray(true_energy_tev)[gamma],
                                           10 ** np.asarray(log_energy)[gamma])
    separation = fov_separation_deg(np.asarray(true_direction)[gamma], np.asarray(direction)[gamma])
    return auc, resolution, containment_68(separation)


def field_of_view_position(alt, az, pointing_alt, pointing_az):
    """(fov_lon, fov_lat) in deg of the direction (alt, az) around a pointing (all in deg or as
    Quantities): spherical coordinates about the pointing as ctapipe's `TelescopeFrame` gives
    them, fov_lat towards the zenith, fov_lon towards increasing azimuth. The position angle of
    the direction about the pointing is arctan2(fov_lon, fov_lat)."""
    alt, az, pointing_alt, pointing_az = (
        np.deg2rad(_finite_array(a, name, u.deg)) for a, name in (
            (alt, "alt"), (az, "az"), (pointing_alt, "pointing_alt"), (pointing_az, "pointing_az"))
    )
    delta_az = az - pointing_az
    # the direction on the pointing's unit vectors: along it, towards the zenith, towards azimuth
    along = np.cos(alt) * np.cos(pointing_alt) * np.cos(delta_az) + np.sin(alt) * np.sin(pointing_alt)
    towards_zenith = np.sin(alt) * np.cos(pointing_alt) - np.cos(alt) * np.sin(pointing_alt) * np.cos(delta_az)
    towards_azimuth = np.cos(alt) * np.sin(delta_az)
    fov_lon = np.arctan2(towards_azimuth, along)
    fov_lat = np.arcsin(np.clip(towards_zenith, -1, 1))
    return np.rad2deg(fov_lon), np.rad2deg(fov_lat)


def predicted_offset_bias(true_offset, reco_offset):
    """Median of (predicted − true) offset from the pointing (deg or Quantities), NaN if empty.

    A reconstructor that always answers the pointing (the camera centre) has a bias of minus the
    true offset; one pulled toward the centre of its training distribution shows it here.
    """
    true = _finite_array(true_offset, "true_offset", u.deg)
    reco = _finite_array(reco_offset, "reco_offset", u.deg)
    if true.shape != reco.shape:
        raise ValueError(f"offset arrays differ in shape: {true.shape} vs {reco.shape}")
    if true.size == 0:
        return np.nan
    return float(np.median(reco - true))


def energy_migration(true_energy, reco_energy, true_edges, reco_edges):
    """Energy migration matrix: counts and fractions of each true-energy bin's events per bin of
    reconstructed energy, both of shape (n_true_bins, n_reco_bins).

    The fractions of a true-energy bin add up to less than 1 when some of its events fall outside
    ``reco_edges``; a bin without events has NaN fractions. Energies and edges as Quantities
    (compared in the unit of ``true_edges``) or all plain.
    """
    unit = true_edges.unit if isinstance(true_edges, u.Quantity) else None
    if any(isinstance(x, u.Quantity) != (unit is not None)
           for x in (true_energy, reco_energy, reco_edges)):
        raise ValueError("energies and edges must all be Quantities or all plain")
    relative_energy_error(true_energy, reco_energy)  # the same checks as the other energy metrics
    true = _finite_array(true_energy, "true_energy", unit)
    reco = _finite_array(reco_energy, "reco_energy", unit)
    true_edges = _finite_array(true_edges, "true_edges", unit)
    counts, _, _ = np.histogram2d(true, reco, [true_edges, _finite_array(reco_edges, "reco_edges", unit)])
    n_true = np.histogram(true, true_edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = counts / n_true[:, np.newaxis]
    return counts.astype(int), fractions


def binned(metric_fn, bin_values, bin_edges, *arrays, min_events=10, names=None):
    """Evaluate ``metric_fn(*arrays_in_bin)`` in each bin of ``bin_values``.

    Parameters
    ----------
    metric_fn : callable
        returns a number or a tuple of numbers
    bin_values : array or Quantity
        the binning variable, e.g. the true energy
    bin_edges : array or Quantity
        increasing edges; a bin holds ``low <= value < high``
    *arrays : arrays
        the metric's arguments, one entry per event
    min_events : int
        bins with fewer events get NaN metric values
    names : list of str
        column names of the metric's results; default ``"value"`` (``value_0``, … for tuples)

    Returns
    -------
    QTable
        columns ``low``, ``high``, ``center`` (geometric for positive edges), ``n_events``
        and one per metric result
    """
    edges_unit = bin_edges.unit if isinstance(bin_edges, u.Quantity) else None
    edges = _finite_array(bin_edges, "bin_edges", edges_unit)
    if isinstance(bin_values, u.Quantity) != (edges_unit is not None):
        raise ValueError("bin_values and bin_edges must both be Quantities or both plain")
    values = _finite_array(bin_values, "bin_values", edges_unit)
    arrays = [np.asanyarray(array) for array in arrays]  # keeps Quantities
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bin_edges must be at least two strictly increasing values")
    for array in arrays:
        if len(array) != len(values):
            raise ValueError(
                f"every array needs one entry per event: {len(array)} != {len(values)}"
            )

    n_bins = len(edges) - 1
    bin_index = np.digitize(values, edges) - 1
    results = []
    n_events = np.zeros(n_bins, dtype=int)
    for i in range(n_bins):
        in_bin = bin_index == i
        n_events[i] = np.count_nonzero(in_bin)
        if n_events[i] < min_events:
            results.append(None)
            continue
        result = metric_fn(*(array[in_bin] for array in arrays))
        results.append(np.atleast_1d(np.asarray(result, dtype=float)))

    n_results = next((len(r) for r in results if r is not None), None)
    if n_results is None:
        n_results = len(names) if names is not None else 1
    if names is None:
        names = ["value"] if n_results == 1 else [f"value_{i}" for i in range(n_results)]
    if len(names) != n_results:
        raise ValueError(f"metric returns {n_results} value(s) but {len(names)} name(s) given")
    columns = np.full((n_bins, n_results), np.nan)
    for i, result in enumerate(results):
        if result is not None:
            columns[i] = result

    unit = edges_unit if edges_unit is not None else 1
    center = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else 0.5 * (edges[:-1] + edges[1:])
    table = QTable(
        {"low": edges[:-1] * unit, "high": edges[1:] * unit, "center": center * unit,
         "n_events": n_events}
    )
    for name, column in zip(names, columns.T):
        table[name] = column
    table.meta["min_events"] = min_events
    return table


def _bootstrap_std(statistic, groups, n_resamples, seed):
    """Standard deviation of ``statistic(*resampled groups)`` over bootstrap resamples: each group
    (a tuple of per-event arrays) is resampled with its own draw of events; resamples where the
    statistic is NaN are left out, NaN when fewer than half of them remain."""
    sizes = [len(group[0]) for group in groups]
    if n_resamples < 2 or min(sizes) == 0:
        return np.nan
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for k in range(n_resamples):
        draws = [rng.integers(0, n, n) for n in sizes]
        values[k] = statistic(*(tuple(a[i] for a in group) for group, i in zip(groups, draws)))
    values = values[np.isfinite(values)]
    if len(values) < n_resamples / 2:
        return np.nan
    return float(np.std(values, ddof=1))


def bootstrap_error(metric_fn, arrays, n_resamples=200, seed=0):
    """Bootstrap standard error of ``metric_fn(*arrays)`` (per-event arrays, resampled)."""
    return _bootstrap_std(lambda group: metric_fn(*group), [tuple(arrays)], n_resamples, seed)


def bootstrap_difference_error(metric_fn, ours, reference, paired, n_resamples=200, seed=0):
    """Bootstrap standard error of ``metric_fn(*ours) - metric_fn(*reference)``.

    ``ours`` and ``reference`` are tuples of per-event arrays. ``paired``: they hold the same
    events in the same order, and every resample draws the same events for both, so that what
    the events share (how hard they are) cancels in the difference; otherwise each is resampled
    on its own.
    """
    ours, reference = tuple(ours), tuple(reference)
    if not paired:
        return _bootstrap_std(lambda a, b: metric_fn(*a) - metric_fn(*b), [ours, reference],
                              n_resamples, seed)
    if len(ours[0]) != len(reference[0]):
        raise ValueError(f"paired samples differ in length: {len(ours[0])} vs {len(reference[0])}")
    n = len(ours)
    return _bootstrap_std(lambda both: metric_fn(*both[:n]) - metric_fn(*both[n:]),
                          [ours + reference], n_resamples, seed)


#: a difference is a verdict ("better", "worse") beyond this many bootstrap errors
SIGNIFICANCE = 2.0


def significance_verdict(gain, error):
    """The verdict on a difference: "better" or "worse" where ``gain`` (the improvement, signed
    so that positive is better) exceeds `SIGNIFICANCE` times its ``error``, else "consistent";
    "" without an error."""
    if not (np.isfinite(gain) and np.isfinite(error)):
        return ""
    if gain > SIGNIFICANCE * error:
        return "better"
    if -gain > SIGNIFICANCE * error:
        return "worse"
    return "consistent"
