"""What γ-PhysNet inference costs in ctapipe-process and in ctapipe-apply-gammaphysnet.

- per image in ctapipe-process: wall time that ``GammaPhysNetReconstructor`` +
  ``GammaPhysNetClassifier`` add to the event loop (network, containers, alt/az, stereo mean),
  divided by the LST images they reconstruct, on the events of the real sim_telarray files
  (calibrated and cleaned once beforehand, so only the γ-PhysNet stage is timed); next to it the
  plain PyTorch forward pass of the same images, event by event;
- batched: images/s of the engine that ``ctapipe-apply-gammaphysnet`` uses (``predict``, batches
  of ``--batch-size``, ensemble averaging included), next to the plain PyTorch forward pass.

Goals (issue 4, paper-size model, 2 CPU cores): ≤ 10 ms per image in ctapipe-process,
≥ 300 images/s batched.

Run: ``python benchmarks/bench_inference.py [--preset paper] [--threads 2] [--batch-size 32]
[--images 1024] [--device cpu]``. Untrained weights: the cost does not depend on their values.
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from ctapipe.calib import CameraCalibrator
from ctapipe.image import ImageProcessor
from ctapipe.io import SimTelEventSource
from ctapipe_io_lst import LSTEventSource

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.model_file import save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet
from ctapipe_gammaphysnet.reco.components import GammaPhysNetClassifier, GammaPhysNetReconstructor

SIMTEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "simtel"


def load_events(path):
    """Events of a file with DL1 images and parameters, as ctapipe-process makes them."""
    with SimTelEventSource(path) as source:
        calibrate = CameraCalibrator(source.subarray)
        process_images = ImageProcessor(source.subarray)
        events = []
        for event in source:
            calibrate(event)
            process_images(event)
            events.append(event)
    return source.subarray, events


def best_of(function, repeat):
    function()  # warm-up
    timings = []
    for _ in range(repeat):
        tic = time.perf_counter()
        function()
        timings.append(time.perf_counter() - tic)
    return min(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=1024, help="images in the batched test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--simtel-dir", type=Path, default=SIMTEL_DIR)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

    lst1 = LSTEventSource.create_subarray(tel_id=1)
    torch.manual_seed(0)
    network = GammaPhysNet(CameraGrid.from_geometry(lst1.tel[1].camera.geometry),
                           PRESETS[args.preset]).eval().to(args.device)
    tmp = tempfile.TemporaryDirectory()
    model_path = save_model_file(Path(tmp.name) / "bench.safetensors", {str(lst1.tel[1]): network}, {})

    # --- per image inside ctapipe-process
    stage_seconds = plain_seconds = 0.0
    n_images = n_events = 0
    all_images, all_times, all_zeniths = [], [], []
    files = sorted(f for f in args.simtel_dir.glob("*.simtel*") if "muons" not in f.name)
    for path in files:
        subarray, events = load_events(path)
        options = dict(model_paths=[model_path], device=args.device, batch_size=args.batch_size)
        components = [GammaPhysNetReconstructor(subarray, **options),
                      GammaPhysNetClassifier(subarray, **options)]
        engine = components[0].engine

        def run_stage():
            engine.clear_cache()
            for event in events:
                for component in components:
                    component(event)

        stage_seconds += best_of(run_stage, args.repeat)
        batches = []
        for event in events:
            ids = [t for t in event.trigger.tels_with_trigger
                   if event.dl2.tel[t].energy["GammaPhysNetEnergy"].is_valid]
            if ids:
                batches.append((np.stack([event.dl1.tel[t].image for t in ids]),
                                np.stack([event.dl1.tel[t].peak_time for t in ids]),
                                np.array([90.0 - event.monitoring.tel[t].pointing.altitude.to_value(u.deg)
                                          for t in ids])))
        n_images += sum(len(b[0]) for b in batches)
        n_events += len(events)
        all_images += [b[0] for b in batches]
        all_times += [b[1] for b in batches]
        all_zeniths += [b[2] for b in batches]

        def run_plain():
            with torch.inference_mode():
                for image, peak_time, _ in batches:
                    network(torch.from_numpy(image).to(args.device),
                            torch.from_numpy(peak_time).to(args.device))

        plain_seconds += best_of(run_plain, args.repeat)

    # --- batched, as ctapipe-apply-gammaphysnet runs it
    images, times, zeniths = (np.concatenate(a) for a in (all_images, all_times, all_zeniths))
    index = np.arange(args.images) % len(images)
    images, times, zeniths = images[index], times[index], zeniths[index]
    group = next(iter(engine.groups.values()))
    engine_seconds = best_of(lambda: engine.predict(group, images, times, zeniths), args.repeat)

    def plain_batched():
        with torch.inference_mode():
            for start in range(0, len(images), args.batch_size):
                network(torch.from_numpy(images[start:start + args.batch_size]).to(args.device),
                        torch.from_numpy(times[start:start + args.batch_size]).to(args.device))

    plain_batched_seconds = best_of(plain_batched, args.repeat)

    print(f"γ-PhysNet inference, preset {args.preset}, {torch.get_num_threads()} threads, "
          f"device {args.device}, torch {torch.__version__}")
    print(f"ctapipe-process stage: {n_images} LST images in {n_events} events of {len(files)} files")
    print(f"  {'':34s}{'ms / image':>12s}")
    print(f"  {'γ-PhysNet components (both)':34s}{1e3 * stage_seconds / n_images:12.2f}"
          "   goal ≤ 10")
    print(f"  {'plain PyTorch forward, per event':34s}{1e3 * plain_seconds / n_images:12.2f}")
    print(f"batched: {len(images)} images, batch size {args.batch_size}")
    print(f"  {'':34s}{'images / s':>12s}")
    print(f"  {'engine (ctapipe-apply-gammaphysnet)':34s}{len(images) / engine_seconds:12.1f}"
          "   goal ≥ 300")
    print(f"  {'plain PyTorch forward':34s}{len(images) / plain_batched_seconds:12.1f}")


if __name__ == "__main__":
    main()
