"""GammaPhysNet on real camera grids: outputs, input handling, masking, attention switch."""
import numpy as np
import pytest
import torch

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.nn.layers import DualAttention, Stage
from ctapipe_gammaphysnet.nn.network import OUTPUTS, PRESETS, GammaPhysNet, NetworkConfig


@pytest.fixture(scope="module")
def lst_grid(real_cameras):
    return CameraGrid.from_geometry(real_cameras["LSTCam"])


@pytest.fixture(scope="module")
def lst_geometry(real_cameras):
    return real_cameras["LSTCam"]


def shower_images(geometry, n=4, seed=0):
    """Elliptical Gaussian light spots with a time gradient along the axis, plus noise:
    (image, peak_time) float32 tensors (n, n_pixels)."""
    rng = np.random.default_rng(seed)
    x, y = geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")
    images, times = [], []
    for _ in range(n):
        cx, cy = rng.uniform(-0.6, 0.6, 2)
        psi = rng.uniform(0, np.pi)
        along = (x - cx) * np.cos(psi) + (y - cy) * np.sin(psi)
        across = -(x - cx) * np.sin(psi) + (y - cy) * np.cos(psi)
        profile = np.exp(-0.5 * ((along / 0.15) ** 2 + (across / 0.05) ** 2))
        charge = rng.uniform(200, 2000) * profile
        images.append(charge + rng.normal(0, 1.5, len(x)))
        times.append(20 + 30 * along + rng.normal(0, 1, len(x)))
    return (torch.tensor(np.array(images), dtype=torch.float32),
            torch.tensor(np.array(times), dtype=torch.float32))


def make_network(grid, preset="tiny", seed=0, **changes):
    torch.manual_seed(seed)
    config = NetworkConfig.from_dict({**PRESETS[preset].to_dict(), **changes})
    return GammaPhysNet(grid, config).eval()


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_outputs_of_each_preset(lst_grid, lst_geometry, preset):
    network = make_network(lst_grid, preset)
    image, time = shower_images(lst_geometry, n=3)
    with torch.no_grad():
        out = network(image, time)
    assert set(out) == set(OUTPUTS)
    assert out["class_logits"].shape == (3, 2)
    assert out["log_energy"].shape == (3,)
    assert out["direction"].shape == (3, 2)
    assert out["impact"].shape == (3, 2)
    assert all(torch.isfinite(v).all() for v in out.values())
    gammaness = GammaPhysNet.gammaness(out)
    assert gammaness.shape == (3,)
    assert torch.all((gammaness >= 0) & (gammaness <= 1))
    # the stages halve the grid twice, stride 2 staying on the hexagonal lattice
    shapes = [tuple(stage.camera_mask.shape[-2:]) for stage in network.stages]
    assert shapes == [(55, 55), (28, 28), (14, 14)]
    assert len(network.stages) == len(PRESETS[preset].channels)


@pytest.mark.parametrize("name", ["FlashCam", "MSTx-NectarCam"])
def test_other_cameras(real_cameras, name):
    geometry = real_cameras[name]
    network = make_network(CameraGrid.from_geometry(geometry))
    image, time = shower_images(geometry, n=2)
    with torch.no_grad():
        out = network(image, time)
    assert out["class_logits"].shape == (2, 2)
    with pytest.raises(RuntimeError):
        network(torch.zeros(2, geometry.n_pixels + 1), torch.zeros(2, geometry.n_pixels + 1))


def test_all_parameters_learn(lst_grid, lst_geometry):
    network = make_network(lst_grid, "tiny").train()
    image, time = shower_images(lst_geometry, n=4)
    out = network(image, time)
    sum(v.square().sum() for v in out.values()).backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_camera_inputs(lst_grid, lst_geometry):
    """The "camera" representation of older model files: every pixel's charge and time."""
    network = make_network(lst_grid, inputs="camera", image_parameters=False)
    image, time = shower_images(lst_geometry, n=2)
    image[0, :3] = torch.tensor([float("nan"), float("inf"), -5.0])
    time[1, 10] = float("nan")
    prepared = lst_grid.grid_to_pixels(network.prepare_inputs(image, time).numpy())
    prepared = torch.from_numpy(prepared)
    assert prepared.shape == (2, 2, lst_geometry.n_pixels)
    assert torch.isfinite(prepared).all()
    assert torch.all(prepared[0, 0, :3] == 0)
    torch.testing.assert_close(prepared[0, 0, 3:], torch.log1p(image[0, 3:].clamp(min=0)))
    assert prepared[1, 1, 10] == 0
    # relative time is centred on the charge-weighted mean
    charge = image.nan_to_num(0, 0, 0).clamp(min=0)
    finite = torch.isfinite(time)
    weighted = (charge * finite * prepared[:, 1]).sum(1) / (charge * finite).sum(1)
    torch.testing.assert_close(weighted, torch.zeros(2), atol=1e-5, rtol=0)


def test_cleaned_inputs_follow_ctapipe_cleaning(lst_grid, lst_geometry):
    """The cleaned representation's mask is ctapipe's tailcuts_clean, charges are kept in the
    mask dilated by one ring, times only in the mask, centred on its charge-weighted mean."""
    from ctapipe.image import dilate, tailcuts_clean

    config = PRESETS["tiny"]
    network = make_network(lst_grid)
    image, time = shower_images(lst_geometry, n=3, seed=5)
    image[0, 7] = float("nan")
    prepared = torch.from_numpy(lst_grid.grid_to_pixels(network.prepare_inputs(image, time).numpy()))
    assert prepared.shape == (3, 3, lst_geometry.n_pixels)
    for b in range(3):
        charge = image[b].nan_to_num(0).clamp(min=0).numpy()
        mask = tailcuts_clean(lst_geometry, charge, picture_thresh=config.picture_threshold,
                              boundary_thresh=config.boundary_threshold,
                              min_number_picture_neighbors=config.min_picture_neighbors)
        assert 10 < mask.sum() < lst_geometry.n_pixels / 2
        np.testing.assert_array_equal(prepared[b, 2].numpy(), mask.astype(np.float32))
        dilated = dilate(lst_geometry, mask)
        expected_charge = np.where(dilated, np.log1p(charge), 0)
        np.testing.assert_allclose(prepared[b, 0].numpy(), expected_charge, rtol=1e-6)
        assert np.all(prepared[b, 1].numpy()[~mask] == 0)
        weighted = (charge[mask] * prepared[b, 1].numpy()[mask]).sum() / charge[mask].sum()
        assert abs(weighted) < 1e-5


def test_outputs_ignore_pixels_outside_the_cleaned_image(lst_grid, lst_geometry):
    """By construction: peak times outside the cleaning mask, and charges outside the dilated mask
    that stay below the boundary threshold, cannot change any output."""
    from ctapipe.image import dilate, tailcuts_clean

    network = make_network(lst_grid, "small")
    image, time = shower_images(lst_geometry, n=2, seed=7)
    config = network.config
    rng = np.random.default_rng(0)
    resampled_image, resampled_time = image.clone(), time.clone()
    for b in range(2):
        mask = tailcuts_clean(lst_geometry, image[b].numpy(), picture_thresh=config.picture_threshold,
                              boundary_thresh=config.boundary_threshold,
                              min_number_picture_neighbors=config.min_picture_neighbors)
        outside = torch.from_numpy(~dilate(lst_geometry, mask))
        n = int(outside.sum())
        resampled_image[b, outside] = torch.from_numpy(
            rng.uniform(-2, config.boundary_threshold * 0.99, n).astype(np.float32))
        resampled_time[b, torch.from_numpy(~mask)] = torch.from_numpy(
            rng.uniform(0, 40, int((~mask).sum())).astype(np.float32))
    with torch.no_grad():
        before, after = network(image, time), network(resampled_image, resampled_time)
    for key in OUTPUTS:
        torch.testing.assert_close(before[key], after[key], rtol=0, atol=1e-6)
    # the camera representation, by contrast, sees them
    camera = make_network(lst_grid, "small", inputs="camera", image_parameters=False)
    with torch.no_grad():
        assert not torch.allclose(camera(image, time)["log_energy"],
                                  camera(resampled_image, resampled_time)["log_energy"])


def test_broken_pixels_never_propagate(lst_grid, lst_geometry):
    """NaN/inf charge acts as zero charge; NaN/inf time as a time equal to the image mean."""
    network = make_network(lst_grid, "small")
    image, time = shower_images(lst_geometry, n=2, seed=3)
    bright = torch.argsort(image[0], descending=True)[:5]

    broken_charge = image.clone()
    broken_charge[0, bright[:3]] = float("nan")
    broken_charge[0, bright[3]] = float("inf")
    broken_charge[0, bright[4]] = -float("inf")
    zero_charge = image.clone()
    zero_charge[0, bright] = 0.0
    with torch.no_grad():
        out_broken = network(broken_charge, time)
        out_zero = network(zero_charge, time)
        out_intact = network(image, time)
    for key in OUTPUTS:
        assert torch.isfinite(out_broken[key]).all()
        torch.testing.assert_close(out_broken[key], out_zero[key], rtol=0, atol=1e-6)
    assert not torch.allclose(out_broken["log_energy"], out_intact["log_energy"])

    # broken times: the same as if those pixels had the charge-weighted mean time of the rest
    # of the cleaned image
    broken_time = time.clone()
    broken_time[0, bright[:2]] = float("nan")
    broken_time[0, bright[2]] = float("inf")
    inputs = network.prepare_inputs(image, time)
    cleaned = torch.from_numpy(network.grid.grid_to_pixels(inputs[0, 2].numpy()) > 0)
    assert cleaned[bright].all() and cleaned.sum() > 10
    intact = cleaned.clone()
    intact[bright[:3]] = False
    charge = image[0].clamp(min=0)[intact]
    mean_time = (charge * time[0][intact]).sum() / charge.sum()
    mean_filled = time.clone()
    mean_filled[0, bright[:3]] = mean_time
    with torch.no_grad():
        out_broken = network(image, broken_time)
        out_filled = network(image, mean_filled)
    for key in OUTPUTS:
        assert torch.isfinite(out_broken[key]).all()
        torch.testing.assert_close(out_broken[key], out_filled[key], rtol=0, atol=1e-5)

    # a completely broken or empty image still gives finite outputs
    nan = torch.full_like(image, float("nan"))
    with torch.no_grad():
        for a, b in [(nan, nan), (torch.zeros_like(image), time)]:
            assert all(torch.isfinite(v).all() for v in network(a, b).values())


def test_peak_time_offset_does_not_matter(lst_grid, lst_geometry):
    network = make_network(lst_grid, "small")
    image, time = shower_images(lst_geometry, n=3, seed=5)
    with torch.no_grad():
        out = network(image, time)
        shifted = network(image, time + 37.5)
        stretched = network(image, time * 1.5)
    for key in OUTPUTS:
        torch.testing.assert_close(shifted[key], out[key], rtol=0, atol=1e-5)
    # but the time structure itself is used (the direction votes start at zero: impact here)
    assert not torch.allclose(stretched["impact"], out["impact"], atol=1e-4)


def test_attention_switch(lst_grid, lst_geometry):
    with_attention = make_network(lst_grid, "tiny")
    without = make_network(lst_grid, "tiny", attention=False)
    n_attention = sum(isinstance(m, DualAttention) for m in with_attention.modules())
    assert n_attention == len(PRESETS["tiny"].channels)
    assert not any(isinstance(m, DualAttention) for m in without.modules())
    assert all(stage.attention is None for stage in without.stages)
    n_params = sum(p.numel() for p in with_attention.parameters())
    assert sum(p.numel() for p in without.parameters()) < n_params
    image, time = shower_images(lst_geometry, n=2)
    with torch.no_grad():
        assert all(torch.isfinite(v).all() for v in without(image, time).values())


def test_cells_outside_the_camera_stay_zero(lst_grid, lst_geometry):
    network = make_network(lst_grid, "small").train()  # batch statistics: BN shifts are non-zero
    captured = []
    hooks = [m.register_forward_hook(lambda m, i, o: captured.append((m, o)))
             for m in network.modules() if isinstance(m, Stage)]
    image, time = shower_images(lst_geometry, n=4)
    network(image, time)
    for hook in hooks:
        hook.remove()
    assert len(captured) == 3
    for stage, output in captured:
        outside = stage.camera_mask[0, 0] == 0
        assert outside.any()
        assert torch.all(output[:, :, outside] == 0)
        assert output[:, :, ~outside].abs().sum() > 0
    # the first stage's mask is exactly the camera
    np.testing.assert_array_equal(captured[0][0].camera_mask[0, 0].numpy(), lst_grid.mask)
    # every pixel's cell on each down-sampled grid is a camera cell there (the Grad-CAM way back)
    for n_downsamplings, (stage, output) in enumerate(captured):
        rows, cols = lst_grid.coarse_cells(n_downsamplings)
        assert torch.all(stage.camera_mask[0, 0, rows, cols] == 1)
        on_pixels = lst_grid.coarse_to_pixels(output.detach().numpy(), n_downsamplings)
        assert on_pixels.shape == (4, output.shape[1], lst_grid.n_pixels)


def test_moving_the_image_changes_the_outputs(lst_grid, lst_geometry):
    network = make_network(lst_grid, "small")
    with torch.no_grad():  # the head-tail weights start near zero; trained ones read the features
        torch.nn.init.normal_(network.direction_head.head_tail_weights.weight, std=0.5)
    image, time = shower_images(lst_geometry, n=1, seed=7)
    # the same image moved on the camera by three lattice steps, and the pixels shuffled
    on_grid = lst_grid.pixels_to_grid(image.numpy())
    moved = torch.from_numpy(lst_grid.grid_to_pixels(np.roll(on_grid, 3, axis=-1)))
    shuffled = image[:, torch.randperm(lst_geometry.n_pixels)]
    with torch.no_grad():
        out = network(image, time)
        for other in (moved, shuffled):
            changed = network(other, time)
            assert not torch.allclose(changed["direction"], out["direction"], atol=1e-5)
            assert not torch.allclose(changed["class_logits"], out["class_logits"], atol=1e-5)


def test_eval_is_deterministic_and_batch_independent(lst_grid, lst_geometry):
    network = make_network(lst_grid, "small")
    image, time = shower_images(lst_geometry, n=3)
    with torch.no_grad():
        batch = network(image, time)
        single = network(image[1:2], time[1:2])
    for key in OUTPUTS:
        torch.testing.assert_close(single[key][0], batch[key][1], rtol=0, atol=1e-5)


def test_n_flops(lst_grid):
    flops = {p: make_network(lst_grid, p).n_flops() for p in ("tiny", "small", "paper")}
    assert 0 < flops["tiny"] < flops["small"] < flops["paper"]
    # the stem alone: 7 taps × 2 input channels per output value on the 55 × 55 grid
    stem = 2 * 7 * 2 * PRESETS["paper"].channels[0] * 55 * 55
    assert flops["paper"] > stem
    # with attention off fewer operations remain
    assert make_network(lst_grid, "paper", attention=False).n_flops() < flops["paper"]


def test_config_round_trip_and_unknown_option():
    config = PRESETS["small"]
    assert NetworkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown network options.*n_layers"):
        NetworkConfig.from_dict({**config.to_dict(), "n_layers": 5})
