"""Lossless map between a camera's pixels and a 2-D grid.

Hexagonal pixel centres lie on a lattice spanned by two vectors 60° apart. Written in those
"axial" coordinates (q, r) every pixel lands on its own integer cell, so an image becomes a 2-D
array without interpolation, and the six neighbours of a pixel are six fixed cells of the 3×3
neighbourhood: a hexagonal convolution is a 3×3 convolution with two opposite corners masked.
Square-pixel cameras map onto a Cartesian grid and keep all nine taps.

The same :class:`CameraGrid` serves training and inference (and Grad-CAM maps on the way back).
"""
import hashlib
import json

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["CameraGrid", "hexagonal_kernel_mask", "CameraGridError"]

# A lattice point must lie this close (in units of the pixel spacing) to an integer cell.
LATTICE_TOLERANCE = 0.1
# Two geometries are the same camera if every pixel agrees to this (metres).
POSITION_TOLERANCE_M = 1e-3


class CameraGridError(ValueError):
    """The camera geometry cannot be mapped onto a grid."""


def hexagonal_kernel_mask(hexagonal=True):
    """3×3 tap mask: 7 taps on an axial hexagonal grid, 9 on a square grid.

    A tap ``[1 + dr, 1 + dq]`` reads the input cell ``(r + dr, q + dq)`` (cross-correlation, as
    ``torch.nn.functional.conv2d``). The hexagonal neighbours of ``(q, r)`` are ``(q ± 1, r)``,
    ``(q, r ± 1)``, ``(q + 1, r - 1)`` and ``(q - 1, r + 1)``, so only the corners
    ``(dr, dq) = (-1, -1)`` and ``(+1, +1)`` are not neighbours.
    """
    mask = np.ones((3, 3), dtype=np.float32)
    if hexagonal:
        mask[0, 0] = 0.0
        mask[2, 2] = 0.0
    return mask


def _lattice_orientation(pix_x, pix_y, symmetry):
    """Spacing and orientation of a lattice with ``symmetry``-fold rotational symmetry."""
    positions = np.column_stack([pix_x, pix_y])
    distance, index = cKDTree(positions).query(positions, k=2)
    spacing = np.median(distance[:, 1])
    delta = positions[index[:, 1]] - positions
    angle = np.arctan2(delta[:, 1], delta[:, 0])
    # circular mean of the angle modulo the lattice symmetry (60° or 90°)
    rotation = np.angle(np.mean(np.exp(1j * symmetry * angle))) / symmetry
    return spacing, rotation


class CameraGrid:
    """Pixel ↔ grid map of one camera.

    Parameters
    ----------
    pix_x, pix_y : array-like
        Pixel centres in metres (``CameraGeometry.pix_x/pix_y`` in the ``CameraFrame``).
    hexagonal : bool
        Hexagonal (axial grid, 7-tap kernels) or square pixels (Cartesian grid, 9 taps).
    camera_name : str
        Only for messages and metadata.
    """

    def __init__(self, pix_x, pix_y, hexagonal=True, camera_name="camera"):
        self.pix_x = np.asarray(pix_x, dtype=np.float64)
        self.pix_y = np.asarray(pix_y, dtype=np.float64)
        self.hexagonal = bool(hexagonal)
        self.camera_name = camera_name
        self.n_pixels = len(self.pix_x)
        if self.n_pixels < 7:
            raise CameraGridError(f"{camera_name}: too few pixels ({self.n_pixels}) for a grid")

        symmetry = 6 if self.hexagonal else 4
        self.spacing, self.rotation = _lattice_orientation(self.pix_x, self.pix_y, symmetry)

        # the lattice need not contain the camera centre: measure from the first pixel
        dx, dy = self.pix_x - self.pix_x[0], self.pix_y - self.pix_y[0]
        cos, sin = np.cos(-self.rotation), np.sin(-self.rotation)
        x = (cos * dx - sin * dy) / self.spacing
        y = (sin * dx + cos * dy) / self.spacing
        if self.hexagonal:
            # lattice vectors (1, 0) and (1/2, √3/2)
            r = y / (np.sqrt(3) / 2)
            q = x - r / 2
        else:
            q, r = x, y
        q_int, r_int = np.rint(q).astype(int), np.rint(r).astype(int)
        off_lattice = np.hypot(q - q_int, r - r_int) > LATTICE_TOLERANCE
        if np.any(off_lattice):
            raise CameraGridError(
                f"{camera_name}: {off_lattice.sum()} pixels are not on a regular "
                f"{'hexagonal' if self.hexagonal else 'square'} lattice"
            )

        self.rows = r_int - r_int.min()
        self.cols = q_int - q_int.min()
        self.shape = (int(self.rows.max()) + 1, int(self.cols.max()) + 1)
        flat = self.rows * self.shape[1] + self.cols
        if len(np.unique(flat)) != self.n_pixels:
            raise CameraGridError(f"{camera_name}: two pixels fall on the same grid cell")
        #: index of each pixel in the flattened grid, in the camera's pixel order
        self.flat_index = flat
        self.mask = np.zeros(self.shape, dtype=bool)
        self.mask[self.rows, self.cols] = True

    @classmethod
    def from_geometry(cls, geometry):
        """Grid of a ctapipe ``CameraGeometry`` (in the ``CameraFrame``)."""
        shape = geometry.pix_type.name.lower()
        if shape not in ("hexagon", "square"):
            raise CameraGridError(
                f"{geometry.name}: pixel shape {geometry.pix_type.name} cannot be mapped to a grid"
            )
        return cls(
            geometry.pix_x.to_value("m"),
            geometry.pix_y.to_value("m"),
            hexagonal=shape == "hexagon",
            camera_name=geometry.name,
        )

    @property
    def kernel_mask(self):
        """The 3×3 tap mask of convolutions on this grid."""
        return hexagonal_kernel_mask(self.hexagonal)

    def pixels_to_grid(self, values, fill=0.0):
        """``(..., n_pixels)`` → ``(..., rows, cols)``; cells outside the camera get ``fill``."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_pixels:
            raise ValueError(
                f"{self.camera_name}: expected {self.n_pixels} pixels, got {values.shape[-1]}"
            )
        grid = np.full(values.shape[:-1] + (self.shape[0] * self.shape[1],), fill, values.dtype)
        grid[..., self.flat_index] = values
        return grid.reshape(values.shape[:-1] + self.shape)

    def grid_to_pixels(self, grid):
        """``(..., rows, cols)`` → ``(..., n_pixels)``, the exact inverse of ``pixels_to_grid``."""
        grid = np.asarray(grid)
        if grid.shape[-2:] != self.shape:
            raise ValueError(f"{self.camera_name}: expected a grid {self.shape}, got {grid.shape}")
        return grid.reshape(grid.shape[:-2] + (-1,))[..., self.flat_index]

    def coarse_cells(self, n_downsamplings):
        """Cell of each pixel in a grid down-sampled ``n`` times by stride-2 convolutions.

        A stride-2 convolution with padding 1 maps a grid of ``n`` cells to ``ceil(n / 2)`` and
        centres output cell ``i`` on input cell ``2 i``; the cells with even (r, q) form a hexagonal
        lattice of twice the spacing, so the coarse grids stay hexagonal. At each level a cell
        takes the coarse cell whose centre is nearest on the lattice (for an odd/odd axial cell
        these are ``(r - 1, q + 1)`` or ``(r + 1, q - 1)``, not ``(r ± 1, q ± 1)``).
        """
        rows, cols = self.rows.copy(), self.cols.copy()
        shape = self.shape
        for _ in range(n_downsamplings):
            shape = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
            best_distance = np.full(rows.shape, np.inf)
            best_rows, best_cols = rows // 2, cols // 2
            for dr in (0, 1):
                for dq in (0, 1):
                    r = np.minimum(rows // 2 + dr, shape[0] - 1)
                    q = np.minimum(cols // 2 + dq, shape[1] - 1)
                    a, b = 2 * r - rows, 2 * q - cols
                    # squared distance in lattice units; axial basis vectors are 60° apart
                    distance = a**2 + b**2 + (a * b if self.hexagonal else 0)
                    closer = distance < best_distance
                    best_distance = np.where(closer, distance, best_distance)
                    best_rows = np.where(closer, r, best_rows)
                    best_cols = np.where(closer, q, best_cols)
            rows, cols = best_rows, best_cols
        return rows, cols

    def coarse_to_pixels(self, grid, n_downsamplings):
        """Bring a down-sampled map ``(..., rows', cols')`` back onto the camera's pixels."""
        rows, cols = self.coarse_cells(n_downsamplings)
        grid = np.asarray(grid)
        return grid[..., rows, cols]

    def neighbor_offsets(self):
        """The (dr, dq) offsets of the kernel taps other than the centre."""
        mask = self.kernel_mask
        return [(a - 1, b - 1) for a in range(3) for b in range(3) if mask[a, b] and (a, b) != (1, 1)]

    def fingerprint(self):
        """Short hash of the pixel layout: each pixel's grid cell, in pixel order, and the pitch.

        Built from the lattice, not from rounded positions: the same camera described by
        different sources (sim_telarray, the real LST-1) differs by µm, enough to round otherwise.
        """
        pitch = int(round(self.spacing / POSITION_TOLERANCE_M))
        payload = json.dumps([self.hexagonal, list(self.shape), self.flat_index.tolist(), pitch])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def matches(self, geometry):
        """True if a ``CameraGeometry`` has this grid's pixels, in the same order."""
        if geometry.n_pixels != self.n_pixels:
            return False
        dx = geometry.pix_x.to_value("m") - self.pix_x
        dy = geometry.pix_y.to_value("m") - self.pix_y
        return bool(np.all(np.hypot(dx, dy) < POSITION_TOLERANCE_M))

    def __repr__(self):
        kind = "hexagonal" if self.hexagonal else "square"
        return f"CameraGrid({self.camera_name}: {self.n_pixels} {kind} pixels on {self.shape})"
