"""From photons on the mirror to a calibrated camera image: optics, photo-sensors, noise, trigger.

Works on any ctapipe `CameraGeometry`: photons are placed by their direction in the
`TelescopeFrame` on the pixels of the geometry transformed into that frame (nearest pixel centre is
the pixel that contains the point, for hexagonal and square pixels alike).
"""
import numpy as np
from ctapipe.coordinates import TelescopeFrame
from ctapipe.core import Component
from ctapipe.core.traits import Float, Int
from scipy.spatial import cKDTree

__all__ = ["CameraSimulator", "CameraResponse", "SimulatedImage"]


class SimulatedImage:
    """One telescope's simulated camera data."""

    def __init__(self, true_image, image, peak_time, n_trigger_pixels):
        self.true_image = true_image
        self.image = image
        self.peak_time = peak_time
        self.n_trigger_pixels = n_trigger_pixels

    @property
    def triggered(self):
        return self.n_trigger_pixels > 0


class CameraSimulator(Component):
    """Optical point-spread, photon detection, night-sky background, electronics and trigger."""

    psf_sigma = Float(
        0.03, help="Gaussian sigma of the optical point-spread function (deg)"
    ).tag(config=True)
    photon_detection_efficiency = Float(
        0.044,
        help=(
            "overall probability that a simulated 300-600 nm Cherenkov photon on the mirror gives "
            "a photo-electron (reflectivity, shadowing, light guides, quantum efficiency); "
            "calibrated on sim_telarray LST gamma images, it also absorbs the overestimated "
            "track length of Greisen's profile"
        ),
    ).tag(config=True)
    nsb_rate = Float(
        0.25, help="night-sky background photo-electron rate per pixel (p.e./ns); ~LST dark sky"
    ).tag(config=True)
    integration_window = Float(8.0, help="charge integration window (ns)").tag(config=True)
    single_pe_resolution = Float(
        0.4, help="relative width of the single photo-electron charge distribution"
    ).tag(config=True)
    electronic_noise = Float(0.3, help="electronic noise per pixel (p.e.)").tag(config=True)
    readout_window = Float(40.0, help="length of the read-out window (ns)").tag(config=True)
    trigger_time = Float(
        15.0, help="position of the image's mean arrival time in the read-out window (ns)"
    ).tag(config=True)
    pulse_time_spread = Float(
        2.0, help="time spread of a single photo-electron pulse peak (ns)"
    ).tag(config=True)
    time_jitter = Float(0.3, help="timing jitter of bright pixels (ns)").tag(config=True)
    trigger_threshold = Float(
        30.0,
        help="telescope trigger: charge (p.e.) summed over a pixel and its neighbours",
    ).tag(config=True)
    trigger_min_pixels = Int(1, help="number of trigger patches above threshold").tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        for name in ("psf_sigma", "photon_detection_efficiency", "integration_window", "readout_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CameraSimulator.{name} must be > 0, got {getattr(self, name)}")
        for name in ("nsb_rate", "electronic_noise", "single_pe_resolution", "trigger_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"CameraSimulator.{name} must be >= 0, got {getattr(self, name)}")
        self._responses = {}

    def response(self, camera):
        """The (cached) `CameraResponse` of a `CameraDescription`."""
        key = camera.name, camera.geometry.n_pixels
        if key not in self._responses:
            self._responses[key] = CameraResponse(camera.geometry, self)
        return self._responses[key]


class CameraResponse:
    """Per-camera lookup structures for `CameraSimulator`."""

    def __init__(self, geometry, settings):
        self.settings = settings
        in_fov = geometry.transform_to(TelescopeFrame())
        self.pixel_lon = in_fov.pix_x.to_value("deg")
        self.pixel_lat = in_fov.pix_y.to_value("deg")
        self.n_pixels = geometry.n_pixels
        self._tree = cKDTree(np.column_stack([self.pixel_lon, self.pixel_lat]))
        # a point belongs to the camera if it is inside its nearest pixel
        self._max_distance = 0.5 * in_fov.pixel_width.to_value("deg") * 1.16
        self._largest_distance = float(self._max_distance.max())
        self._neighbors = geometry.neighbor_matrix_sparse
        # photons further than this from the camera centre cannot land in a pixel (deg)
        self._field_of_view_radius = np.hypot(self.pixel_lon, self.pixel_lat).max() + in_fov.pixel_width.to_value("deg").max()

    def expected_photoelectrons(self, light, rng):
        """Mean p.e. per pixel and their mean arrival time from photons on the mirror."""
        s = self.settings
        lon = light.fov_lon + rng.normal(0, s.psf_sigma, size=len(light.photons))
        lat = light.fov_lat + rng.normal(0, s.psf_sigma, size=len(light.photons))
        in_view = np.hypot(lon, lat) < self._field_of_view_radius
        # points further than the largest pixel radius come back with pixel index n_pixels
        distance, pixel = self._tree.query(
            np.column_stack([lon[in_view], lat[in_view]]), distance_upper_bound=self._largest_distance
        )
        inside = pixel < self.n_pixels
        inside[inside] = distance[inside] < self._max_distance[pixel[inside]]
        weight = light.photons[in_view][inside] * s.photon_detection_efficiency
        pixel = pixel[inside]
        expected = np.bincount(pixel, weights=weight, minlength=self.n_pixels)
        summed_time = np.bincount(
            pixel, weights=weight * light.time[in_view][inside], minlength=self.n_pixels
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_time = np.where(expected > 0, summed_time / expected, np.nan)
        return expected, mean_time

    def may_trigger(self, expected):
        """False when even a 5σ noise fluctuation on the brightest trigger patch of the expected
        signal stays under the threshold (the camera simulation can then be skipped)."""
        s = self.settings
        pixel_variance = s.nsb_rate * s.integration_window * (1 + s.single_pe_resolution**2)
        patch_sigma = np.sqrt(7 * (pixel_variance + s.electronic_noise**2))
        brightest = (expected + self._neighbors @ expected).max()
        return brightest + 5 * patch_sigma + 5 * np.sqrt(brightest) >= s.trigger_threshold

    def digitize(self, expected, mean_time, rng):
        """Photo-electron counts, calibrated charges, peak times and the trigger decision."""
        s = self.settings
        true_image = rng.poisson(expected).astype(np.int32)
        nsb_mean = s.nsb_rate * s.integration_window
        total = true_image + rng.poisson(nsb_mean, size=self.n_pixels)
        charge = (
            total
            + rng.normal(0, 1, size=self.n_pixels) * s.single_pe_resolution * np.sqrt(total)
            - nsb_mean
            + rng.normal(0, s.electronic_noise, size=self.n_pixels)
        )

        has_signal = true_image > 0
        if np.any(has_signal):
            reference = np.average(mean_time[has_signal], weights=true_image[has_signal])
        else:
            reference = 0.0
        spread = np.sqrt(s.pulse_time_spread**2 / np.maximum(true_image, 1) + s.time_jitter**2)
        signal_time = mean_time - reference + s.trigger_time + rng.normal(0, 1, self.n_pixels) * spread
        noise_time = rng.uniform(0, s.readout_window, size=self.n_pixels)
        peak_time = np.where(has_signal, np.clip(np.nan_to_num(signal_time), 0, s.readout_window), noise_time)

        patch_sum = charge + self._neighbors @ charge
        n_trigger = int(np.count_nonzero(patch_sum > s.trigger_threshold))
        if n_trigger < s.trigger_min_pixels:
            n_trigger = 0
        return SimulatedImage(
            true_image=true_image,
            image=charge.astype(np.float32),
            peak_time=peak_time.astype(np.float32),
            n_trigger_pixels=n_trigger,
        )
