"""Run many showers, optionally in worker processes, yielding triggered events in shower order.

Workers simulate *and* compute the DL1 image parameters (ctapipe's `ImageProcessor`), so the
parent only writes. At most ``2 × n_workers`` chunks are in flight, which keeps memory flat.
`write_dl1` writes them with ctapipe's `DataWriter`: what ``ctapipe-process --write-images``
writes.
"""
import copy
import gc
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from ctapipe import fitting
from ctapipe.image import ImageProcessor
from ctapipe.io import DataWriter

from .simulator import ShowerSimulator, SimulatedRun

__all__ = ["simulate_events", "write_dl1", "observations"]

_worker = {}


def _start_worker(subarray, config):
    _worker["simulator"] = ShowerSimulator(subarray, config=config)
    _worker["image_processor"] = ImageProcessor(subarray=subarray, config=config)
    # long-lived set-up objects out of the garbage collector's way (see `simulate_events`); workers
    # that were not forked do not inherit the parent's frozen heap
    gc.freeze()


def _restart_fit_random_state(seed, index):
    """ctapipe's timing fit (least-trimmed squares) draws from one module-level generator; restart
    it per shower so that the parameters do not depend on what ran before in the process."""
    fit_rng = getattr(fitting, "FIT_RNG", None)
    if fit_rng is not None:
        fit_rng.bit_generator.state = np.random.default_rng([seed, index, 1]).bit_generator.state


def _simulate_chunk(indices, obs_id):
    simulator, image_processor = _worker["simulator"], _worker["image_processor"]
    events = []
    for index in indices:
        event = simulator.simulate_event(index, obs_id=obs_id)
        if event is not None:
            _restart_fit_random_state(simulator.seed, index)
            image_processor(event)
            events.append(event)
    return len(indices), events


def simulate_events(subarray, config, n_showers, n_workers=1, obs_id=1, chunk_size=50, first_index=0):
    """Yield ``(n_showers_done, events)`` per chunk of showers, in shower order; the showers are
    those of index ``first_index`` on (each index its own random numbers)."""
    # Every event is many small objects (containers, quantities); the garbage collector's full
    # passes would walk the whole heap of ctapipe and astropy each time. Freezing what exists now
    # (inherited by forked workers) keeps those passes short; it is undone at the end.
    gc.freeze()
    try:
        yield from _simulate_events(subarray, config, n_showers, n_workers, obs_id, chunk_size, first_index)
    finally:
        gc.unfreeze()


def _simulate_events(subarray, config, n_showers, n_workers, obs_id, chunk_size, first_index):
    end = first_index + n_showers
    chunks = [range(i, min(i + chunk_size, end)) for i in range(first_index, end, chunk_size)]
    if n_workers <= 1:
        _start_worker(subarray, config)
        for chunk in chunks:
            yield _simulate_chunk(chunk, obs_id)
        return

    with ProcessPoolExecutor(
        max_workers=n_workers, initializer=_start_worker, initargs=(subarray, config)
    ) as pool:
        pending = deque()
        remaining = iter(chunks)
        for chunk in remaining:
            pending.append(pool.submit(_simulate_chunk, chunk, obs_id))
            if len(pending) >= 2 * n_workers:
                break
        while pending:
            result = pending.popleft().result()
            next_chunk = next(remaining, None)
            if next_chunk is not None:
                pending.append(pool.submit(_simulate_chunk, next_chunk, obs_id))
            yield result


#: blosc:zstd compression level of the simulated files where the configuration sets no
#: ``DataWriter.compression_level``
COMPRESSION_LEVEL = 3


def _datawriter_options(config, parent=None):
    """DataWriter options writing images + parameters, under this ctapipe version's trait names,
    and `COMPRESSION_LEVEL` unless ``config`` sets one (for every DataWriter, or for those of
    ``parent``'s class): the charges and peak times of the pixels
    without signal are noise and hardly compress, so ctapipe's default level 5 costs a fifth of
    the simulator's CPU time for files 2 % smaller (docs/simulation.rst, "Speed and memory")."""
    names = DataWriter.class_trait_names()
    if "write_dl1_images" in names:  # ctapipe 0.28
        options = {"write_dl1_images": True, "write_dl1_parameters": True}
    else:
        options = {"write_images": True, "write_parameters": True}
    sections = [config.get("DataWriter", {})]
    if parent is not None:
        sections.append(config.get(type(parent).__name__, {}).get("DataWriter", {}))
    if not any("compression_level" in section for section in sections):
        options["compression_level"] = COMPRESSION_LEVEL
    return options


def observations(simulator, n_showers, obs_id=1, pointing_zeniths=()):
    """``[(obs_id, simulator, n_showers), …]``: one observation at ``simulator``'s pointing, or one
    per zenith angle (deg) of ``pointing_zeniths`` (obs ids from ``obs_id`` on, the showers split
    evenly, the simulators otherwise configured as ``simulator``)."""
    if not pointing_zeniths:
        return [(obs_id, simulator, n_showers)]
    result = []
    for i, zenith in enumerate(pointing_zeniths):
        config = copy.deepcopy(simulator.config)
        config.ShowerSimulator.pointing_alt = 90.0 - float(zenith)
        share = n_showers // len(pointing_zeniths) + (i < n_showers % len(pointing_zeniths))
        try:
            run_simulator = ShowerSimulator(simulator.subarray, config=config)
        except ValueError as error:
            raise ValueError(f"pointing zenith {zenith}° (altitude {90 - float(zenith)}°): {error}") from None
        result.append((obs_id + i, run_simulator, share))
    return result


def write_dl1(output_path, runs, n_workers=1, parent=None, progress=None):
    """Simulate the observations ``runs`` (`observations`) and write the triggered events to the
    DL1 file ``output_path`` (replaced if it exists); ``(n_events, n_images)``.

    The workers and the `DataWriter` are configured as the simulators are (their ``config``) and
    the writer is a child of ``parent`` when given. ``progress``: a tqdm bar, advanced per chunk.
    """
    config = parent.config if parent else runs[0][1].config
    writer = DataWriter(event_source=SimulatedRun(runs), parent=parent,
                        config=None if parent else config, output_path=output_path,
                        overwrite=True, **_datawriter_options(config, parent))
    n_events = n_images = 0
    first_index = 0
    try:
        for run_obs_id, run_simulator, run_showers in runs:
            for n_done, events in simulate_events(run_simulator.subarray, run_simulator.config,
                                                  run_showers, n_workers, run_obs_id,
                                                  first_index=first_index):
                for event in events:
                    writer(event)
                    n_images += len(event.dl1.tel)
                n_events += len(events)
                if progress is not None:
                    progress.update(n_done)
                    progress.set_postfix(triggered=n_events)
            first_index += run_showers
    except BaseException:
        # the HDF5 file closed (no "UnclosedFileWarning") without the headers of a run that did
        # not end, which DataWriter.finish would write
        writer._writer.close()
        raise
    writer.finish()
    return n_events, n_images
