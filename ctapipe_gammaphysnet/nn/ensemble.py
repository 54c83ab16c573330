"""Averaging the members of a γ-PhysNet ensemble (networks of different seeds or trainings).

Gammaness and log10(E/TeV) are averaged; directions are averaged as unit vectors on the sphere (an
arithmetic mean of angles is wrong near the poles and for wide spreads). The spread between members
is the uncertainty: the sample standard deviation (ddof=1) for gammaness and log-energy, and for the
direction ``sqrt(-2 ln R)`` (deg), R being the length of the mean unit vector — the same estimator
as ctapipe's stereo ``ang_distance_uncert``; for small spreads it is the RMS angular distance of the
members from their mean direction.
"""
import numpy as np

__all__ = ["average_members", "mean_direction"]


def mean_direction(fov_lon, fov_lat):
    """Mean direction of ``(n_members, n)`` directions (deg) and its spread ``sqrt(-2 ln R)`` (deg)."""
    lon, lat = np.deg2rad(fov_lon), np.deg2rad(fov_lat)
    x = np.mean(np.cos(lat) * np.cos(lon), axis=0)
    y = np.mean(np.cos(lat) * np.sin(lon), axis=0)
    z = np.mean(np.sin(lat), axis=0)
    length = np.sqrt(x**2 + y**2 + z**2)
    mean_lon = np.rad2deg(np.arctan2(y, x))
    mean_lat = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    # identical members give R = 1 up to rounding: clip so the spread is 0, not NaN
    spread = np.rad2deg(np.sqrt(-2 * np.log(np.minimum(length, 1.0))))
    return mean_lon, mean_lat, spread


def average_members(members):
    """Ensemble mean and spread of the members' outputs.

    Parameters
    ----------
    members : list of dict
        One dict of numpy arrays per member, with ``gammaness`` (n,), ``log_energy`` (n,),
        ``direction`` (n, 2: fov_lon, fov_lat in deg) and optionally ``impact`` (n, 2), e.g. the
        outputs of ``GammaPhysNetTrainer.predict``.

    Returns
    -------
    mean : dict
        ``gammaness``, ``log_energy``, ``direction`` (n, 2) and ``impact`` when given.
    spread : dict
        ``gammaness_std``, ``log_energy_std`` and ``direction_spread`` (deg), all (n,).
        With a single member there is no spread: the values are NaN.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    shapes = {len(m["log_energy"]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members predict different numbers of images: {sorted(shapes)}")
    stack = {key: np.stack([np.asarray(m[key], dtype=np.float64) for m in members])
             for key in ("gammaness", "log_energy", "direction")}
    lon, lat, direction_spread = mean_direction(stack["direction"][..., 0], stack["direction"][..., 1])
    mean = {
        "gammaness": stack["gammaness"].mean(axis=0),
        "log_energy": stack["log_energy"].mean(axis=0),
        "direction": np.column_stack([lon, lat]),
    }
    if all("impact" in m for m in members):
        mean["impact"] = np.mean([np.asarray(m["impact"], dtype=np.float64) for m in members], axis=0)
    n = len(mean["gammaness"])
    if len(members) == 1:
        nan = np.full(n, np.nan)
        return mean, {"gammaness_std": nan, "log_energy_std": nan.copy(),
                      "direction_spread": nan.copy()}
    spread = {
        "gammaness_std": stack["gammaness"].std(axis=0, ddof=1),
        "log_energy_std": stack["log_energy"].std(axis=0, ddof=1),
        "direction_spread": direction_spread,
    }
    return mean, spread
