"""The image parameters inside γ-PhysNet are ctapipe's Hillas, leakage and timing parameters of
the same cleaned image, on real LST images, and the disp direction head flips with the image."""
import numpy as np
import pytest
import torch
from ctapipe.image import camera_to_shower_coordinates, hillas_parameters, leakage_parameters, tailcuts_clean
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.nn.image_parameters import AXIAL_PARAMETERS, INVARIANT_PARAMETERS
from ctapipe_gammaphysnet.nn.inputs import TIME_CLIP, TIME_SCALE_NS
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet, NetworkConfig


@pytest.fixture(scope="module")
def real_lst_images(real_dl1_files):
    """Per LST camera (LSTCam, LSTS-design, LSTN-design): (geometry, images, peak times) of its
    real images with at least 5 cleaned pixels."""
    by_camera = {}
    for path in real_dl1_files.values():
        with TableLoader(path, dl1_images=True, dl1_parameters=False, simulated=False,
                         pointing=False) as loader:
            for tel_type in loader.subarray.telescope_types:
                if tel_type.optics.size_type.name != "LST":
                    continue
                table = loader.read_telescope_events_by_type([tel_type])[str(tel_type)]
                geometry = tel_type.camera.geometry
                for image, time in zip(np.asarray(table["image"], dtype=np.float32),
                                       np.asarray(table["peak_time"], dtype=np.float32)):
                    if tailcuts_clean(geometry, image, 6, 3, min_number_picture_neighbors=2).sum() >= 5:
                        group = by_camera.setdefault(geometry.name, (geometry, [], []))
                        group[1].append(image)
                        group[2].append(time)
    groups = [(geometry, np.stack(images), np.stack(times))
              for geometry, images, times in by_camera.values()]
    assert sum(len(images) for _, images, _ in groups) >= 30
    return groups


def _network(geometry):
    torch.manual_seed(0)
    return GammaPhysNet(CameraGrid.from_geometry(geometry), PRESETS["tiny"]).eval()


def _parameters(network, images, times):
    with torch.no_grad():
        inputs = network.prepare_inputs(torch.from_numpy(images), torch.from_numpy(times))
        return network.image_parameters(*network.inputs.cleaned_image(inputs))


def test_parameters_are_ctapipes(real_lst_images):
    checked_slopes = sum(_compare_with_ctapipe(*group) for group in real_lst_images)
    assert checked_slopes >= 20


def _compare_with_ctapipe(geometry, images, times):
    """Assert our parameters are ctapipe's for every image; the number of time slopes compared."""
    ours = _parameters(_network(geometry), images, times)
    x, y = geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")
    radius = np.hypot(x, y).max()
    invariant = dict(zip(INVARIANT_PARAMETERS, ours["invariant"].double().numpy().T))
    axial = dict(zip(AXIAL_PARAMETERS, ours["axial"].double().numpy().T))
    checked_slopes = 0
    for i, (image, time) in enumerate(zip(images, times)):
        mask = tailcuts_clean(geometry, image, 6, 3, min_number_picture_neighbors=2)
        hillas = hillas_parameters(geometry[mask], image[mask])
        leakage = leakage_parameters(geometry, image, mask)
        np.testing.assert_allclose(ours["centroid"][i].numpy() * radius,
                                   [hillas.x.to_value("m"), hillas.y.to_value("m")], atol=2e-4)
        np.testing.assert_allclose(10 ** invariant["log10_intensity"][i], hillas.intensity, rtol=1e-4)
        np.testing.assert_allclose(invariant["length"][i] * radius, hillas.length.to_value("m"),
                                   rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(invariant["width"][i] * radius, hillas.width.to_value("m"),
                                   rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(invariant["r"][i] * radius, hillas.r.to_value("m"), atol=2e-4)
        np.testing.assert_allclose(invariant["kurtosis"][i], hillas.kurtosis, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(invariant["leakage_1"][i], leakage.intensity_width_1, atol=1e-5)
        np.testing.assert_allclose(invariant["leakage_2"][i], leakage.intensity_width_2, atol=1e-5)
        np.testing.assert_allclose(10 ** invariant["log10_n_pixels"][i], mask.sum(), rtol=1e-5)
        # our axis points along ctapipe's ψ or against it; the signed parameters follow the axis
        psi = hillas.psi.to_value("rad")
        if hillas.width.to_value("m") < 0.9 * hillas.length.to_value("m"):
            orientation = float(np.sign(ours["axis"][i].numpy() @ [np.cos(psi), np.sin(psi)]))
            assert abs(ours["axis"][i].numpy() @ [np.cos(psi), np.sin(psi)]) == pytest.approx(1, abs=1e-3)
            np.testing.assert_allclose(axial["skewness"][i], orientation * hillas.skewness,
                                       rtol=2e-3, atol=2e-3)
            relative = time[mask] - np.average(time[mask], weights=image[mask])
            if np.abs(relative).max() < TIME_CLIP * TIME_SCALE_NS:  # no clipped times
                # the charge-weighted least-squares slope (lstchain's; ctapipe's timing_parameters
                # fits without weights, robust to outliers)
                longitudinal, _ = camera_to_shower_coordinates(
                    x[mask], y[mask], hillas.x.to_value("m"), hillas.y.to_value("m"), psi)
                slope = np.polyfit(longitudinal, time[mask], 1, w=np.sqrt(image[mask]))[0]
                np.testing.assert_allclose(axial["time_slope"][i] * TIME_SCALE_NS / radius,
                                           orientation * slope, rtol=2e-3, atol=0.05)
                checked_slopes += 1
    return checked_slopes


def test_disp_direction_flips_with_the_image(real_lst_images):
    """Mirroring an image along its main axis puts the source on the other side of the centroid:
    the head-tail sign is odd in the quantities that flip with the axis."""
    signs = torch.cat([_head_tail_of_mirrored_images(*group) for group in real_lst_images])
    clear = signs.abs().amin(1) > 1e-3
    assert clear.sum() >= 20
    assert torch.all(signs[clear, 0] * signs[clear, 1] < 0)


def _head_tail_of_mirrored_images(geometry, images, times):
    """(n_images, 2): the vote's distance from the centroid along the axis, for each image and
    for the image mirrored through the camera centre (which mirrors it along its axis)."""
    network = _network(geometry)
    head = network.direction_head
    with torch.no_grad():
        # a sign that reads the skewness and the time slope only (trained weights read the feature
        # channels' moments too, which flip as well, up to the lattice's asymmetry)
        head.head_tail_weights.weight.zero_()
        head.head_tail_weights.bias.zero_()
        head.head_tail_weights.bias[:len(AXIAL_PARAMETERS)] = torch.tensor([3.0, 5.0])
    # on the hexagonal lattice the point reflection maps pixels onto pixels
    x, y = geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")
    mirror = np.array([np.argmin(np.hypot(x + xi, y + yi)) for xi, yi in zip(x, y)])
    assert np.allclose(x[mirror], -x, atol=1e-3) and np.allclose(y[mirror], -y, atol=1e-3)
    results = []
    for im, t in ((images, times), (images[:, mirror], times[:, mirror])):
        parameters = _parameters(network, im, t)
        with torch.no_grad():
            vote = network.camera_vote(torch.from_numpy(im), torch.from_numpy(t))
        results.append((parameters, ((vote - parameters["centroid"]) * parameters["axis"]).sum(1)))
    (ours, along), (mirrored, mirrored_along) = results
    torch.testing.assert_close(mirrored["centroid"], -ours["centroid"], atol=1e-4, rtol=0)
    torch.testing.assert_close(mirrored["axial"], -ours["axial"], atol=1e-3, rtol=1e-3)
    return torch.stack([along, mirrored_along], dim=1)


def test_camera_inputs_have_no_image_parameters(real_lst_images):
    grid = CameraGrid.from_geometry(real_lst_images[0][0])
    config = NetworkConfig.from_dict({**PRESETS["tiny"].to_dict(), "inputs": "camera"})
    with pytest.raises(ValueError, match="image_parameters needs the 'cleaned' input"):
        GammaPhysNet(grid, config)
