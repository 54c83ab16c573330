"""Labelled camera images streamed from ctapipe DL1 HDF5 files for training.

Files are read by ctapipe's ``TableLoader`` in chunks of subarray events; the chunks are spread
over DataLoader workers (and distributed ranks), and each worker passes its images through a
shuffle buffer. Memory is therefore bounded by ``workers × (chunk + buffer)`` images whatever the
number or size of the files (an LSTCam image with peak times is 15 kB: see docs).

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
from ctapipe.core import QualityQuery
from ctapipe.core.traits import List, Tuple, Unicode
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader

__all__ = ["DL1InputError", "ImageQualityQuery", "TrainingFile", "check_dl1_images",
           "inspect_training_files",
           "compute_targets", "is_validation_event", "DL1ImageStream"]

log = logging.getLogger(__name__)

GAMMA_ID = 0
IMAGES_GROUP = "/dl1/event/telescope/images"
SHOWER_TABLE = "/simulation/event/subarray/shower"


class DL1InputError(ValueError):
    """A DL1 file cannot be used for training; the message names the file and the fix."""


class ImageQualityQuery(QualityQuery):
    """Image quality cuts applied to the training images (DL1 parameters columns)."""

    quality_criteria = List(
        Tuple(Unicode(), Unicode()),
        default_value=[
            ("enough intensity", "hillas_intensity >= 50"),
            ("not at the edge", "leakage_intensity_width_2 <= 0.2"),
            ("valid width", "np.isfinite(hillas_width) & (hillas_width > 0)"),
        ],
        help="(name, expression) pairs on the DL1 parameter columns that an image must pass",
    ).tag(config=True)


@dataclass
class TrainingFile:
    """What a DL1 file offers for training."""

    path: Path
    subarray: SubarrayDescription
    n_subarray_events: int
    n_gamma_showers: int
    n_showers: int


def check_dl1_images(path):
    """A readable DL1 file with images: ``(n_subarray_events, simulated)``.

    Raises ``DL1InputError`` naming the file (missing, not HDF5, no images).
    """
    path = Path(path)
    if not path.is_file():
        raise DL1InputError(f"{path}: input file does not exist")
    try:
        with tables.open_file(path, mode="r") as h5:
            if IMAGES_GROUP not in h5:
                raise DL1InputError(
                    f"{path}: has no DL1 images ({IMAGES_GROUP}); make DL1 files with images, "
                    "e.g. ctapipe-process --write-images, or ctapipe-simulate-showers"
                )
            return h5.root.dl1.event.subarray.trigger.nrows, SHOWER_TABLE in h5
    except (tables.HDF5ExtError, OSError) as err:
        raise DL1InputError(f"{path}: not a readable HDF5 file ({err})") from None


def inspect_training_files(paths, need_gammas=False):
    """Check DL1 files before any training; raises ``DL1InputError`` naming the file."""
    result = []
    for path in map(Path, paths):
        n_events, simulated = check_dl1_images(path)
        if not simulated:
            raise DL1InputError(
                f"{path}: has no simulation truth ({SHOWER_TABLE}); training needs simulated events"
            )
        with tables.open_file(path, mode="r") as h5:
            primary = h5.get_node(SHOWER_TABLE).col("true_shower_primary_id")
        n_gamma = int(np.count_nonzero(primary == GAMMA_ID))
        if need_gammas and n_gamma == 0:
            raise DL1InputError(f"{path}: given as signal, but holds no gamma showers")
        subarray = SubarrayDescription.from_hdf(path)
        result.append(TrainingFile(path, subarray, n_events, n_gamma, len(primary)))
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


class DL1ImageStream(torch.utils.data.IterableDataset):
    """Stream of labelled images of one telescope type.

    Parameters
    ----------
    files : list of TrainingFile
    tel_type : str
        ``str(TelescopeDescription)`` of the telescopes to read.
    quality_query : ImageQualityQuery
    split : "train" or "validation"
    validation_fraction : float
    chunk_size : int
        Subarray events read at once per file.
    shuffle_buffer : int
        Images held for shuffling (0: no shuffling, file order).
    seed : int
        With ``set_epoch``, fixes the order completely (reproducible training).
    """

    def __init__(self, files, tel_type, quality_query, split="train", validation_fraction=0.1,
                 chunk_size=2000, shuffle_buffer=4096, seed=0):
        super().__init__()
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
        self.files = files
        self.tel_type = tel_type
        self.quality_query = quality_query
        self.split = split
        self.validation_fraction = validation_fraction
        self.chunk_size = chunk_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self.work_units = [
            (i, start, min(start + chunk_size, f.n_subarray_events))
            for i, f in enumerate(files)
            for start in range(0, f.n_subarray_events, chunk_size)
        ]

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
        selected = self.quality_query.get_table_mask(table)
        validation = is_validation_event(table["obs_id"], table["event_id"],
                                         self.validation_fraction)
        return selected & (validation if self.split == "validation" else ~validation)

    def read_chunk(self, file_index, start, stop):
        """Selected images and targets of one chunk, as a dict of numpy arrays."""
        if not self._has_tel_type(file_index):
            return None
        with TableLoader(self.files[file_index].path, dl1_images=True, dl1_parameters=True,
                         simulated=True, instrument=True, pointing=True) as loader:
            table = loader.read_telescope_events([self.tel_type], start=start, stop=stop)
        table = table[self._selected(table)]
        if len(table) == 0:
            return None
        sample = compute_targets(table)
        sample["image"] = np.asarray(table["image"], dtype=np.float32)
        sample["peak_time"] = np.asarray(table["peak_time"], dtype=np.float32)
        return sample

    def __iter__(self):
        units, share = self._my_units()
        rng = np.random.default_rng([self.seed, self.epoch, share, 1])
        buffer = []
        for unit in units:
            chunk = self.read_chunk(*unit)
            if chunk is None:
                continue
            # copies, not views: a view held in the shuffle buffer would keep its whole chunk alive
            samples = ({key: value[i].copy() for key, value in chunk.items()}
                       for i in range(len(chunk["label"])))
            if self.shuffle_buffer == 0:
                yield from samples
                continue
            for sample in samples:
                buffer.append(sample)
                if len(buffer) > self.shuffle_buffer:
                    # hand out a random element: swap it to the end, pop it
                    j = rng.integers(len(buffer))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def count(self):
        """Number of selected images (reads the parameter tables only)."""
        n = 0
        for file_index, start, stop in self.work_units:
            if not self._has_tel_type(file_index):
                continue
            with TableLoader(self.files[file_index].path, dl1_parameters=True, simulated=False,
                             instrument=False, pointing=False) as loader:
                table = loader.read_telescope_events([self.tel_type], start=start, stop=stop)
            n += int(np.count_nonzero(self._selected(table)))
        return n
