"""The training data stream: its direct reader against ctapipe's TableLoader, its shuffle buffer."""
import shutil

import numpy as np
import pytest
import tables

from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection

SAMPLE_KEYS = {"label", "log_energy", "true_energy_tev", "direction", "impact", "image",
               "peak_time", "pointing_zenith"}


def _chunks(stream):
    return [stream.read_chunk(*unit) for unit in stream.work_units]


def assert_same_chunks(files, tel_type, quality_query, **options):
    direct = _chunks(DL1ImageStream(files, tel_type, quality_query, **options))
    reference = _chunks(DL1ImageStream(files, tel_type, quality_query, use_tableloader=True,
                                       **options))
    n_images = 0
    for ours, theirs in zip(direct, reference, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is None:
            continue
        assert ours.keys() == theirs.keys() == SAMPLE_KEYS
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype, key
            assert np.array_equal(ours[key], theirs[key], equal_nan=True), key
        n_images += len(ours["label"])
    return n_images


def test_direct_reader_equals_tableloader_on_real_files(real_dl1_files):
    """Every telescope type of every ctapipe-process file, in chunks of 3 subarray events (so that
    telescopes without an image in a chunk, several telescopes per type and row offsets occur)."""
    n_images = 0
    for path in real_dl1_files.values():
        files = inspect_training_files([path])
        for tel_type in files[0].subarray.telescope_types:
            n_images += assert_same_chunks(files, str(tel_type),
                                           GammaPhysNetImageSelection(quality_criteria=[]),
                                           validation_fraction=0.5, chunk_size=3)
    assert n_images > 20


@pytest.mark.parametrize("split", ["train", "validation"])
def test_direct_reader_equals_tableloader_on_simulated_file(simulated_dl1_files, split):
    files = inspect_training_files([simulated_dl1_files["proton"], simulated_dl1_files["gamma"]])
    tel_type = str(files[0].subarray.telescope_types[0])
    n_images = assert_same_chunks(files, tel_type, GammaPhysNetImageSelection(), split=split,
                                  validation_fraction=0.3, chunk_size=150)
    assert n_images > 30


@pytest.fixture(scope="module")
def simulated_stream_files(simulated_dl1_files):
    files = inspect_training_files([simulated_dl1_files["gamma_diffuse"],
                                    simulated_dl1_files["proton"]])
    return files, str(files[0].subarray.telescope_types[0])


def _stream(simulated_stream_files, **options):
    files, tel_type = simulated_stream_files
    return DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), chunk_size=100, **options)


def _energies(samples):
    return np.array([s["true_energy_tev"] for s in samples])


def test_count_equals_images_streamed(simulated_stream_files):
    for split in ("train", "validation"):
        stream = _stream(simulated_stream_files, split=split, shuffle_buffer=0)
        samples = list(stream)
        reference = _stream(simulated_stream_files, split=split, use_tableloader=True)
        assert stream.count() == reference.count() == len(samples) > 10


def test_shuffle_buffer_reorders_reproducibly(simulated_stream_files):
    in_order = list(_stream(simulated_stream_files, shuffle_buffer=0))
    # a buffer smaller than the data: samples leave it while chunks still come in
    stream = _stream(simulated_stream_files, shuffle_buffer=64, seed=3)
    shuffled = list(stream)
    again = list(stream)
    stream.set_epoch(1)
    next_epoch = list(stream)
    assert len(in_order) > 64
    assert np.array_equal(_energies(shuffled), _energies(again))
    assert not np.array_equal(_energies(shuffled), _energies(next_epoch))
    assert not np.array_equal(_energies(shuffled), _energies(in_order))
    # the same images, each once, with the shapes and dtypes of the unshuffled stream
    for samples in (shuffled, next_epoch):
        assert len(samples) == len(in_order)
        for name in SAMPLE_KEYS:
            ours = np.stack([s[name] for s in samples])
            theirs = np.stack([s[name] for s in in_order])
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        images = np.stack([s["image"] for s in samples])
        reference = np.stack([s["image"] for s in in_order])
        assert np.array_equal(images[np.lexsort(images.T)], reference[np.lexsort(reference.T)])


def test_samples_are_not_overwritten_by_the_buffer(simulated_stream_files):
    """A sample kept by the consumer stays as it was yielded while the buffer slots are reused."""
    kept = [(sample, {k: v.copy() for k, v in sample.items()})
            for sample in _stream(simulated_stream_files, shuffle_buffer=16)]
    for sample, as_yielded in kept:
        for key in SAMPLE_KEYS:
            assert np.array_equal(sample[key], as_yielded[key])



def test_misaligned_tables_are_refused_naming_the_file(simulated_dl1_files, tmp_path):
    """An image table that lacks a row of its parameter table is not joined table by table (it
    would pair images with other events' parameters); TableLoader, the fallback, cannot join it
    either, and the error names the file and the events."""
    path = tmp_path / "damaged.dl1.h5"
    shutil.copy(simulated_dl1_files["gamma"], path)
    with tables.open_file(path, mode="a") as h5:
        h5.root.dl1.event.telescope.images.tel_001.remove_rows(0, 1)
    files = inspect_training_files([path])
    stream = DL1ImageStream(files, str(files[0].subarray.telescope_types[0]), GammaPhysNetImageSelection(),
                            chunk_size=10_000)
    with tables.open_file(path) as h5:
        assert stream._read_direct(h5, *stream.work_units[0]) is None
    with pytest.raises(ValueError, match=r"damaged\.dl1\.h5: subarray events 0-\d+ cannot be read.*line up"):
        _chunks(stream)
