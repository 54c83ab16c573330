"""Training throughput of γ-PhysNet presets: images/s of forward + backward + AdamW step on
random LSTCam-sized input (the real LST-1 camera grid), uncertainty-weighted multi-task loss.

Run: ``python benchmarks/bench_training.py [--presets small paper] [--threads 2] [--batch 64]
[--compile]``; with ``--compile`` every preset is also measured through ``torch.compile`` (as
``ctapipe-train-gammaphysnet --compile`` trains), alternating with the eager steps so that the ratio
comes from the same machine load; the one-off compilation time is printed apart.
"""
import argparse
import time

import numpy as np
import torch
from ctapipe_io_lst import LSTEventSource

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.nn.losses import MultiTaskLoss
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet, count_parameters


def random_batch(n_pixels, batch, generator, device):
    """Images, peak times and targets with the value ranges of real DL1 data."""
    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    image = rand(batch, n_pixels) ** 8 * 500  # mostly faint pixels, a few bright ones
    peak_time = 10 + 20 * rand(batch, n_pixels)
    targets = {
        "label": (rand(batch) > 0.5).long(),
        "log_energy": 2 * rand(batch) - 1,
        "direction": rand(batch, 2) - 0.5,
        "impact": 0.3 * rand(batch, 2),
    }
    return image, peak_time, targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=list(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    geometry = LSTEventSource.create_subarray(tel_id=1).tel[1].camera.geometry
    grid = CameraGrid.from_geometry(geometry)
    print(f"{grid}, batch {args.batch}, {args.threads} threads, device {device}")
    print(f"{'preset':>7} {'mode':>8} {'parameters':>11} {'GFLOP/image':>12} {'train [img/s]':>14} "
          f"{'ms/batch':>9}")
    for name in args.presets:
        torch.manual_seed(0)
        network = GammaPhysNet(grid, PRESETS[name]).to(device)
        flops = network.n_flops()
        loss = MultiTaskLoss("uncertainty").to(device)
        optimizer = torch.optim.AdamW(
            list(network.parameters()) + list(loss.parameters()), lr=1e-3, weight_decay=1e-4)
        network.train()
        generator = torch.Generator().manual_seed(1)
        modes = {"eager": network}
        if args.compile:
            modes["compiled"] = torch.compile(network)

        def step(model):
            image, peak_time, targets = random_batch(grid.n_pixels, args.batch, generator, device)
            optimizer.zero_grad(set_to_none=True)
            total, _ = loss(model(image, peak_time), targets)
            total.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        for mode, model in modes.items():  # warm-up (and compilation)
            start = time.perf_counter()
            step(model)
            if mode == "compiled":
                print(f"{name:>7} compiled in {time.perf_counter() - start:.0f} s")
        timings = {mode: [] for mode in modes}
        for _ in range(args.steps):
            for mode, model in modes.items():
                start = time.perf_counter()
                step(model)
                timings[mode].append(time.perf_counter() - start)
        for mode, values in timings.items():
            seconds = float(np.median(values))
            print(f"{name:>7} {mode:>8} {count_parameters(network):>11,} {flops / 1e9:>12.3f} "
                  f"{args.batch / seconds:>14.1f} {1e3 * seconds:>9.0f}")


if __name__ == "__main__":
    main()
