"""How much γ-PhysNet's outputs depend on the pixels without Cherenkov light.

For every image of the given DL1 files (written with images, e.g. ``ctapipe-process
--write-images`` of the shared sim_telarray files, or ``ctapipe-simulate-showers`` output) that
passes the training cuts, the pixels outside the cleaned image — ctapipe's ``tailcuts_clean`` at
the cleaned input representation's thresholds (6/3 p.e., 2 picture neighbours), dilated by one
ring, options below — are resampled from the noise of the same file: each gets the charge and peak
time of a random pixel outside the cleaned image of another image. The benchmark prints, per model file, the median and
the 95 % quantile of the change of each output: gammaness, log10(E), direction (deg) and impact
(m). A network that only sees the cleaned image changes only where the resampled noise changes
the cleaning; one that sees every pixel changes everywhere.

Run: ``python benchmarks/bench_robustness.py --model A.safetensors [--model B.safetensors ...]
FILE.dl1.h5 [FILE ...] [--repeats 3] [--seed 0]``.
"""
import argparse
from pathlib import Path

import numpy as np
from ctapipe.image import dilate, tailcuts_clean
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.reco.engine import InferenceEngine, table_pointing

#: the training cuts of ctapipe-train-gammaphysnet
CUTS = {"hillas_intensity": (50, np.inf), "leakage_intensity_width_2": (-np.inf, 0.2),
        "hillas_width": (1e-9, np.inf)}


def cleaned_image_masks(geometry, images, picture, boundary, min_neighbors, dilation):
    """The pixels of each image kept by tailcuts cleaning, dilated ``dilation`` times."""
    masks = []
    for image in images:
        mask = tailcuts_clean(geometry, image, picture_thresh=picture, boundary_thresh=boundary,
                              min_number_picture_neighbors=min_neighbors)
        for _ in range(dilation):
            mask = dilate(geometry, mask)
        masks.append(mask)
    return np.array(masks)


def read_images(paths, cleaning):
    """(subarray, image, peak_time, cleaned-image mask, pointing zenith) per camera geometry, over
    all files."""
    by_camera = {}
    for path in paths:
        with TableLoader(path, dl1_images=True, dl1_parameters=True, instrument=True, pointing=True) as loader:
            subarray = loader.subarray
            tables = loader.read_telescope_events_by_type()
        for table in tables.values():
            keep = np.ones(len(table), dtype=bool)
            for column, (low, high) in CUTS.items():
                values = np.asarray(table[column])
                keep &= (values >= low) & (values <= high)
            if not keep.any():
                continue
            geometry = subarray.tel[int(table["tel_id"][0])].camera.geometry
            entry = by_camera.setdefault(geometry.n_pixels, [subarray, [], [], [], []])
            image = np.asarray(table["image"][keep], dtype=np.float32)
            entry[1].append(image)
            entry[2].append(np.asarray(table["peak_time"][keep], dtype=np.float32))
            entry[3].append(cleaned_image_masks(geometry, image, *cleaning))
            entry[4].append(90.0 - table_pointing(table)[0][keep])
    return {n: (s, *(np.concatenate(values) for values in arrays))
            for n, (s, *arrays) in by_camera.items()}


def resample_noise(image, peak_time, mask, rng):
    """Images whose pixels outside ``mask`` carry the charge and time of random pixels outside
    the mask of other images."""
    noise_rows, noise_pixels = np.nonzero(~mask)
    resampled_image, resampled_time = image.copy(), peak_time.copy()
    for row in range(len(image)):
        outside = np.flatnonzero(~mask[row])
        pick = rng.integers(len(noise_rows), size=len(outside))
        # another image's noise: shift draws that fell on the same image
        pick = np.where(noise_rows[pick] == row, (pick + len(outside)) % len(noise_rows), pick)
        resampled_image[row, outside] = image[noise_rows[pick], noise_pixels[pick]]
        resampled_time[row, outside] = peak_time[noise_rows[pick], noise_pixels[pick]]
    return resampled_image, resampled_time


def changes(before, after):
    """|change| of each output per image."""
    direction = np.hypot(after["fov_lon"] - before["fov_lon"], after["fov_lat"] - before["fov_lat"])
    impact = 1e3 * np.hypot(after["impact_x"] - before["impact_x"], after["impact_y"] - before["impact_y"])
    return {"gammaness": np.abs(after["gammaness"] - before["gammaness"]),
            "log10(E)": np.abs(after["log_energy"] - before["log_energy"]),
            "direction (deg)": direction, "impact (m)": impact}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="DL1 files with images")
    parser.add_argument("--model", action="append", required=True, type=Path,
                        help="γ-PhysNet model file (repeat to compare)")
    parser.add_argument("--repeats", type=int, default=3, help="resamplings per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cleaning", type=float, nargs=4, default=[6, 3, 2, 1],
                        metavar=("PICTURE", "BOUNDARY", "NEIGHBORS", "DILATION"),
                        help="tailcuts thresholds (p.e.), minimum picture neighbours, dilation rings")
    args = parser.parse_args()

    picture, boundary, neighbors, dilation = args.cleaning
    cameras = read_images(args.files, (picture, boundary, int(neighbors), int(dilation)))
    print(f"{'model':<40} {'camera':>8} {'images':>7}  output: median / 95 % of |change|")
    for model in args.model:
        for n_pixels, (subarray, image, peak_time, mask, zenith) in cameras.items():
            engine = InferenceEngine([model], subarray)
            geometry = next(t.camera.geometry for t in subarray.tel.values()
                            if t.camera.geometry.n_pixels == n_pixels)
            group = engine.group_for_geometry(geometry)
            if group is None:
                continue
            before = engine.predict(group, image, peak_time, zenith)
            rng = np.random.default_rng(args.seed)
            deltas = {}
            for _ in range(args.repeats):
                after = engine.predict(group, *resample_noise(image, peak_time, mask, rng), zenith)
                for name, values in changes(before, after).items():
                    deltas.setdefault(name, []).append(values)
            summary = "  ".join(
                f"{name} {np.median(np.concatenate(v)):.3g} / {np.quantile(np.concatenate(v), 0.95):.3g}"
                for name, v in deltas.items())
            print(f"{model.name:<40} {n_pixels:>8} {len(image):>7}  {summary}")


if __name__ == "__main__":
    main()
