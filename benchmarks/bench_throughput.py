"""Throughput side by side: the DL1 loader, training and batched inference of γ-PhysNet.

- loader: images/s that ``DL1ImageStream`` (the training reader) gets out of a DL1 HDF5 file as
  ctapipe writes it (blosc:zstd level 5, fletcher32), through a DataLoader with N workers, with
  its direct table-by-table reader and with ctapipe's ``TableLoader`` (the reference) side by side;
- training: images/s of forward + backward + AdamW step (small and paper presets; bfloat16
  autocast on CUDA) on real images of that file;
- inference: batched images/s of the plain network, of ``optimize_for_inference`` and of the
  exported ONNX model on ONNX Runtime, with GFLOP/s and the fraction of the machine's peak,
  measured here with a large float32 matmul.

Run: ``python benchmarks/bench_throughput.py [--input FILE.dl1.h5] [--workers 0 1 2]
[--threads 2] [--device auto]``. Without ``--input`` a DL1 file of ~1500 LST-1 gamma images is
simulated once into ``benchmark_output/`` (ctapipe-simulate-showers, about a minute).
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import tables
import torch

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
from ctapipe_gammaphysnet.nn.inference import optimize_for_inference, set_cpu_threads
from ctapipe_gammaphysnet.nn.losses import MultiTaskLoss
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet

DEFAULT_INPUT = Path("benchmark_output") / "gamma_diffuse_throughput.dl1.h5"


def simulate_input(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "ctapipe-simulate-showers"),
               f"--SimulateShowers.output_path={path}", "--SimulateShowers.n_showers=8000",
               "--ShowerSimulator.particle=gamma-diffuse", "--ShowerSimulator.seed=7",
               "--ShowerSimulator.view_cone=2.5", "--ShowerSimulator.max_impact=300",
               "--no-progress", "--log-level=WARN"]
    print(f"simulating {path} …", flush=True)
    subprocess.run(command, check=True)


def rate(function, n_images, seconds, synchronize):
    """Images per second of ``function`` (one call = ``n_images``), best of ≥ 3 timed calls.

    Returns the wall-clock rate and the rate from this process's CPU time × its threads: on a
    machine shared with other jobs the second is what the process gets when it has the cores
    to itself (on CUDA it means nothing and is not printed).
    """
    function()  # warm-up
    synchronize()
    wall, cpu, start = [], [], time.perf_counter()
    while len(wall) < 3 or time.perf_counter() - start < seconds:
        tic, cpu_tic = time.perf_counter(), time.process_time()
        function()
        synchronize()
        wall.append(time.perf_counter() - tic)
        cpu.append((time.process_time() - cpu_tic) / torch.get_num_threads())
    return n_images / min(wall), n_images / min(cpu)


def peak_gflops(device, seconds, synchronize):
    """float32 matmul GFLOP/s (wall clock, CPU time): the attainable peak of dense arithmetic."""
    n = 4096 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return [r * 2 * n ** 3 / 1e9 for r in rate(lambda: a @ b, 1, seconds, synchronize)]


def loader_rate(files, tel_type, workers, batch_size, chunk_size, use_tableloader):
    """images/s by wall clock and (0 workers: the reading is in this process) by CPU time."""
    # workers share the work by chunks: a file needs ≥ N chunks to keep N workers busy
    stream = DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), split="train",
                            validation_fraction=0.0, chunk_size=chunk_size, shuffle_buffer=4096,
                            use_tableloader=use_tableloader)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers)
    start, cpu_start = time.perf_counter(), time.process_time()
    n = sum(len(batch["label"]) for batch in loader)
    cpu = n / (time.process_time() - cpu_start) if workers == 0 else None
    return n / (time.perf_counter() - start), cpu, n


def sample_batch(files, tel_type, batch_size):
    stream = DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), split="train",
                            validation_fraction=0.0, chunk_size=2000, shuffle_buffer=0)
    batch = next(iter(torch.utils.data.DataLoader(stream, batch_size=batch_size)))
    if len(batch["label"]) < batch_size:
        repeats = -(-batch_size // len(batch["label"]))
        batch = {k: v.repeat(repeats, *[1] * (v.dim() - 1))[:batch_size] for k, v in batch.items()}
    return batch


def training_rate(network, batch, device, seconds, synchronize):
    loss_fn = MultiTaskLoss("uncertainty").to(device)
    optimizer = torch.optim.AdamW(list(network.parameters()) + list(loss_fn.parameters()), lr=1e-4)
    batch = {k: v.to(device) for k, v in batch.items()}
    network.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = network(batch["image"], batch["peak_time"])
        loss_fn(outputs, batch)[0].backward()
        optimizer.step()

    return rate(step, len(batch["label"]), seconds, synchronize)


def inference_rates(network, batch, device, seconds, synchronize, with_onnx):
    """images/s of the plain network, the optimized one and (CPU) the ONNX Runtime one."""
    image, peak_time = batch["image"].to(device), batch["peak_time"].to(device)
    network = network.to(device).eval()
    backends = {"torch": network, "torch optimized": optimize_for_inference(network)}
    if with_onnx:
        backends["onnxruntime"] = optimize_for_inference(network, "onnxruntime",
                                                         n_threads=torch.get_num_threads())
    rates = {}
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                 enabled=device.type == "cuda"):
        for name, backend in backends.items():
            rates[name] = rate(lambda: backend(image, peak_time), len(image), seconds, synchronize)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=None, help="DL1 file with images")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chunk-size", type=int, default=500, help="loader: events per chunk")
    parser.add_argument("--threads", type=int, default=2, help="torch/ORT threads (CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=list(PRESETS))
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--inference-batch", type=int, default=32,
                        help="images per inference batch: 32, the components' default, keeps a "
                             "CPU's caches busy; a GPU wants ≥ 1024")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    args = parser.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    set_cpu_threads(args.threads)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    path = args.input or DEFAULT_INPUT
    if args.input is None and not path.exists():
        simulate_input(path)
    files = inspect_training_files([path])
    tel_type = str(files[0].subarray.telescope_types[0])
    grid = CameraGrid.from_geometry(files[0].subarray.telescope_types[0].camera.geometry)
    with tables.open_file(path) as h5:
        images = next(h5.walk_nodes("/dl1/event/telescope/images", "Table"))
        filters = images.filters

    try:
        import onnxruntime
        with_onnx = device.type == "cpu"
        onnx_version = onnxruntime.__version__
    except ImportError:
        with_onnx, onnx_version = False, "not installed"
    peak_wall, peak = peak_gflops(device, args.seconds, synchronize)
    on_cpu = device.type == "cpu"
    if not on_cpu:
        peak = peak_wall
    device_name = (torch.cuda.get_device_name(device) if not on_cpu
                   else f"{platform.processor() or platform.machine()}, {args.threads} threads")
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}  device: {device} ({device_name}), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# torch {torch.__version__}, onnxruntime {onnx_version}; float32 matmul "
          f"{peak_wall:.0f} GFLOP/s wall clock" + (f", {peak:.0f} from CPU time" if on_cpu else ""))
    print(f"# input {path}: {files[0].n_subarray_events} events, {tel_type}, "
          f"compression {filters.complib} level {filters.complevel}, "
          f"shuffle={filters.shuffle}, fletcher32={filters.fletcher32}")
    print("# images/s: wall clock; 'CPU time': from this process's CPU time (the rate on idle "
          "cores); GFLOP/s and % of the matmul peak from the latter")

    print(f"\n{'stage':<42}{'images/s':>9}{'CPU time':>9}{'GFLOP/s':>9}{'% peak':>7}")
    # one untimed pass: imports and the first reads of the file weigh on neither reader
    loader_rate(files, tel_type, 0, args.train_batch, args.chunk_size, use_tableloader=False)
    for workers in args.workers:
        for reader, use_tableloader in (("TableLoader", True), ("direct", False)):
            wall, cpu, n = loader_rate(files, tel_type, workers, args.train_batch, args.chunk_size,
                                       use_tableloader)
            cpu_column = f"{cpu:>9.0f}" if cpu else ""
            print(f"{f'loader {reader}, {workers} workers ({n} images)':<42}{wall:>9.0f}"
                  f"{cpu_column}", flush=True)

    train_batch = sample_batch(files, tel_type, args.train_batch)
    inference_batch = sample_batch(files, tel_type, args.inference_batch)
    for name in args.presets:
        torch.manual_seed(0)
        network = GammaPhysNet(grid, PRESETS[name]).to(device)
        gflop = network.n_flops() / 1e9

        def line(label, rates, factor=1):
            wall, cpu = rates
            best = cpu if on_cpu else wall
            # training ≈ 3 × the forward pass (forward, gradients of inputs and of weights)
            gflops = best * gflop * factor
            cpu_column = f"{cpu:>9.0f}" if on_cpu else f"{'':>9}"
            print(f"{label:<42}{wall:>9.0f}{cpu_column}{gflops:>9.1f}{100 * gflops / peak:>7.1f}",
                  flush=True)

        print(f"# {name}: {gflop:.3f} GFLOP per image (forward)")
        line(f"train {name} (batch {args.train_batch})",
             training_rate(network, train_batch, device, args.seconds, synchronize), factor=3)
        rates = inference_rates(network, inference_batch, device, args.seconds, synchronize,
                                with_onnx)
        for backend, backend_rates in rates.items():
            line(f"infer {name} {backend} (batch {args.inference_batch})", backend_rates)


if __name__ == "__main__":
    main()
