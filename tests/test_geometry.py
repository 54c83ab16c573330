"""CameraGrid on real cameras: lossless pixel ↔ grid map, checked against ctapipe's geometry."""
import astropy.units as u
import numpy as np
import pytest
from ctapipe.instrument import CameraGeometry, PixelShape, SubarrayDescription

from ctapipe_gammaphysnet.geometry import CameraGrid, CameraGridError, hexagonal_kernel_mask

HEXAGONAL_CAMERAS = ["LSTCam", "LSTS-design", "LSTN-design", "MSTx-NectarCam", "FlashCam"]


@pytest.fixture(scope="module")
def square_camera():
    """A square-pixel camera, 20 × 24 pixels of the same pitch in x and y."""
    half_height = 0.5 * 23 / 19
    return CameraGeometry.make_rectangular(20, 24, range_y=(-half_height, half_height))


@pytest.fixture(scope="module", params=HEXAGONAL_CAMERAS + ["square"])
def camera(request, real_cameras, square_camera):
    if request.param == "square":
        return square_camera
    return real_cameras[request.param]


def test_all_real_cameras_present(real_cameras):
    assert set(HEXAGONAL_CAMERAS) <= set(real_cameras)
    for name in HEXAGONAL_CAMERAS:
        assert real_cameras[name].pix_type == PixelShape.HEXAGON
    assert real_cameras["MSTx-NectarCam"].n_pixels == 1855
    assert real_cameras["FlashCam"].n_pixels == 1764


def test_round_trip_is_exact(camera):
    grid = CameraGrid.from_geometry(camera)
    assert grid.n_pixels == camera.n_pixels
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 2, camera.n_pixels))
    on_grid = grid.pixels_to_grid(values, fill=np.nan)
    assert on_grid.shape == (3, 2) + grid.shape
    np.testing.assert_array_equal(grid.grid_to_pixels(on_grid), values)
    # exactly one pixel per cell, and only camera cells hold values
    assert grid.mask.sum() == camera.n_pixels
    assert np.all(np.isfinite(on_grid) == grid.mask)
    assert len(np.unique(grid.flat_index)) == camera.n_pixels


def test_grid_is_compact(camera):
    """No interpolation and no wasted space: the grid is the pixels' bounding parallelogram."""
    grid = CameraGrid.from_geometry(camera)
    assert grid.rows.min() == 0 and grid.cols.min() == 0
    assert grid.shape == (grid.rows.max() + 1, grid.cols.max() + 1)
    assert grid.mask.sum() / grid.mask.size > 0.5


def _grid_offsets(grid, neighbor_lists):
    for pixel, neighbors in enumerate(neighbor_lists):
        for neighbor in neighbors:
            yield (int(grid.rows[neighbor] - grid.rows[pixel]),
                   int(grid.cols[neighbor] - grid.cols[pixel]))


@pytest.mark.parametrize("name", HEXAGONAL_CAMERAS)
def test_ctapipe_neighbors_are_the_hexagonal_taps(real_cameras, name):
    """Every neighbour in ctapipe's own list is one of the 6 kernel taps, and each pixel's
    neighbours occupy distinct taps: the axial mapping agrees with ctapipe's geometry."""
    geometry = real_cameras[name]
    grid = CameraGrid.from_geometry(geometry)
    taps = set(grid.neighbor_offsets())
    assert len(taps) == 6
    assert (-1, -1) not in taps and (1, 1) not in taps
    offsets = list(_grid_offsets(grid, geometry.neighbors))
    assert set(offsets) == taps
    for neighbors in geometry.neighbors:
        cells = {(grid.rows[n], grid.cols[n]) for n in neighbors}
        assert len(cells) == len(neighbors)
    # and conversely every occupied tap cell is a ctapipe neighbour
    n_grid_neighbors = sum(
        np.count_nonzero(np.roll(np.roll(grid.mask, -dr, 0), -dq, 1)[grid.rows, grid.cols]
                         & _inside(grid, dr, dq))
        for dr, dq in taps
    )
    assert n_grid_neighbors == len(offsets)


def _inside(grid, dr, dq):
    r, q = grid.rows + dr, grid.cols + dq
    return (r >= 0) & (r < grid.shape[0]) & (q >= 0) & (q < grid.shape[1])


def test_square_camera_uses_all_nine_taps(square_camera):
    grid = CameraGrid.from_geometry(square_camera)
    assert not grid.hexagonal
    assert grid.shape == (24, 20)
    assert grid.mask.all()
    np.testing.assert_array_equal(grid.kernel_mask, np.ones((3, 3)))
    diagonal = square_camera.calc_pixel_neighbors(diagonal=True).toarray()
    neighbor_lists = [np.flatnonzero(row) for row in diagonal]
    assert set(_grid_offsets(grid, neighbor_lists)) == set(grid.neighbor_offsets())
    assert len(grid.neighbor_offsets()) == 8


def test_kernel_mask():
    hexagonal = hexagonal_kernel_mask(True)
    assert hexagonal.sum() == 7
    assert hexagonal[0, 0] == 0 and hexagonal[2, 2] == 0
    assert hexagonal_kernel_mask(False).sum() == 9


@pytest.mark.parametrize("name", ["LSTCam", "FlashCam"])
@pytest.mark.parametrize("n_downsamplings", [0, 1, 2])
def test_coarse_cells(real_cameras, name, n_downsamplings):
    """Every pixel lands on a cell of the down-sampled grid (the size a stride-2 convolution
    gives), near its own position; coarse_to_pixels gives one value per camera pixel."""
    geometry = real_cameras[name]
    grid = CameraGrid.from_geometry(geometry)
    shape = grid.shape
    for _ in range(n_downsamplings):
        shape = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    rows, cols = grid.coarse_cells(n_downsamplings)
    assert rows.min() >= 0 and cols.min() >= 0
    assert rows.max() < shape[0] and cols.max() < shape[1]
    coarse = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    on_pixels = grid.coarse_to_pixels(coarse, n_downsamplings)
    assert on_pixels.shape == (geometry.n_pixels,)
    np.testing.assert_array_equal(on_pixels, coarse[rows, cols])
    if n_downsamplings == 0:
        np.testing.assert_array_equal(on_pixels, coarse[grid.rows, grid.cols])
    # distance (in fine cells) from each pixel to its coarse cell's centre
    scale = 2**n_downsamplings
    dr, dq = scale * rows - grid.rows, scale * cols - grid.cols
    distance = np.sqrt(dr**2 + dq**2 + dr * dq)
    assert distance.max() <= scale - 1 + 1e-9
    if n_downsamplings == 1:
        # the coarse cell is the pixel's own cell or a hexagonal neighbour: it sees the pixel
        allowed = set(grid.neighbor_offsets()) | {(0, 0)}
        assert set(zip(dr.tolist(), dq.tolist())) <= allowed
    # each coarse cell stands for about 4^n pixels
    _, per_cell = np.unique(rows * shape[1] + cols, return_counts=True)
    assert per_cell.max() <= 2 * 4**n_downsamplings
    assert 0.7 * 4**n_downsamplings < per_cell.mean() <= 4**n_downsamplings


def test_non_lattice_geometry_is_refused(real_cameras):
    lst = real_cameras["LSTCam"]
    rng = np.random.default_rng(0)
    x = lst.pix_x.to_value(u.m) + rng.normal(0, 0.01, lst.n_pixels)
    with pytest.raises(CameraGridError, match="not on a regular hexagonal lattice"):
        CameraGrid(x, lst.pix_y.to_value(u.m), hexagonal=True, camera_name="Jittered")
    with pytest.raises(CameraGridError, match="Jittered"):
        CameraGrid(x, lst.pix_y.to_value(u.m), hexagonal=True, camera_name="Jittered")

    circles = CameraGeometry(
        name="RoundPixels", pix_id=np.arange(lst.n_pixels), pix_x=lst.pix_x, pix_y=lst.pix_y,
        pix_area=lst.pix_area, pix_type=PixelShape.CIRCLE,
    )
    with pytest.raises(CameraGridError, match="RoundPixels.*CIRCLE"):
        CameraGrid.from_geometry(circles)

    x, y = lst.pix_x.to_value(u.m).copy(), lst.pix_y.to_value(u.m).copy()
    x[1], y[1] = x[0], y[0]
    with pytest.raises(CameraGridError, match="same grid cell"):
        CameraGrid(x, y, camera_name="Doubled")

    rectangular_pixels = CameraGeometry.make_rectangular(20, 24)  # pitch differs in x and y
    with pytest.raises(CameraGridError, match="not on a regular square lattice"):
        CameraGrid.from_geometry(rectangular_pixels)

    with pytest.raises(CameraGridError, match="too few pixels"):
        CameraGrid(x[:3], y[:3], camera_name="Tiny")


def test_wrong_pixel_count_is_refused(real_cameras):
    grid = CameraGrid.from_geometry(real_cameras["FlashCam"])
    with pytest.raises(ValueError, match="FlashCam: expected 1764 pixels, got 1855"):
        grid.pixels_to_grid(np.zeros(1855))
    with pytest.raises(ValueError, match="FlashCam: expected a grid"):
        grid.grid_to_pixels(np.zeros((55, 55)))


def test_matches_and_fingerprint(real_cameras):
    grids = {name: CameraGrid.from_geometry(real_cameras[name]) for name in HEXAGONAL_CAMERAS}
    lst_names = ["LSTCam", "LSTS-design", "LSTN-design"]
    # the same LST camera under three names
    for a in lst_names:
        for b in lst_names:
            assert grids[a].matches(real_cameras[b])
            assert grids[a].fingerprint() == grids[b].fingerprint()
    # NectarCam: same pixel count, same grid shape, different camera
    nectar = real_cameras["MSTx-NectarCam"]
    assert grids["MSTx-NectarCam"].shape == grids["LSTCam"].shape
    assert not grids["LSTCam"].matches(nectar)
    assert not grids["MSTx-NectarCam"].matches(real_cameras["LSTCam"])
    assert grids["MSTx-NectarCam"].fingerprint() != grids["LSTCam"].fingerprint()
    assert not grids["LSTCam"].matches(real_cameras["FlashCam"])
    assert len({g.fingerprint() for g in grids.values()}) == 3


def test_fingerprint_depends_on_pixel_order(real_cameras):
    lst = real_cameras["LSTCam"]
    grid = CameraGrid.from_geometry(lst)
    order = np.roll(np.arange(lst.n_pixels), 1)
    shuffled = CameraGrid(grid.pix_x[order], grid.pix_y[order], camera_name="LSTCam")
    assert shuffled.fingerprint() != grid.fingerprint()
    assert not shuffled.matches(lst)
    # and the same layout under another name is still the same camera
    renamed = CameraGrid(grid.pix_x, grid.pix_y, camera_name="other")
    assert renamed.fingerprint() == grid.fingerprint()


def test_geometry_read_back_from_dl1_file_matches(real_dl1_files, real_cameras):
    """The geometry a training job reads from a DL1 file maps onto the same grid."""
    subarray = SubarrayDescription.from_hdf(
        real_dl1_files["proton_run000001_za20deg_azm180deg_North_CTAO-North-Alpha_7.0.0_test"]
    )
    geometries = {t.camera.geometry.name: t.camera.geometry for t in subarray.telescope_types}
    for name in ("LSTN-design", "MSTx-NectarCam"):
        from_file = CameraGrid.from_geometry(geometries[name])
        original = CameraGrid.from_geometry(real_cameras[name])
        assert from_file.matches(real_cameras[name])
        assert from_file.fingerprint() == original.fingerprint()
        np.testing.assert_array_equal(from_file.flat_index, original.flat_index)
