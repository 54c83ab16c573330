"""Labelled camera images streamed from ctapipe DL1 HDF5 files for training.

Files are read in chunks of subarray events; the chunks are spread over DataLoader workers (and
distributed ranks), and each worker passes its images through a shuffle buffer of preallocated
arrays. Memory is therefore bounded by ``workers × (chunk + buffer)`` images whatever the number
or size of the files (an LSTCam image with peak times is 15 kB: see docs).

A chunk is read table by table (trigger, shower, and per telescope parameters, images and fixed
pointing, through ctapipe's ``read_table``) and joined on (obs_id, event_id) here, several times
faster than ctapipe's ``TableLoader`` and with the same result; files whose layout differs (a
time series of pointing, tables whose rows do not line up) are read with ``TableLoader``.
lstchain DL1 files are read through ``io.lstchain``, in chunks of LST-1 events, with the same
columns.

Each sample carries the network inputs and the targets of ``nn.losses.task_losses``.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import tables
import torch
from astropy.coordinates import AltAz, SkyCoord
from ctapipe.coordinates import TelescopeFrame
from ctapipe.core.traits import Float, Int
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader
from ctapipe.io.astropy_helpers import read_table
from ctapipe.io.hdf5dataformat import (DL0_TEL_POINTING_GROUP, DL1_SUBARRAY_TRIGGER_TABLE,
                                       DL1_TEL_IMAGES_GROUP, DL1_TEL_PARAMETERS_GROUP,
                                       DL1_TEL_POINTING_GROUP, FIXED_POINTING_GROUP,
                                       SIMULATION_RUN_TABLE, SIMULATION_SHOWER_TABLE)
from traitlets import HasTraits

from ..constants import GAMMA_ID
from . import lstchain
from .hdf5 import hdf5_error_message

__all__ = ["DL1InputError", "TrainingFile", "check_dl1_images",
           "inspect_training_files",
           "compute_targets", "is_validation_event", "DL1ImageStream", "ImageStreamOptions"]

log = logging.getLogger(__name__)

# pointing as a time series, stored differently by ctapipe versions: left to TableLoader
MONITORING_POINTING_GROUPS = (DL0_TEL_POINTING_GROUP, DL1_TEL_POINTING_GROUP)
SHOWER_COLUMNS = ("true_energy", "true_alt", "true_az", "true_core_x", "true_core_y",
                  "true_shower_primary_id")
POINTING_COLUMNS = ("telescope_pointing_altitude", "telescope_pointing_azimuth")


class DL1InputError(ValueError):
    """A DL1 file cannot be used for training; the message names the file and the fix."""


@dataclass
class TrainingFile:
    """What a DL1 file offers for training."""

    path: Path
    subarray: SubarrayDescription
    n_subarray_events: int
    n_gamma_showers: int
    n_showers: int
    #: lstchain's DL1 layout (``io.lstchain``): one row per LST-1 event
    lstchain: bool = False


def check_dl1_images(path):
    """A readable DL1 file with images: ``(n_subarray_events, simulated)``.

    Raises ``DL1InputError`` naming the file (missing, not HDF5, no images).
    """
    path = Path(path)
    if path.is_dir():
        raise DL1InputError(f"{path}: is a directory; give the DL1 files in it")
    if not path.is_file():
        raise DL1InputError(f"{path}: input file does not exist")
    if lstchain.is_lstchain_dl1(path):
        try:
            return lstchain.n_telescope_events(path), lstchain.has_truth(path)
        except lstchain.LSTChainFileError as err:
            raise DL1InputError(str(err)) from None
    try:
        with tables.open_file(path, mode="r") as h5:
            if "/dl1" not in h5 and SIMULATION_RUN_TABLE in h5:
                raise DL1InputError(
                    f"{path}: holds no events: no simulated shower triggered the telescopes "
                    "(simulate more showers, or at higher energies or smaller impacts)"
                )
            if DL1_TEL_IMAGES_GROUP not in h5:
                raise DL1InputError(
                    f"{path}: has no DL1 images ({DL1_TEL_IMAGES_GROUP}); make DL1 files with "
                    "images, e.g. ctapipe-process --write-images, or ctapipe-simulate-showers"
                )
            return h5.root.dl1.event.subarray.trigger.nrows, SIMULATION_SHOWER_TABLE in h5
    except (tables.HDF5ExtError, OSError) as err:
        raise DL1InputError(
            f"{path}: not a readable HDF5 file ({hdf5_error_message(err)})") from None


def inspect_training_files(paths, need_gammas=False, need_hadrons=False):
    """Check DL1 files before any training; raises ``DL1InputError`` naming the file."""
    result = []
    for path in map(Path, paths):
        n_events, simulated = check_dl1_images(path)
        is_lstchain = lstchain.is_lstchain_dl1(path)
        if not simulated:
            truth = "mc_* columns" if is_lstchain else SIMULATION_SHOWER_TABLE
            raise DL1InputError(
                f"{path}: has no simulation truth ({truth}); training needs simulated events"
            )
        if is_lstchain:
            primary = lstchain.read_primary_ids(path)
            subarray = lstchain.read_subarray(path)
        else:
            with tables.open_file(path, mode="r") as h5:
                primary = h5.get_node(SIMULATION_SHOWER_TABLE).col("true_shower_primary_id")
            subarray = SubarrayDescription.from_hdf(path)
        n_gamma = int(np.count_nonzero(primary == GAMMA_ID))
        if need_gammas and n_gamma == 0:
            raise DL1InputError(f"{path}: given as signal, but holds no gamma showers")
        if need_hadrons and n_gamma == len(primary):
            raise DL1InputError(
                f"{path}: given as background, but holds only gamma showers; the background "
                "must be hadron showers (e.g. protons)")
        result.append(TrainingFile(path, subarray, n_events, n_gamma, len(primary),
                                   lstchain=is_lstchain))
    return result


def is_validation_event(obs_id, event_id, fraction):
    """Deterministic split by event: all images of a shower fall on the same side."""
    key = (np.asarray(obs_id, dtype=np.uint64) * np.uint64(1_000_003)
           + np.asarray(event_id, dtype=np.uint64))
    hashed = (key * np.uint64(2_654_435_761)) % np.uint64(2**32)
    return hashed.astype(np.float64) / 2**32 < fraction


def compute_targets(table):
    """Training targets of a telescope-event table (TableLoader columns)."""
    def column(name, unit):
        return u.Quantity(table[name]).to_value(unit)

    pointing = SkyCoord(alt=column("telescope_pointing_altitude", u.deg) * u.deg,
                        az=column("telescope_pointing_azimuth", u.deg) * u.deg, frame=AltAz())
    source = SkyCoord(alt=column("true_alt", u.deg) * u.deg, az=column("true_az", u.deg) * u.deg,
                      frame=AltAz())
    offset = source.transform_to(TelescopeFrame(telescope_pointing=pointing))
    return {
        "label": (np.asarray(table["true_shower_primary_id"]) == GAMMA_ID).astype(np.int64),
        "log_energy": np.log10(column("true_energy", u.TeV)).astype(np.float32),
        "true_energy_tev": column("true_energy", u.TeV).astype(np.float32),
        "direction": np.column_stack([offset.fov_lon.to_value(u.deg),
                                      offset.fov_lat.to_value(u.deg)]).astype(np.float32),
        "impact": np.column_stack([
            column("true_core_x", u.km) - column("pos_x", u.km),
            column("true_core_y", u.km) - column("pos_y", u.km),
        ]).astype(np.float32),
    }


def pointing_zenith_deg(table):
    """The telescope pointing's zenith angle (deg) of each row of a telescope-event table."""
    return (90.0 - u.Quantity(table["telescope_pointing_altitude"]).to_value(u.deg)).astype(np.float32)


def _event_keys(table):
    """(obs_id, event_id) of each row, as one sortable array."""
    keys = np.empty(len(table), dtype=[("obs_id", np.int64), ("event_id", np.int64)])
    keys["obs_id"], keys["event_id"] = table["obs_id"], table["event_id"]
    return keys


def _values(column):
    """A table column as a Quantity (with a unit) or an array, both kept by concatenation."""
    return np.asarray(column) if getattr(column, "unit", None) is None else u.Quantity(column)


def _rows_of(wanted, available):
    """Row of ``available`` holding each key of ``wanted``; None if one is missing."""
    if len(available) == 0:
        return None if len(wanted) else np.zeros(0, dtype=np.intp)
    order = np.argsort(available, kind="stable")
    rows = order[np.minimum(np.searchsorted(available, wanted, sorter=order), len(order) - 1)]
    return rows if np.array_equal(available[rows], wanted) else None


class _ShuffleBuffer:
    """Reservoir of samples in preallocated arrays: its memory is set by its size alone, however
    many images pass through (per-sample objects would fragment the heap as files go by)."""

    def __init__(self, size, rng):
        self.size = size
        self.rng = rng
        self.slots = None
        self.n_held = 0

    def add(self, chunk):
        """Take in the samples of a chunk; yields the samples that leave the buffer meanwhile."""
        if self.slots is None:
            self.slots = {key: np.empty((self.size, *value.shape[1:]), dtype=value.dtype)
                          for key, value in chunk.items()}
        n_rows = len(chunk["label"])
        n_fill = min(self.size - self.n_held, n_rows)
        for key, slots in self.slots.items():
            slots[self.n_held:self.n_held + n_fill] = chunk[key][:n_fill]
        self.n_held += n_fill
        # once full, each new sample takes the slot of a random one of the size + 1 candidates,
        # which leaves; drawing size means the new sample itself leaves at once
        leaving = self.rng.integers(self.size + 1, size=n_rows - n_fill)
        for i, j in zip(range(n_fill, n_rows), leaving):
            if j == self.size:
                yield {key: value[i].copy() for key, value in chunk.items()}
                continue
            yield {key: slots[j].copy() for key, slots in self.slots.items()}
            for key, slots in self.slots.items():
                slots[j] = chunk[key][i]

    def drain(self):
        """The samples still held, in random order."""
        for j in self.rng.permutation(self.n_held):
            yield {key: slots[j].copy() for key, slots in self.slots.items()}
        self.n_held = 0


class DL1ImageStream(torch.utils.data.IterableDataset):
    """Stream of labelled images of one telescope type.

    Parameters
    ----------
    files : list of TrainingFile
    tel_type : str
        ``str(TelescopeDescription)`` of the telescopes to read.
    selection : ctapipe_gammaphysnet.selection.GammaPhysNetImageSelection
        Evaluated on the DL1 parameter table of each telescope.
    split : "train" or "validation"
    validation_fraction : float
    chunk_size : int
        Subarray events read at once per file.
    shuffle_buffer : int
        Images held for shuffling (0: no shuffling, file order).
    seed : int
        With ``set_epoch``, fixes the order completely (reproducible training).
    use_tableloader : bool
        Read every chunk with ctapipe's ``TableLoader`` rather than table by table (slower: the
        reference the direct reader is tested and benchmarked against).
    """

    def __init__(self, files, tel_type, selection, split="train", validation_fraction=0.1,
                 chunk_size=2000, shuffle_buffer=4096, seed=0, use_tableloader=False):
        super().__init__()
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
        self.files = files
        self.tel_type = tel_type
        self.selection = selection
        self.split = split
        self.validation_fraction = validation_fraction
        self.chunk_size = chunk_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.use_tableloader = use_tableloader
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self.work_units = [
            (i, start, min(start + chunk_size, f.n_subarray_events))
            for i, f in enumerate(files)
            for start in range(0, f.n_subarray_events, chunk_size)
        ]
        # per file read in this process: telescope table rows before each chunk boundary
        self._row_offsets = {}

    def set_epoch(self, epoch):
        self.epoch = epoch

    def set_distributed(self, rank, world_size):
        """Give each of ``world_size`` processes its own share of the chunks."""
        self.rank, self.world_size = rank, world_size

    def _my_units(self):
        order = np.arange(len(self.work_units))
        if self.shuffle_buffer > 0:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        info = torch.utils.data.get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        n_shares = self.world_size * n_workers
        share = self.rank * n_workers + worker
        return [self.work_units[i] for i in order[share::n_shares]], share

    def _has_tel_type(self, file_index):
        return self.tel_type in {str(t) for t in self.files[file_index].subarray.telescope_types}

    def _selected(self, table):
        """Images that pass the quality cuts and belong to this split."""
        if len(table) == 0:
            return np.zeros(0, dtype=bool)
        selected = self.selection.table_mask(table)
        validation = is_validation_event(table["obs_id"], table["event_id"],
                                         self.validation_fraction)
        return selected & (validation if self.split == "validation" else ~validation)

    def _telescope_rows(self, h5, file_index, start, stop):
        """``{tel_id: (first, last)}``: the rows of each telescope's tables that belong to the
        subarray events ``start:stop``.

        A telescope's tables hold one row per subarray event it triggered, in file order (what
        ``TableLoader`` relies on too), so the rows are counted from the trigger table's
        ``tels_with_trigger``, once per file and process, at the chunk boundaries only.
        """
        subarray = self.files[file_index].subarray
        tel_ids = subarray.get_tel_ids([self.tel_type])
        if file_index not in self._row_offsets:
            trigger = h5.get_node(DL1_SUBARRAY_TRIGGER_TABLE)
            columns = subarray.tel_ids_to_indices(tel_ids)
            bounds = [*range(0, self.files[file_index].n_subarray_events, self.chunk_size),
                      self.files[file_index].n_subarray_events]
            counts = [trigger.read(first, last, field="tels_with_trigger")[:, columns].sum(axis=0)
                      for first, last in zip(bounds[:-1], bounds[1:])]
            offsets = np.zeros((len(bounds), len(tel_ids)), dtype=np.int64)
            np.cumsum(counts, axis=0, out=offsets[1:])
            self._row_offsets[file_index] = dict(zip(bounds, offsets))
        offsets = self._row_offsets[file_index]
        return {tel_id: (int(offsets[start][i]), int(offsets[stop][i]))
                for i, tel_id in enumerate(tel_ids)}

    def _read_direct(self, h5, file_index, start, stop):
        """Selected images of one chunk with the columns of the targets, read table by table and
        joined here; None where the file's layout is not the one this relies on (time series of
        pointing, which ctapipe versions store differently, or tables whose rows do not line up).
        """
        if FIXED_POINTING_GROUP not in h5 or any(g in h5 for g in MONITORING_POINTING_GROUPS):
            return None
        events = _event_keys(h5.get_node(DL1_SUBARRAY_TRIGGER_TABLE).read(start, stop))
        shower = read_table(h5, SIMULATION_SHOWER_TABLE, start=start, stop=stop)
        if not np.array_equal(_event_keys(shower), events):
            return None
        tables_read = []
        for tel_id, (first, last) in self._telescope_rows(h5, file_index, start, stop).items():
            if first == last:
                continue
            paths = [f"{group}/tel_{tel_id:03d}" for group in
                     (DL1_TEL_PARAMETERS_GROUP, DL1_TEL_IMAGES_GROUP, FIXED_POINTING_GROUP)]
            if not all(path in h5 for path in paths):
                return None
            parameters = read_table(h5, paths[0], start=first, stop=last)
            images = read_table(h5, paths[1], start=first, stop=last)
            pointing = read_table(h5, paths[2])
            event = _rows_of(_event_keys(parameters), events)
            pointing_row = _rows_of(np.asarray(parameters["obs_id"]),
                                    np.asarray(pointing["obs_id"]))
            if (event is None or pointing_row is None
                    or not np.array_equal(_event_keys(images), _event_keys(parameters))):
                return None
            tables_read.append((tel_id, parameters, images, event, pointing, pointing_row))

        # cuts only now that TableLoader is not needed: their statistics count each image once
        positions = self.files[file_index].subarray.positions
        parts = []
        for tel_id, parameters, images, event, pointing, pointing_row in tables_read:
            selected = self._selected(parameters)
            event, pointing_row = event[selected], pointing_row[selected]
            x, y = positions[tel_id][:2]
            parts.append({
                "event": event,
                "tel_id": np.full(len(event), tel_id),
                "image": images["image"][selected],
                "peak_time": images["peak_time"][selected],
                **{name: _values(shower[name])[event] for name in SHOWER_COLUMNS},
                **{name: _values(pointing[name])[pointing_row] for name in POINTING_COLUMNS},
                "pos_x": np.full(len(event), x.to_value(u.m)) * u.m,
                "pos_y": np.full(len(event), y.to_value(u.m)) * u.m,
            })
        if len(parts) < 2:
            return parts[0] if parts else {}
        # TableLoader's order: by subarray event, then telescope
        order = np.lexsort((np.concatenate([p["tel_id"] for p in parts]),
                            np.concatenate([p["event"] for p in parts])))
        return {key: np.concatenate([p[key] for p in parts])[order] for key in parts[0]}

    def _read_tableloader(self, file_index, start, stop):
        with TableLoader(self.files[file_index].path, dl1_images=True, dl1_parameters=True,
                         simulated=True, instrument=True, pointing=True) as loader:
            table = loader.read_telescope_events([self.tel_type], start=start, stop=stop)
        return table[self._selected(table)]

    def read_chunk(self, file_index, start, stop):
        """Selected images and targets of one chunk, as a dict of numpy arrays (None: none)."""
        if not self._has_tel_type(file_index):
            return None
        path = self.files[file_index].path
        columns = None
        if self.files[file_index].lstchain:
            columns = lstchain.read_telescope_events(path, start, stop,
                                                     self.files[file_index].subarray)
            columns = columns[self._selected(columns)]
        elif not self.use_tableloader:
            with tables.open_file(path, mode="r") as h5:
                columns = self._read_direct(h5, file_index, start, stop)
            if columns is None:
                log.debug("%s: events %d-%d read with TableLoader (layout)", path, start, stop)
        if columns is None:
            try:
                columns = self._read_tableloader(file_index, start, stop)
            except ValueError as error:  # e.g. an image table with rows missing
                raise ValueError(f"{path}: subarray events {start}-{stop} cannot be read: {error}"
                                 " (do the file's trigger, parameter and image tables line up?)"
                                 ) from error
        if len(columns) == 0 or len(columns["image"]) == 0:
            return None
        sample = compute_targets(columns)
        sample["image"] = np.asarray(columns["image"], dtype=np.float32)
        sample["peak_time"] = np.asarray(columns["peak_time"], dtype=np.float32)
        sample["pointing_zenith"] = pointing_zenith_deg(columns)
        return sample

    def __iter__(self):
        units, share = self._my_units()
        rng = np.random.default_rng([self.seed, self.epoch, share, 1])
        buffer = _ShuffleBuffer(self.shuffle_buffer, rng) if self.shuffle_buffer > 0 else None
        for unit in units:
            chunk = self.read_chunk(*unit)
            if chunk is None:
                continue
            if buffer is None:
                # copies, not views: a sample kept by the consumer would keep its whole chunk alive
                for i in range(len(chunk["label"])):
                    yield {key: value[i].copy() for key, value in chunk.items()}
            else:
                yield from buffer.add(chunk)
            del chunk  # before the next one is read: one chunk in memory at a time
        if buffer is not None:
            yield from buffer.drain()

    def _count_direct(self, file_index, start, stop):
        """Selected images of one chunk from the parameter tables alone; None: layout unknown."""
        n = 0
        with tables.open_file(self.files[file_index].path, mode="r") as h5:
            for tel_id, (first, last) in self._telescope_rows(h5, file_index, start, stop).items():
                path = f"{DL1_TEL_PARAMETERS_GROUP}/tel_{tel_id:03d}"
                if first == last:
                    continue
                if path not in h5:
                    return None
                parameters = read_table(h5, path, start=first, stop=last)
                n += int(np.count_nonzero(self._selected(parameters)))
        return n

    def count(self):
        """Number of selected images (reads the parameter tables only)."""
        n = 0
        for file_index, start, stop in self.work_units:
            if not self._has_tel_type(file_index):
                continue
            if self.files[file_index].lstchain:
                parameters = lstchain.read_telescope_events(
                    self.files[file_index].path, start, stop, self.files[file_index].subarray,
                    images=False)
                n += int(np.count_nonzero(self._selected(parameters)))
                continue
            n_chunk = None if self.use_tableloader else self._count_direct(file_index, start, stop)
            if n_chunk is None:
                with TableLoader(self.files[file_index].path, dl1_parameters=True, simulated=False,
                                 instrument=False, pointing=False) as loader:
                    table = loader.read_telescope_events([self.tel_type], start=start, stop=stop)
                n_chunk = int(np.count_nonzero(self._selected(table)))
            n += n_chunk
        return n


class ImageStreamOptions(HasTraits):
    """The options of the training, validation and test streams, and the streams.

    Mixed into the classes that train (the training tool, the seed study), so that each keeps
    the options in its own configuration section (``--TrainGammaPhysNetTool.chunk_size``).
    """

    validation_fraction = Float(0.1, help="Fraction of the events used for validation").tag(config=True)
    chunk_size = Int(2000, help="Subarray events read from a file at once").tag(config=True)
    shuffle_buffer = Int(4096, help="Images held in each worker's shuffle buffer").tag(config=True)

    def image_streams(self, files, tel_type, selection, seed, test_files=None):
        """``{"train": …, "validation": …}``: the two sides of the event split of ``files``, the
        training images shuffled in an order fixed by ``seed``; with ``test_files`` also
        ``"test"``: every image of those files, in file order."""
        def stream(stream_files, split, fraction, shuffle_buffer):
            return DL1ImageStream(stream_files, tel_type, selection, split=split,
                                  validation_fraction=fraction, chunk_size=self.chunk_size,
                                  shuffle_buffer=shuffle_buffer, seed=seed)

        streams = {"train": stream(files, "train", self.validation_fraction, self.shuffle_buffer),
                   "validation": stream(files, "validation", self.validation_fraction, 0)}
        if test_files:
            # every event of a test file is on the 'validation' side of a split with fraction 1
            streams["test"] = stream(test_files, "validation", 1.0, 0)
        return streams
