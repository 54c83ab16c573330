"""Peak memory of the training data stream: flat in the number of input files.

Streams every training image of 1, 2 and 8 copies of a DL1 file through ``DL1ImageStream`` (the
reader ``ctapipe-train-gammaphysnet`` uses; chunks of 500 events, shuffle buffer of 1024 images),
each in a fresh process, and prints the images read, the peak resident memory and its growth over
one file side by side. The documented bound is ``workers × (chunk images + shuffle_buffer) × 15 kB``
on top of the libraries.

    python benchmarks/bench_streaming_memory.py [--input FILE.dl1.h5]

Without ``--input`` a file is simulated once into benchmark_output/.
"""
import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

N_FILES = (1, 2, 8)

CHILD = """
import json, resource, sys
from ctapipe_gammaphysnet.io.dl1_dataset import DL1ImageStream, inspect_training_files
from ctapipe_gammaphysnet.selection import GammaPhysNetImageSelection
files = inspect_training_files(sys.argv[1:])
tel_type = str(files[0].subarray.telescope_types[0])
stream = DL1ImageStream(files, tel_type, GammaPhysNetImageSelection(), chunk_size=500, shuffle_buffer=1024)
n = sum(1 for _ in stream)
print(json.dumps({"images": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(files):
    result = subprocess.run([sys.executable, "-c", CHILD, *map(str, files)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="a DL1 file with images")
    args = parser.parse_args()
    work = Path("benchmark_output")
    work.mkdir(exist_ok=True)
    source = args.input
    if source is None:
        source = work / "stream_gamma.dl1.h5"
        if not source.exists():
            from ctapipe_gammaphysnet.simulation import simulate_to_file

            simulate_to_file(source, particle="gamma-diffuse", n_showers=3000, seed=1, n_workers=2,
                             energy_min=0.1, energy_max=30.0, max_impact=250.0, view_cone=2.0)
    copies = []
    for i in range(max(N_FILES)):
        copy = work / f"stream_copy_{i}.dl1.h5"
        if not copy.exists():
            shutil.copy(source, copy)
        copies.append(copy)

    print(f"{'files':>5} {'images':>8} {'peak RSS (MB)':>14} {'vs. 1 file':>11}")
    for n_files in N_FILES:
        figures = measure(copies[:n_files])
        if n_files == N_FILES[0]:
            one_file = figures["peak_mb"]
        growth = 100 * (figures["peak_mb"] / one_file - 1)
        print(f"{n_files:>5} {figures['images']:>8} {figures['peak_mb']:>14.0f} {growth:>+10.1f}%",
              flush=True)
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
