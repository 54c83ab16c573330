"""Run many showers, optionally in worker processes, yielding triggered events in shower order.

Workers simulate *and* compute the DL1 image parameters (ctapipe's `ImageProcessor`), so the
parent only writes. At most ``2 × n_workers`` chunks are in flight, which keeps memory flat.
"""
import gc
from collections import deque
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from ctapipe import fitting
from ctapipe.image import ImageProcessor

from .simulator import ShowerSimulator

__all__ = ["simulate_events"]

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


def simulate_events(subarray, config, n_showers, n_workers=1, obs_id=1, chunk_size=50):
    """Yield ``(n_showers_done, events)`` per chunk of showers, in shower order."""
    # Every event is many small objects (containers, quantities); the garbage collector's full
    # passes would walk the whole heap of ctapipe and astropy each time. Freezing what exists now
    # (inherited by forked workers) keeps those passes short; it is undone at the end.
    gc.freeze()
    try:
        yield from _simulate_events(subarray, config, n_showers, n_workers, obs_id, chunk_size)
    finally:
        gc.unfreeze()


def _simulate_events(subarray, config, n_showers, n_workers, obs_id, chunk_size):
    chunks = [range(i, min(i + chunk_size, n_showers)) for i in range(0, n_showers, chunk_size)]
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
