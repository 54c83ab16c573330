"""HexConv2d on the axial grid is exactly a convolution over ctapipe's pixel neighbours."""
import numpy as np
import pytest
import torch
from ctapipe.instrument import CameraGeometry

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.nn.layers import HexConv2d

C_IN, C_OUT = 3, 5


def _lattice_basis(grid):
    """Camera-plane vectors (in pixel pitches) of one step in q (grid column) and in r (row)."""
    step_r = np.pi / 3 if grid.hexagonal else np.pi / 2
    angles = np.array([grid.rotation, grid.rotation + step_r])
    return np.array([np.cos(angles), np.sin(angles)])  # columns: e_q, e_r


def neighbour_gather_reference(geometry, neighbor_lists, grid, weight, bias, images):
    """Naive convolution on the pixels: for each pixel, the centre tap plus, for each neighbour in
    the geometry's own neighbour list, the tap of that neighbour's direction on the camera.

    ``images`` (B, C_in, n_pixels), ``weight`` (C_out, C_in, 3, 3): returns (B, C_out, n_pixels).
    """
    positions = np.column_stack([geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")])
    to_steps = np.linalg.inv(_lattice_basis(grid))
    weight = weight.astype(np.float64)
    images = images.astype(np.float64)
    out = np.einsum("oc,bcp->bop", weight[:, :, 1, 1], images)
    for pixel, neighbors in enumerate(neighbor_lists):
        for neighbor in neighbors:
            steps = to_steps @ ((positions[neighbor] - positions[pixel]) / grid.spacing)
            dq, dr = np.rint(steps).astype(int)
            assert np.allclose(steps, (dq, dr), atol=0.05), "neighbour off the lattice"
            out[:, :, pixel] += images[:, :, neighbor] @ weight[:, :, 1 + dr, 1 + dq].T
    if bias is not None:
        out += bias[None, :, None]
    return out


def _random_conv(grid, stride=1, seed=0, bias=True):
    torch.manual_seed(seed)
    conv = HexConv2d(C_IN, C_OUT, stride=stride, hexagonal=grid.hexagonal, bias=bias).double()
    with torch.no_grad():
        conv.weight.normal_()
        if bias:
            conv.bias.normal_()
    return conv


def _random_images(n_pixels, batch=2, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, C_IN, n_pixels))


def _apply(conv, grid, images):
    """Pixel images through the layer on the grid: the output grid."""
    with torch.no_grad():
        return conv(torch.from_numpy(grid.pixels_to_grid(images))).numpy()


@pytest.fixture(scope="module")
def square_camera():
    half_height = 0.5 * 11 / 9
    return CameraGeometry.make_rectangular(10, 12, range_y=(-half_height, half_height))


@pytest.mark.parametrize("name", ["LSTCam", "MSTx-NectarCam", "FlashCam"])
def test_hexconv_equals_neighbour_gather(real_cameras, name):
    geometry = real_cameras[name]
    grid = CameraGrid.from_geometry(geometry)
    conv = _random_conv(grid)
    images = _random_images(geometry.n_pixels)
    result = grid.grid_to_pixels(_apply(conv, grid, images))
    reference = neighbour_gather_reference(
        geometry, geometry.neighbors, grid, conv.weight.detach().numpy(),
        conv.bias.detach().numpy(), images,
    )
    np.testing.assert_allclose(result, reference, rtol=0, atol=1e-5)


def test_hexconv_float32_equals_neighbour_gather(real_cameras):
    """The float32 layer as used in the network agrees to 1e-5 as well."""
    geometry = real_cameras["LSTCam"]
    grid = CameraGrid.from_geometry(geometry)
    conv = _random_conv(grid, bias=False).float()
    images = _random_images(geometry.n_pixels).astype(np.float32)
    with torch.no_grad():
        out = conv(torch.from_numpy(grid.pixels_to_grid(images))).numpy()
    reference = neighbour_gather_reference(
        geometry, geometry.neighbors, grid, conv.weight.detach().numpy(), None, images,
    )
    np.testing.assert_allclose(grid.grid_to_pixels(out), reference, rtol=0, atol=1e-5)


def test_impulse_reaches_exactly_the_ctapipe_neighbours(real_cameras):
    """A single lit pixel spreads to itself and its ctapipe neighbours, nowhere else."""
    geometry = real_cameras["LSTCam"]
    grid = CameraGrid.from_geometry(geometry)
    conv = HexConv2d(1, 1, hexagonal=True)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    rng = np.random.default_rng(3)
    for pixel in rng.choice(geometry.n_pixels, 20, replace=False):
        image = np.zeros((1, 1, geometry.n_pixels), dtype=np.float32)
        image[0, 0, pixel] = 1.0
        with torch.no_grad():
            out = grid.grid_to_pixels(conv(torch.from_numpy(grid.pixels_to_grid(image))).numpy())
        assert set(np.flatnonzero(out[0, 0])) == {pixel, *geometry.neighbors[pixel]}
        # on the full grid: the 7 cells of the hexagon around the pixel (edge pixels reach
        # cells outside the camera, which the network masks)
        with torch.no_grad():
            full = conv(torch.from_numpy(grid.pixels_to_grid(image))).numpy()[0, 0]
        assert np.count_nonzero(full) == 7


def test_square_conv_equals_neighbour_gather_with_diagonals(square_camera):
    grid = CameraGrid.from_geometry(square_camera)
    conv = _random_conv(grid)
    images = _random_images(square_camera.n_pixels)
    result = grid.grid_to_pixels(_apply(conv, grid, images))
    diagonal = square_camera.calc_pixel_neighbors(diagonal=True).toarray()
    reference = neighbour_gather_reference(
        square_camera, [np.flatnonzero(row) for row in diagonal], grid,
        conv.weight.detach().numpy(), conv.bias.detach().numpy(), images,
    )
    np.testing.assert_allclose(result, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["LSTCam", "FlashCam"])
def test_stride_two_stays_hexagonal(real_cameras, name):
    """Stride 2 = stride 1 sampled at the even cells, which form a hexagonal lattice: on the
    pixels at even cells the stride-2 output is the neighbour-gather convolution."""
    geometry = real_cameras[name]
    grid = CameraGrid.from_geometry(geometry)
    conv1, conv2 = _random_conv(grid, stride=1), _random_conv(grid, stride=2)
    images = _random_images(geometry.n_pixels)
    full = _apply(conv1, grid, images)
    coarse = _apply(conv2, grid, images)
    assert coarse.shape[-2:] == ((grid.shape[0] + 1) // 2, (grid.shape[1] + 1) // 2)
    np.testing.assert_allclose(coarse, full[..., ::2, ::2], rtol=0, atol=1e-12)

    reference = neighbour_gather_reference(
        geometry, geometry.neighbors, grid, conv2.weight.detach().numpy(),
        conv2.bias.detach().numpy(), images,
    )
    even = (grid.rows % 2 == 0) & (grid.cols % 2 == 0)
    assert even.sum() > geometry.n_pixels / 5
    np.testing.assert_allclose(
        coarse[..., grid.rows[even] // 2, grid.cols[even] // 2], reference[..., even],
        rtol=0, atol=1e-5,
    )
    # the even cells are a hexagonal lattice of twice the pitch, same orientation: the six
    # coarse neighbour offsets lie at 2 pitches on the camera, the masked corners farther
    basis = _lattice_basis(grid)
    for dr, dq in [(a - 1, b - 1) for a in range(3) for b in range(3) if (a, b) != (1, 1)]:
        distance = np.linalg.norm(basis @ (2 * dq, 2 * dr))
        if (dr, dq) in grid.neighbor_offsets():
            assert distance == pytest.approx(2.0)
        else:
            assert distance == pytest.approx(2 * np.sqrt(3))


def test_masked_taps_get_no_gradient_and_are_ignored(real_cameras):
    grid = CameraGrid.from_geometry(real_cameras["LSTCam"])
    conv = _random_conv(grid).float()
    x = torch.from_numpy(grid.pixels_to_grid(_random_images(grid.n_pixels))).float()
    conv(x).square().sum().backward()
    grad = conv.weight.grad
    assert torch.all(grad[:, :, 0, 0] == 0)
    assert torch.all(grad[:, :, 2, 2] == 0)
    mask = torch.from_numpy(grid.kernel_mask).bool()
    assert torch.all(grad[:, :, mask] != 0)

    # whatever the masked weights hold, the output is the same
    with torch.no_grad():
        before = conv(x)
        conv.weight[:, :, 0, 0] = 100.0
        conv.weight[:, :, 2, 2] = -100.0
        torch.testing.assert_close(conv(x), before, rtol=0, atol=0)


def test_square_conv_keeps_all_taps():
    conv = HexConv2d(2, 2, hexagonal=False)
    conv(torch.randn(1, 2, 6, 6)).sum().backward()
    assert torch.all(conv.weight.grad != 0)
