"""Throughput and memory of ``ctapipe-simulate-showers`` (LST-1, images + DL1 parameters written).

Prints, per configuration, triggered images written per second of wall clock (whole command,
start-up included), the sustained rate (wall clock and images of a tiny run, i.e. the start-up,
subtracted: what a long run reaches; on an idle machine) and the rate per CPU second (all
processes; on a shared machine the CPU figure times the number of cores is the throughput of
dedicated cores), and the peak resident memory of runs with 1k and 20k showers (streaming writes:
it should not grow with the number of showers).

Both camera models are measured alternately (``--camera``): the waveform read-out with ctapipe's
CameraCalibrator (the default) and the direct model (``CameraSimulator.waveforms = False``, not for
training), so that their figures come from the same machine load.

Run: ``python benchmarks/bench_simulation.py [--workers 2] [--memory-showers 1000 20000] [--repeat 3]``;
``--baseline DIR`` also runs every throughput configuration with the package found in ``DIR`` (e.g.
an older checkout, ``git archive <rev> ctapipe_gammaphysnet | tar -x -C DIR``), alternating with
the current code, so that before/after figures come from the same machine load; with ``--repeat``
the alternation is repeated and the best and median runs are printed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tables

# one run in a fresh interpreter, reporting its own peak memory (children included)
_RUNNER = """
import json, resource, sys
from ctapipe_gammaphysnet.simulation import simulate_to_file
kwargs = json.loads(sys.argv[1])
simulate_to_file(**kwargs)
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({
    "peak_rss_mb": max(u.ru_maxrss for u in usage) / 1024,
    "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage),
}))
"""

CONFIGURATIONS = {
    # CTA-production-like defaults: E^-2 from 10 GeV, 500 m scatter radius, most showers too faint
    "gamma, defaults": dict(particle="gamma"),
    # a training sample: fewer sub-threshold showers
    "gamma-diffuse, 50 GeV-50 TeV, 300 m": dict(
        particle="gamma-diffuse", energy_min=0.05, energy_max=50.0, max_impact=300.0, view_cone=2.5
    ),
    "proton, 150 GeV-100 TeV, 350 m, 2.5 deg": dict(
        particle="proton", energy_min=0.15, energy_max=100.0, max_impact=350.0, view_cone=2.5
    ),
}


CAMERA_MODELS = {"waveforms": {}, "direct": {"waveforms": False}}


def run(output, n_showers, n_workers, options, package_dir=None):
    kwargs = dict(output=str(output), n_showers=n_showers, n_workers=n_workers, seed=1, overwrite=True, **options)
    env = dict(os.environ)
    if package_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package_dir), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    # run in the output's directory: with ``-c`` the working directory comes first on sys.path and
    # would shadow the package under test
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(kwargs)], check=True, capture_output=True, text=True,
        env=env, cwd=Path(output).parent,
    )
    wall = time.perf_counter() - start
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    with tables.open_file(output) as h5:
        parameters = "/dl1/event/telescope/parameters/tel_001"
        n_images = h5.get_node(parameters).nrows if parameters in h5 else 0
    return wall, usage["cpu_s"], n_images, usage["peak_rss_mb"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--showers", type=int, default=4000, help="showers per throughput run")
    parser.add_argument(
        "--memory-showers", type=int, nargs="*", default=[1000, 20000], help="none: skip the memory runs"
    )
    parser.add_argument(
        "--configurations", nargs="*", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS)
    )
    parser.add_argument(
        "--camera", nargs="*", choices=list(CAMERA_MODELS), default=list(CAMERA_MODELS),
        help="camera models to measure (memory: the first one)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="alternate the versions this many times per configuration; the best run counts (the "
        "one least disturbed by other jobs on a shared machine), the median is printed as well",
    )
    parser.add_argument(
        "--baseline", type=Path, default=None,
        help="directory holding another version of the package, measured side by side",
    )
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "ctapipe_gammaphysnet").is_dir():
        parser.error(f"--baseline {args.baseline}: no ctapipe_gammaphysnet package in it")
    # name → (package directory, camera-model options); an older package has no camera model option
    versions = {} if args.baseline is None else {"baseline": (args.baseline, {})}
    for camera in args.camera:
        versions[f"current {camera}"] = (None, CAMERA_MODELS[camera])

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "bench.dl1.h5"
        print(f"throughput, {args.workers} worker(s), {args.showers} showers per run")
        for name in args.configurations:
            options = CONFIGURATIONS[name]
            rates = {version: [] for version in versions}
            for _ in range(args.repeat):
                for version, (package_dir, camera) in versions.items():
                    run_options = {**options, **camera}
                    # a tiny run measures the start-up (imports, worker start, file set-up) to subtract
                    wall_startup, cpu_startup, images_startup, _ = run(output, 20, args.workers, run_options,
                                                                       package_dir)
                    wall, cpu, n_images, _ = run(output, args.showers, args.workers, run_options, package_dir)
                    steady = (n_images - images_startup) / (cpu - cpu_startup)
                    sustained = (n_images - images_startup) / (wall - wall_startup)
                    rates[version].append(steady)
                    print(
                        f"  {name:42s} {version:17s} {n_images:5d} images: {n_images / wall:6.1f} images/s "
                        f"wall (start-up included), {sustained:6.1f} sustained; {steady:6.1f} images per "
                        f"CPU-s after start-up → {args.workers * steady:6.1f} images/s on {args.workers} "
                        f"dedicated cores"
                    )
            if args.repeat > 1:
                for version, steady in rates.items():
                    print(
                        f"  {name:42s} {version:17s} best of {args.repeat}: {args.workers * max(steady):6.1f}, "
                        f"median {args.workers * float(np.median(steady)):6.1f} images/s on "
                        f"{args.workers} dedicated cores"
                    )
        print(f"peak memory (one process, gamma-diffuse training sample, {args.camera[0]} camera model)")
        for n_showers in args.memory_showers:
            wall, cpu, n_images, peak = run(
                output, n_showers, 1,
                {**CONFIGURATIONS["gamma-diffuse, 50 GeV-50 TeV, 300 m"], **CAMERA_MODELS[args.camera[0]]},
            )
            print(f"  {n_showers:6d} showers: {peak:7.1f} MB peak RSS ({n_images} images, {wall:.1f} s)")


if __name__ == "__main__":
    main()
