"""Reading simulated DL2 events and finding the reconstructors they hold.

A reconstructor is recognised by its columns, whatever the HDF5 group it came from
(``classification`` in ctapipe 0.28, ``particle_type`` from 0.29 on):

- energy: ``<prefix>_energy`` and ``<prefix>_is_valid``
- particle type: ``<prefix>_prediction`` (gammaness) and ``<prefix>_is_valid``
- geometry: ``<prefix>_alt``, ``<prefix>_az`` and ``<prefix>_is_valid``

Telescope-level results carry prefixes ending in ``_tel`` (ctapipe's convention).
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
import tables
from astropy.table import vstack
from ctapipe.io import TableLoader
from ctapipe.io.hdf5dataformat import (
    DL1_SUBARRAY_TRIGGER_TABLE,
    DL2_SUBARRAY_GROUP,
    DL2_TEL_GROUP,
    SIMULATION_SHOWER_TABLE,
)

from ..constants import GAMMA_ID
from ..io.hdf5 import hdf5_error_message
from ..progress import progress_bar

__all__ = [
    "NoReconstructorError",
    "PROPERTIES",
    "EventSample",
    "find_reconstructors",
    "is_reference",
    "check_dl2_file",
    "read_dl2_events",
    "FILE_INDEX",
]

log = logging.getLogger(__name__)

#: reconstructed property -> column suffixes holding its result
PROPERTIES = {
    "energy": ("energy",),
    "particle_type": ("prediction",),
    "geometry": ("alt", "az"),
}

TRUE_COLUMNS = ["true_energy", "true_alt", "true_az", "true_shower_primary_id"]
#: column added to the stacked events: the position of their file in the paths read
FILE_INDEX = "file_index"


class DL2InputError(ValueError):
    """DL2 files that the report cannot evaluate; the message names them and says why."""


class NoReconstructorError(DL2InputError):
    """The DL2 files hold no result the report can evaluate."""


@dataclass
class EventSample:
    """Events of one level (``"subarray"`` or a telescope type) with the reconstructors found."""

    name: str
    table: object
    reconstructors: dict = field(default_factory=dict)  # property -> list of prefixes

    @property
    def is_gamma(self):
        return np.asarray(self.table["true_shower_primary_id"]) == GAMMA_ID

    def valid(self, prefix, property_name):
        """Events with a usable result of ``prefix``: flagged valid and with finite values.

        A result flagged valid but not finite is a reconstructor bug: counted as invalid, with a
        warning, instead of turning the metrics into NaN.
        """
        is_valid = np.ma.filled(np.ma.asarray(self.table[f"{prefix}_is_valid"]), False)
        is_valid = is_valid.astype(bool)
        finite = np.ones(len(self.table), dtype=bool)
        for suffix in PROPERTIES[property_name]:
            column = self.table[f"{prefix}_{suffix}"]
            values = column.value if isinstance(column, u.Quantity) else column
            finite &= np.isfinite(np.ma.filled(np.ma.asarray(values, dtype=float), np.nan))
        n_bad = np.count_nonzero(is_valid & ~finite)
        if n_bad:
            log.warning(
                "%s (%s): %d event(s) flagged valid with non-finite %s, counted as invalid",
                prefix, self.name, n_bad, property_name,
            )
        return is_valid & finite

    def values(self, column, mask, unit=None):
        """Plain float values (in ``unit`` if given) of ``column`` for the events in ``mask``."""
        data = self.table[column][mask]
        if unit is not None:
            data = u.Quantity(data).to_value(unit)
        return np.ma.filled(np.ma.asarray(data, dtype=float), np.nan)


def is_reference(prefix, reference_prefixes):
    """Whether a reconstructor ``prefix`` is a reference: it starts with one of
    ``reference_prefixes`` (``RandomForest`` matches ``RandomForestRegressor_tel``)."""
    return any(prefix.startswith(reference) for reference in reference_prefixes)


def find_reconstructors(colnames, telescope_level=False):
    """Map property -> sorted prefixes of the reconstructors whose columns are in ``colnames``.

    With ``telescope_level``, only prefixes ending in ``_tel`` (telescope-level results),
    otherwise only the others (subarray-level results, which TableLoader also joins onto
    telescope events).
    """
    colnames = set(colnames)
    found = {}
    for property_name, suffixes in PROPERTIES.items():
        prefixes = set()
        for name in colnames:
            if not name.endswith("_" + suffixes[0]):
                continue
            prefix = name[: -len(suffixes[0]) - 1]
            if prefix == "true" or prefix.endswith("_tel") != telescope_level:
                continue
            if not all(f"{prefix}_{suffix}" in colnames for suffix in suffixes):
                continue
            if f"{prefix}_is_valid" not in colnames:
                # ctapipe renames clashing columns X_is_valid_1, X_is_valid_2, ...
                log.warning(
                    "prefix %r has no single '%s_is_valid' column (one prefix used for several"
                    " properties?), its %s results are skipped",
                    prefix, prefix, property_name,
                )
                continue
            prefixes.add(prefix)
        if prefixes:
            found[property_name] = sorted(prefixes)
    return found


def check_dl2_file(path):
    """The number of subarray events of a DL2 file; a ValueError naming ``path`` unless it is HDF5
    with DL2 and simulated showers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"DL2 file {path} does not exist")
    if not tables.is_hdf5_file(path):
        raise ValueError(f"{path} is not an HDF5 file")
    try:
        h5file = tables.open_file(path)
    except (tables.HDF5ExtError, OSError) as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({hdf5_error_message(err)})") from None
    with h5file:
        if not any(group in h5file for group in (DL2_SUBARRAY_GROUP, DL2_TEL_GROUP)):
            raise ValueError(f"{path} holds no DL2 results (no /dl2/event group)")
        if SIMULATION_SHOWER_TABLE not in h5file:
            raise ValueError(
                f"{path} holds no simulated showers ({SIMULATION_SHOWER_TABLE}): the report needs "
                "MC truth"
            )
        if DL1_SUBARRAY_TRIGGER_TABLE not in h5file:
            return 0
        return h5file.root[DL1_SUBARRAY_TRIGGER_TABLE].nrows


def _loader(path, dl1_parameters=False, **kwargs):
    return TableLoader(
        input_url=path,
        dl1_parameters=dl1_parameters,
        true_parameters=False,
        pointing=False,
        observation_info=False,
        instrument=False,
        **kwargs,
    )


def _keep_columns(table, reconstructors, index_columns, parameters=()):
    names = list(index_columns) + TRUE_COLUMNS
    names += [name for name in parameters if name in table.colnames]
    for property_name, prefixes in reconstructors.items():
        for prefix in prefixes:
            names += [f"{prefix}_{suffix}" for suffix in PROPERTIES[property_name]]
            names.append(f"{prefix}_is_valid")
    return table[list(dict.fromkeys(names))]


def _read_file(path, telescope_level, parameters=()):
    samples = {}
    with _loader(path, dl1_parameters=bool(parameters), dl2=True, simulated=True) as loader:
        subarray_events = loader.read_subarray_events()
        samples["subarray"] = EventSample(
            "subarray", subarray_events, find_reconstructors(subarray_events.colnames)
        )
        if telescope_level and DL2_TEL_GROUP in loader.h5file:
            by_type = loader.read_telescope_events_by_type()
            for tel_type, table in by_type.items():
                samples[str(tel_type)] = EventSample(
                    str(tel_type), table, find_reconstructors(table.colnames, True)
                )
    for sample in samples.values():
        missing = [c for c in TRUE_COLUMNS if c not in sample.table.colnames]
        if missing:
            raise ValueError(f"{path}: simulated shower columns {missing} missing")
        index = ["obs_id", "event_id"] + (["tel_id"] if sample.name != "subarray" else [])
        sample.table = _keep_columns(sample.table, sample.reconstructors, index,
                                     parameters if sample.name != "subarray" else ())
    return samples


def _common_reconstructors(per_file, name, paths):
    """Reconstructors of a level in every file holding that level; others dropped, loudly."""
    found = {
        path: {(p, prefix) for p, prefixes in samples[name].reconstructors.items()
               for prefix in prefixes}
        for samples, path in zip(per_file, paths)
        if name in samples
    }
    common = set.intersection(*found.values())
    for pair in sorted(set.union(*found.values()) - common):
        lacking = [str(path) for path, pairs in found.items() if pair not in pairs]
        log.warning("%s (%s, %s) is missing in %s: skipped", pair[1], pair[0], name,
                    ", ".join(lacking))
    result = {}
    for property_name, prefix in sorted(common):
        result.setdefault(property_name, []).append(prefix)
    return result


def read_dl2_events(paths, telescope_level=True, parameters=()):
    """Read and stack the simulated DL2 events of several files (gammas and protons alike).

    ``parameters``: DL1 image parameter columns (e.g. ``hillas_intensity``) kept in the
    telescope events where the files hold them.

    Returns
    -------
    dict[str, EventSample]
        ``"subarray"`` and, with ``telescope_level``, one sample per telescope type that has
        telescope-level results; only reconstructors found in every file are kept. The column
        ``file_index`` says which of ``paths`` each event comes from.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no DL2 file given")
    n_events = [check_dl2_file(path) for path in paths]
    if not any(n_events):
        raise DL2InputError(f"no events in {', '.join(map(str, paths))}: nothing to evaluate")
    per_file = []
    for path, n in progress_bar(zip(paths, n_events), total=len(paths), desc="reading DL2 files",
                                unit="file", disable=len(paths) < 2):
        if n == 0:
            log.warning("%s holds no events: skipped", path)
            per_file.append({})  # keeps the file_index of the others
            continue
        log.info("reading %s", path)
        per_file.append(_read_file(path, telescope_level, parameters))

    for file_index, samples in enumerate(per_file):
        for sample in samples.values():
            sample.table[FILE_INDEX] = np.full(len(sample.table), file_index, dtype=np.int32)

    names = dict.fromkeys(name for samples in per_file for name in samples)
    result = {}
    for name in names:
        reconstructors = _common_reconstructors(per_file, name, paths)
        if not reconstructors:
            continue
        index = [FILE_INDEX, "obs_id", "event_id"] + (["tel_id"] if name != "subarray" else [])
        stacked = vstack(
            [
                _keep_columns(samples[name].table, reconstructors, index,
                              parameters if name != "subarray" else ())
                for samples in per_file
                if name in samples
            ],
            join_type="exact",
            metadata_conflicts="silent",  # column descriptions differ between writers
        )
        result[name] = EventSample(name, stacked, reconstructors)
    if not result:
        raise NoReconstructorError(
            "no reconstructor found in "
            + ", ".join(str(p) for p in paths)
            + " (looked for <prefix>_energy, <prefix>_prediction, <prefix>_alt/_az"
            " with <prefix>_is_valid)"
        )
    return result
