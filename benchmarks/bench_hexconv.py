"""Hexagonal convolution: masked 3×3 ``HexConv2d`` on the axial grid vs a gather-based indexed
convolution with identical math (as the ``indexedconv`` package did), on the real LSTCam.

The indexed convolution keeps images as ``(B, C, n_pixels)``: a neighbour table ``(n_pixels, 7)``
built from the camera geometry gathers each pixel's 7 taps, and one matrix product applies the
kernel. Both layers get the same weights; their outputs are checked equal (1e-5) before timing.

Run: ``python benchmarks/bench_hexconv.py [--threads 2] [--batch 64] [--device cpu]``
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from ctapipe_io_lst import LSTEventSource

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.nn.layers import HexConv2d


def neighbour_table(geometry, grid):
    """``(n_pixels, 7)`` pixel indices of each pixel's kernel taps, in the order of
    ``grid.kernel_mask``'s non-zero taps; a missing neighbour points at index ``n_pixels``
    (a zero column appended to the input). Directions come from the pixel positions."""
    taps = [(r - 1, q - 1) for r in range(3) for q in range(3) if grid.kernel_mask[r, q]]
    table = np.full((geometry.n_pixels, len(taps)), geometry.n_pixels)
    table[:, taps.index((0, 0))] = np.arange(geometry.n_pixels)
    positions = np.column_stack([geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")])
    angles = np.array([grid.rotation, grid.rotation + np.pi / 3])  # axial steps in q and r
    to_steps = np.linalg.inv(np.array([np.cos(angles), np.sin(angles)]))
    for pixel, neighbors in enumerate(geometry.neighbors):
        for neighbor in neighbors:
            dq, dr = np.rint(to_steps @ (positions[neighbor] - positions[pixel]) / grid.spacing)
            table[pixel, taps.index((int(dr), int(dq)))] = neighbor
    return torch.from_numpy(table), taps


class IndexedConv(torch.nn.Module):
    """Convolution on the pixels by gathering neighbours through an index table."""

    def __init__(self, table, weight):
        super().__init__()
        self.register_buffer("table", table)
        self.weight = torch.nn.Parameter(weight)  # (C_out, C_in * n_taps)

    def forward(self, x):
        batch, channels, _ = x.shape
        padded = F.pad(x, (0, 1))  # the zero column for missing neighbours
        gathered = padded[:, :, self.table]  # (B, C_in, n_pixels, n_taps)
        columns = gathered.permute(0, 1, 3, 2).reshape(batch, -1, self.table.shape[0])
        return torch.matmul(self.weight, columns)


def indexed_weight(hexconv, taps):
    """HexConv2d weights rearranged to (C_out, C_in × taps) in the table's tap order."""
    weight = hexconv.weight.detach()
    return torch.stack([weight[:, :, 1 + dr, 1 + dq] for dr, dq in taps], dim=2).flatten(1)


def _seconds(step):
    start = time.perf_counter()
    step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughputs(steps, batch, repeats):
    """Images/s of each step; the steps take turns so that load changes on a shared machine
    affect them alike."""
    for step in steps:
        step()  # warm-up (allocations, oneDNN primitive selection)
    timings = np.array([[_seconds(step) for step in steps] for _ in range(repeats)])
    return batch / np.median(timings, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    geometry = LSTEventSource.create_subarray(tel_id=1).tel[1].camera.geometry
    grid = CameraGrid.from_geometry(geometry)
    table, taps = neighbour_table(geometry, grid)
    print(f"{grid}, {args.batch} images per batch, {args.threads} threads, device {device}")
    print(f"{'channels':>9} {'pass':>17} {'HexConv2d [img/s]':>18} {'indexed [img/s]':>16} "
          f"{'speed-up':>9}")

    for channels in (16, 32):
        torch.manual_seed(0)
        hexconv = HexConv2d(channels, channels).to(device)
        indexed = IndexedConv(table, indexed_weight(hexconv, taps)).to(device)
        pixels = torch.randn(args.batch, channels, geometry.n_pixels, device=device)
        on_grid = torch.from_numpy(grid.pixels_to_grid(pixels.cpu().numpy())).to(device)
        pixels.requires_grad_(True)
        on_grid.requires_grad_(True)

        with torch.no_grad():
            from_grid = hexconv(on_grid).flatten(2)[:, :, torch.from_numpy(grid.flat_index)]
            difference = (from_grid - indexed(pixels)).abs().max().item()
        assert difference < 1e-5, f"outputs differ by {difference}"

        def forward(layer, x):
            def step():
                with torch.no_grad():
                    layer(x)
            return step

        def forward_backward(layer, x):
            def step():
                layer(x).square().mean().backward()
            return step

        for name, make in (("forward", forward), ("forward+backward", forward_backward)):
            hex_rate, indexed_rate = throughputs(
                [make(hexconv, on_grid), make(indexed, pixels)], args.batch, args.repeats)
            print(f"{channels:>4}→{channels:<4} {name:>17} {hex_rate:>18.0f} "
                  f"{indexed_rate:>16.0f} {hex_rate / indexed_rate:>8.1f}×")
    print("(outputs checked equal to 1e-5; goal: HexConv2d ≥ 5× faster)")


if __name__ == "__main__":
    main()
