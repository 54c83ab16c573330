"""Shared inference engine of the γ-PhysNet reconstruction components.

One engine serves every component configured with the same model files: it loads the files once,
assigns each telescope its network by camera geometry, runs all images of an array event (or of a
table chunk) in batches, and remembers the results, so that the network runs once per telescope
image however many components ask for energy, direction or gammaness.

Several model files form an ensemble: the members' gammaness and log-energy are averaged, their
directions are averaged as unit vectors; the spread between members becomes the uncertainty.

Images that fail the sanity checks of `ctapipe_gammaphysnet.image_checks` do not run through
the networks: their results are NaN (written invalid), and the count per check is logged once
at the end of the run.

Every image comes with its telescope's pointing zenith angle: pointing-aware networks take it as
an input, and images outside the zenith range a model was trained on (recorded in its model file)
are warned about or written invalid (``outside_zenith_range``).
"""
import logging
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from ctapipe.containers import CoordinateFrameType

from ..image_checks import CHECKS, image_check_failures
from ..io.model_file import ModelFileError, load_model_file
from ..nn.ensemble import average_members
from ..nn.inference import optimize_for_inference

__all__ = ["InferenceEngine", "get_engine", "match_models", "table_pointing", "telescope_to_altaz",
           "PREDICTIONS", "OUTSIDE_ZENITH_RANGE", "ZENITH_TOLERANCE_DEG"]

log = logging.getLogger(__name__)

#: names of the per-image results, all float64 arrays
PREDICTIONS = (
    "gammaness", "gammaness_std", "log_energy", "log_energy_std",
    "fov_lon", "fov_lat", "direction_spread", "impact_x", "impact_y",
)


def telescope_to_altaz(fov_lon, fov_lat, pointing_alt, pointing_az):
    """Exact ``TelescopeFrame`` → ``AltAz`` conversion, all angles in degrees.

    The same rotation as ctapipe's ``TelescopeFrame`` (a sky-offset frame centred on the pointing,
    ``fov_lon`` along azimuth, ``fov_lat`` along altitude), written with numpy so that a batch of
    images costs microseconds instead of an astropy frame transform per event.
    """
    lon, lat = np.deg2rad(fov_lon), np.deg2rad(fov_lat)
    alt0, az0 = np.deg2rad(pointing_alt), np.deg2rad(pointing_az)
    x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)
    # tilt the offset frame's pole down to the pointing altitude, then turn to its azimuth
    x1 = np.cos(alt0) * x - np.sin(alt0) * z
    z1 = np.sin(alt0) * x + np.cos(alt0) * z
    x2 = np.cos(az0) * x1 - np.sin(az0) * y
    y2 = np.sin(az0) * x1 + np.cos(az0) * y
    alt = np.rad2deg(np.arctan2(z1, np.hypot(x2, y2)))
    az = np.rad2deg(np.arctan2(y2, x2)) % 360.0
    return alt, az


#: how far (deg) outside the zenith range of its training a model is still applied silently
ZENITH_TOLERANCE_DEG = 5.0
#: what happens to images outside a model's zenith range (± the tolerance)
OUTSIDE_ZENITH_RANGE = ("warn", "invalid")


@dataclass(frozen=True)
class ModelGroup:
    """The networks (one per ensemble member) that serve one camera type, and the pointing zenith
    range (deg) all of them were trained on (None: not recorded)."""

    name: str
    networks: tuple
    n_pixels: int
    zenith_range: tuple = None


def common_zenith_range(models):
    """The zenith range (deg) covered by the training of all ``models``; None if one of them does
    not record it."""
    ranges = [model.zenith_range for model in models]
    if any(r is None for r in ranges):
        return None
    return max(r[0] for r in ranges), min(r[1] for r in ranges)


class InferenceEngine:
    """Runs γ-PhysNet networks on the telescope images of a subarray.

    Parameters
    ----------
    model_paths : list of path-like
        Model files; more than one is an ensemble whose members must cover the same cameras.
    subarray : ctapipe.instrument.SubarrayDescription
    device : str
        Torch device.
    batch_size : int
        Images per forward pass.
    log : logging.Logger
        Where the warnings go (the component's logger, so that the Tool's log shows them).
    outside_zenith_range : str
        Images whose pointing lies more than `ZENITH_TOLERANCE_DEG` outside the zenith range of
        the model's training: "warn" (predict, and warn once per camera type) or "invalid" (no
        prediction, written invalid, and warn).
    """

    def __init__(self, model_paths, subarray, device="cpu", batch_size=32, log=log,
                 outside_zenith_range="warn"):
        if outside_zenith_range not in OUTSIDE_ZENITH_RANGE:
            raise ValueError(f"outside_zenith_range must be one of {OUTSIDE_ZENITH_RANGE}, "
                             f"got {outside_zenith_range!r}")
        self.outside_zenith_range = outside_zenith_range
        self.log = log
        self._warned_zenith = set()
        if not model_paths:
            raise ModelFileError("no γ-PhysNet model file given (model_paths is empty)")
        self.model_paths = [Path(p) for p in model_paths]
        self.subarray = subarray
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model_files = [load_model_file(p, device=self.device) for p in self.model_paths]

        #: tel_id → ModelGroup, only for telescopes that have a network
        self.groups = {}
        groups_by_types = {}
        matched, uncovered = match_models(self.model_files, subarray)
        for tel_id, members in matched.items():
            types = tuple(m.tel_type for m in members)
            if types not in groups_by_types:
                groups_by_types[types] = ModelGroup(
                    name="+".join(dict.fromkeys(types)),
                    networks=tuple(self._prepare(m.network) for m in members),
                    n_pixels=subarray.tel[tel_id].camera.geometry.n_pixels,
                    zenith_range=common_zenith_range(members),
                )
            self.groups[tel_id] = groups_by_types[types]
        for camera, tel_ids in uncovered.items():
            log.warning("no γ-PhysNet model for camera %s (telescopes %s): their images get no "
                        "prediction (written invalid)", camera, ", ".join(map(str, tel_ids)))
        self.clear_cache()
        self.n_checked = self.n_failed = 0
        self.failed_checks = Counter()  # an image may fail several checks
        self._check_log = None

    def log_checks_at_end_of_run(self, component):
        """Log the image-check counts through ``component``'s logger when the Tool that it
        belongs to ends (once per engine however many components share it)."""
        tool = component
        while getattr(tool, "parent", None) is not None:
            tool = tool.parent
        if self._check_log is None and hasattr(tool, "enter_context"):
            self._check_log = component.log
            tool.enter_context(self._checks_logged())

    @contextmanager
    def _checks_logged(self):
        try:
            yield
        finally:
            if self.n_failed:
                self._check_log.warning(
                    "%d of %d images failed the image checks and were written invalid (%s)",
                    self.n_failed, self.n_checked,
                    ", ".join(f"{name}: {self.failed_checks[name]}" for name in CHECKS
                              if self.failed_checks[name]))
            self.n_checked = self.n_failed = 0
            self.failed_checks.clear()
            self._check_log = None

    def clear_cache(self):
        """Forget the results kept for the last event and the last table."""
        self._event_key = None
        self._event_results = {}
        self._table = None
        self._table_results = None
        self._table_done = None

    def _prepare(self, network):
        """On CPU, the network with masks baked in and batch norms folded (same outputs)."""
        return optimize_for_inference(network) if self.device.type == "cpu" else network

    def group_for(self, tel_id):
        """The model group of a telescope, or None if no model covers its camera."""
        return self.groups.get(tel_id)

    def group_for_geometry(self, geometry):
        """The model group of a camera geometry (for table-based use), or None."""
        for group in self.groups.values():
            if group.networks[0].grid.matches(geometry):
                return group
        return None

    def predict(self, group, image, peak_time, pointing_zenith):
        """Predictions for images ``(n, n_pixels)`` of one camera type, taken with the telescope
        pointing at ``pointing_zenith`` (deg, (n,)): dict of arrays (n,), NaN for the images that
        fail the image checks (or lie outside the model's zenith range, if so configured)."""
        image = np.asarray(image, dtype=np.float32)
        peak_time = np.asarray(peak_time, dtype=np.float32)
        pointing_zenith = np.array(np.broadcast_to(np.asarray(pointing_zenith, dtype=np.float32), image.shape[:1]))
        if image.ndim != 2 or image.shape[1] != group.n_pixels or peak_time.shape != image.shape:
            raise ValueError(
                f"{group.name}: expected images and peak times of shape (n, {group.n_pixels}), "
                f"got {image.shape} and {peak_time.shape}"
            )
        failures = image_check_failures(image, peak_time)
        passed = ~np.logical_or.reduce(list(failures.values()))
        outside = self._outside_zenith_range(group, pointing_zenith)
        if self.outside_zenith_range == "invalid":
            passed &= ~outside
        self.n_checked += len(image)
        self.n_failed += int(np.count_nonzero(~passed))
        self.failed_checks.update({name: int(np.count_nonzero(m)) for name, m in failures.items()})
        if np.all(passed):
            return self._predict(group, image, peak_time, pointing_zenith)
        result = {name: np.full(len(image), np.nan) for name in PREDICTIONS}
        if np.any(passed):
            for name, values in self._predict(group, image[passed], peak_time[passed],
                                              pointing_zenith[passed]).items():
                result[name][passed] = values
        return result

    def _outside_zenith_range(self, group, pointing_zenith):
        """Which images lie outside the group's zenith range; warns once per camera type."""
        if group.zenith_range is None:
            return np.zeros(len(pointing_zenith), dtype=bool)
        low, high = group.zenith_range
        outside = ((pointing_zenith < low - ZENITH_TOLERANCE_DEG)
                   | (pointing_zenith > high + ZENITH_TOLERANCE_DEG))
        if np.any(outside) and group.name not in self._warned_zenith:
            self._warned_zenith.add(group.name)
            self.log.warning(
                "%s: the model was trained at pointing zenith %.1f°–%.1f°, these images were taken "
                "at %.1f°–%.1f°: %s (docs/zenith.rst; train on the zenith range of the data, or set "
                "outside_zenith_range)", group.name, low, high, pointing_zenith[outside].min(),
                pointing_zenith[outside].max(),
                "expect biased energies and directions" if self.outside_zenith_range == "warn"
                else "written invalid")
        return outside

    @torch.inference_mode()
    def _predict(self, group, image, peak_time, pointing_zenith):
        def batch(values, start):
            return torch.from_numpy(np.ascontiguousarray(values[start:start + self.batch_size])).to(self.device)

        members = []
        for network in group.networks:
            outputs = [network(batch(image, start), batch(peak_time, start), batch(pointing_zenith, start))
                       for start in range(0, len(image), self.batch_size)]
            members.append({
                "gammaness": np.concatenate([network.gammaness(o).cpu().numpy() for o in outputs]),
                **{name: np.concatenate([o[name].float().cpu().numpy() for o in outputs])
                   for name in ("log_energy", "direction", "impact")},
            })
        mean, spread = average_members(members)
        return {
            "gammaness": mean["gammaness"],
            "gammaness_std": spread["gammaness_std"],
            "log_energy": mean["log_energy"],
            "log_energy_std": spread["log_energy_std"],
            "fov_lon": mean["direction"][:, 0],
            "fov_lat": mean["direction"][:, 1],
            "direction_spread": spread["direction_spread"],
            "impact_x": mean["impact"][:, 0],
            "impact_y": mean["impact"][:, 1],
        }

    def predict_event(self, event, tel_ids):
        """Predictions for the given telescopes of an array event: ``{tel_id: {name: float}}``.

        Results are kept for the event (by ``obs_id``, ``event_id``); only telescopes not yet
        seen run through the networks, all images of one camera type in one batch.
        """
        key = (event.index.obs_id, event.index.event_id)
        if key != self._event_key:
            self._event_key = key
            self._event_results = {}
        missing = [t for t in tel_ids if t not in self._event_results and t in self.groups]
        by_group = {}
        for tel_id in missing:
            by_group.setdefault(self.groups[tel_id], []).append(tel_id)
        for group, ids in by_group.items():
            image = np.stack([event.dl1.tel[t].image for t in ids])
            peak_time = np.stack([event.dl1.tel[t].peak_time for t in ids])
            zenith = [90.0 - event.monitoring.tel[t].pointing.altitude.to_value(u.deg) for t in ids]
            result = self.predict(group, image, peak_time, zenith)
            for i, tel_id in enumerate(ids):
                self._event_results[tel_id] = {k: float(v[i]) for k, v in result.items()}
        return {t: self._event_results[t] for t in tel_ids if t in self._event_results}

    def predict_table(self, group, table, mask):
        """Predictions for the rows ``mask`` of a table with ``image`` and ``peak_time`` columns.

        Arrays of ``len(table)``, NaN outside ``mask``. Results are kept for the last table, so a
        second component asking for the same table reuses them.
        """
        if self._table is not table:
            self._table = table
            self._table_results = {name: np.full(len(table), np.nan) for name in PREDICTIONS}
            self._table_done = np.zeros(len(table), dtype=bool)
        todo = np.asarray(mask) & ~self._table_done
        if np.any(todo):
            for column in ("image", "peak_time"):
                if column not in table.colnames:
                    raise ValueError(
                        f"the table has no '{column}' column: γ-PhysNet needs DL1 images "
                        "(TableLoader(dl1_images=True), files written with --write-images)"
                    )
            index = np.flatnonzero(todo)
            zenith = 90.0 - table_pointing(table)[0][index]
            result = self.predict(group, np.asarray(table["image"])[index],
                                  np.asarray(table["peak_time"])[index], zenith)
            for name, values in result.items():
                self._table_results[name][index] = values
            self._table_done[index] = True
        return {name: np.where(mask, values, np.nan) for name, values in self._table_results.items()}


def match_models(model_files, subarray):
    """The models of each telescope of ``subarray``, one per loaded model file of ``model_files``
    (several: an ensemble), matched by camera geometry.

    Returns ``(matched, uncovered)``: ``{tel_id: (TelescopeModel, …)}`` for the telescopes that
    the files have models for, and ``{camera name: [tel_id, …]}`` for the others. Raises
    `ModelFileError` when no camera of the subarray has a model, or when some files have a model
    for a camera and others not (ensemble members must cover the same cameras).
    """
    matched, uncovered = {}, {}
    for tel_id, tel in subarray.tel.items():
        members = [f.model_for_geometry(tel.camera.geometry) for f in model_files]
        found = [m is not None for m in members]
        if not any(found):
            uncovered.setdefault(str(tel.camera.name), []).append(tel_id)
            continue
        if not all(found):
            missing = [str(f.path) for f, ok in zip(model_files, found) if not ok]
            raise ModelFileError(
                f"{', '.join(missing)}: no model for camera {tel.camera.name} "
                "although other ensemble members have one; members must cover the same cameras"
            )
        matched[tel_id] = tuple(members)
    if not matched:
        cameras = sorted({str(tel.camera.name) for tel in subarray.tel.values()})
        raise ModelFileError(
            f"{', '.join(str(f.path) for f in model_files)}: no model matches any camera of this "
            f"subarray ({', '.join(cameras)}); the file holds "
            f"{', '.join(sorted(model_files[0].models))}"
            + _layout_note(model_files[0], subarray)
        )
    return matched, uncovered


def table_pointing(table):
    """Pointing (alt, az in deg) of each row: per telescope if present, else the observation's."""
    if "telescope_pointing_altitude" in table.colnames:
        return (u.Quantity(table["telescope_pointing_altitude"]).to_value(u.deg),
                u.Quantity(table["telescope_pointing_azimuth"]).to_value(u.deg))
    if "subarray_pointing_frame" in table.colnames:
        frames = np.unique(table["subarray_pointing_frame"])
        if len(frames) == 1 and CoordinateFrameType(frames[0]) is CoordinateFrameType.ALTAZ:
            return (u.Quantity(table["subarray_pointing_lat"]).to_value(u.deg),
                    u.Quantity(table["subarray_pointing_lon"]).to_value(u.deg))
    raise ValueError(
        "the table has no telescope pointing (telescope_pointing_altitude/azimuth) nor an "
        "AltAz subarray pointing; read it with TableLoader(pointing=True)"
    )


def _layout_note(model_file, subarray):
    """Why a camera with a model's pixel count is still not that model's camera."""
    for tel in subarray.tel.values():
        for model in model_file.models.values():
            if tel.camera.geometry.n_pixels == model.grid.n_pixels:
                return (f". Camera {tel.camera.name} has the {model.grid.n_pixels} pixels of "
                        f"{model.tel_type}, but another pixel layout (positions or numbering "
                        "differ): this model cannot read its images")
    return ""


# engines are shared by the components of one subarray that name the same model files
_ENGINES = weakref.WeakValueDictionary()


def get_engine(model_paths, subarray, device="cpu", batch_size=32, log=log, outside_zenith_range="warn"):
    """The engine for these model files and subarray, created on first use (``log``,
    ``outside_zenith_range``: see `InferenceEngine`)."""
    resolved = tuple(str(Path(p).resolve()) for p in model_paths)
    stamps = tuple(Path(p).stat().st_mtime_ns if Path(p).is_file() else None for p in resolved)
    # the engine keeps the subarray alive, so its id cannot be reused while the engine exists
    key = (resolved, stamps, id(subarray), str(device), int(batch_size), outside_zenith_range)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = InferenceEngine(model_paths, subarray, device=device, batch_size=batch_size,
                                 log=log, outside_zenith_range=outside_zenith_range)
        _ENGINES[key] = engine
    return engine
