"""From photons on the mirror to the camera's read-out: optics, photo-sensors, noise, trigger.

Works on any ctapipe `CameraGeometry`: photons are placed by their direction in the
`TelescopeFrame` on the pixels of the geometry transformed into that frame (nearest pixel centre is
the pixel that contains the point, for hexagonal and square pixels alike). The nearest pixel is
searched among the few candidates of a coarse grid cell, in a numba kernel.

Triggered cameras are read out as pixel waveforms (`waveforms`: pulse shape and sampling of the
camera's `CameraReadout`, night-sky background in time, single-p.e. spectrum, noise, two gain
channels, calibrated to r1 as ctapipe does for sim_telarray files); `ShowerSimulator` turns them into
DL1 images with ctapipe's `CameraCalibrator`. The direct model (``waveforms = False``) writes
charges and peak times without waveforms.
"""
import numpy as np
from ctapipe.coordinates import TelescopeFrame
from ctapipe.core import Component
from ctapipe.core.traits import Bool, Float, Int
from numba import njit
from scipy.spatial import cKDTree

from .waveforms import PulseShape, render_waveforms, single_pe_quantiles

__all__ = ["CameraSimulator", "CameraResponse", "ReadoutModel", "SimulatedImage"]

# night-sky background and single-p.e. spectrum, calibrated on the pixels without signal of the
# sim_telarray LST files (docs/simulation.rst, "Camera front-end")
NSB_RATE = 0.22
SINGLE_PE_RESOLUTION = 0.4
PHOTOELECTRON_TIME_SPREAD = 1.0
TRIGGER_TIME = 12.5


class SimulatedImage:
    """One telescope's simulated camera data: true image, trigger and, when it triggered, either
    the r1 waveforms (shape (n_pixels, n_samples), with the selected gain channel per pixel) or,
    from the direct model, the image and peak times."""

    def __init__(
        self, true_image, image, peak_time, n_trigger_pixels, waveform=None, selected_gain_channel=None
    ):
        self.true_image = true_image
        self.image = image
        self.peak_time = peak_time
        self.n_trigger_pixels = n_trigger_pixels
        self.waveform = waveform
        self.selected_gain_channel = selected_gain_channel

    @property
    def triggered(self):
        return self.n_trigger_pixels > 0


class CameraSimulator(Component):
    """Optical point-spread, photon detection, night-sky background, electronics and trigger."""

    waveforms = Bool(
        True,
        help=(
            "read triggered cameras out as pixel waveforms, from which ctapipe's CameraCalibrator "
            "makes the images as ctapipe-process does for sim_telarray files. False: the direct "
            "model (charges from a Gaussian noise model, uniform random peak times for pixels "
            "without signal), faster but its pixels without signal do not look like real data: "
            "NOT FOR TRAINING"
        ),
    ).tag(config=True)

    psf_sigma = Float(
        0.02, help="Gaussian sigma of the optical point-spread function (deg)"
    ).tag(config=True)
    photon_detection_efficiency = Float(
        0.154,
        help=(
            "overall probability that a simulated 300-600 nm Cherenkov photon on the mirror gives "
            "a photo-electron (reflectivity, shadowing, light guides, quantum efficiency); "
            "calibrated so that CORSIKA's photons of sim_telarray LST gamma images give "
            "sim_telarray's photo-electrons (docs: simulation)"
        ),
    ).tag(config=True)
    nsb_rate = Float(
        NSB_RATE, help="night-sky background photo-electron rate per pixel (p.e./ns); ~LST dark sky"
    ).tag(config=True)
    integration_window = Float(
        8.0, help="charge integration window (ns) of the trigger and of the direct model"
    ).tag(config=True)
    single_pe_resolution = Float(
        SINGLE_PE_RESOLUTION,
        help="relative width of the single photo-electron amplitude spectrum (waveforms: a gamma "
        "distribution of mean 1)",
    ).tag(config=True)
    electronic_noise = Float(0.3, help="electronic noise per pixel (p.e.), direct model").tag(config=True)
    readout_window = Float(40.0, help="length of the read-out window (ns), direct model").tag(config=True)
    trigger_time = Float(
        TRIGGER_TIME, help="position of the image's mean arrival time in the read-out window (ns)"
    ).tag(config=True)
    pulse_time_spread = Float(
        2.0, help="time spread of a single photo-electron pulse peak (ns), direct model"
    ).tag(config=True)
    photoelectron_time_spread = Float(
        PHOTOELECTRON_TIME_SPREAD,
        help="waveforms: spread of the arrival times of a pixel's photo-electrons around their "
        "mean (ns; shower time spread within a pixel and the photo-sensor's transit-time spread)",
    ).tag(config=True)
    time_jitter = Float(0.3, help="timing jitter of bright pixels (ns)").tag(config=True)
    adc_pedestal = Float(
        400.0, help="waveforms: ADC baseline per sample, both gain channels (sim_telarray LST: 400)"
    ).tag(config=True)
    high_gain_dc_to_pe = Float(
        0.0145, help="waveforms: p.e. per ADC count of the high-gain channel (sim_telarray dc_to_pe)"
    ).tag(config=True)
    low_gain_dc_to_pe = Float(
        0.243, help="waveforms: p.e. per ADC count of the low-gain channel"
    ).tag(config=True)
    high_gain_noise = Float(
        6.7, help="waveforms: electronic noise per sample of the high-gain channel (ADC counts)"
    ).tag(config=True)
    low_gain_noise = Float(
        5.7, help="waveforms: electronic noise per sample of the low-gain channel (ADC counts)"
    ).tag(config=True)
    adc_max = Int(4095, help="waveforms: largest ADC count (12 bit)").tag(config=True)
    gain_switch_threshold = Float(
        4000.0,
        help="waveforms: pixels with a high-gain sample above this ADC count are read out in the "
        "low gain (ctapipe's ThresholdGainSelector, which SimTelEventSource applies)",
    ).tag(config=True)
    trigger_threshold = Float(
        30.0,
        help="telescope trigger: charge (p.e.) summed over a pixel and its neighbours",
    ).tag(config=True)
    trigger_min_pixels = Int(1, help="number of trigger patches above threshold").tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        for name in (
            "psf_sigma", "photon_detection_efficiency", "integration_window", "readout_window",
            "high_gain_dc_to_pe", "low_gain_dc_to_pe",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"CameraSimulator.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "nsb_rate", "electronic_noise", "single_pe_resolution", "trigger_threshold",
            "photoelectron_time_spread", "high_gain_noise", "low_gain_noise",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"CameraSimulator.{name} must be >= 0, got {getattr(self, name)}")
        self._responses = {}

    def response(self, camera):
        """The (cached) `CameraResponse` of a `CameraDescription`."""
        key = camera.name, camera.geometry.n_pixels
        if key not in self._responses:
            self._responses[key] = CameraResponse(camera.geometry, self, camera.readout)
        return self._responses[key]


@njit(cache=True)
def _accumulate_photoelectrons(
    lon, lat, weight, time, pixel_lon, pixel_lat, max_distance, grid_origin, cell_size,
    cell_start, cell_pixels,
):
    """Sum of ``weight`` and of ``weight × time`` per pixel over points (lon, lat) lying inside
    their nearest pixel; the candidates for a point are the pixels listed for its grid cell."""
    n_cells_lon = cell_start.shape[0]
    n_cells_lat = cell_start.shape[1] - 1
    n_pixels = len(pixel_lon)
    expected = np.zeros(n_pixels)
    summed_time = np.zeros(n_pixels)
    for k in range(len(lon)):
        i = int(np.floor((lon[k] - grid_origin[0]) / cell_size))
        j = int(np.floor((lat[k] - grid_origin[1]) / cell_size))
        if i < 0 or j < 0 or i >= n_cells_lon or j >= n_cells_lat:
            continue
        nearest, nearest_distance2 = -1, np.inf
        for c in range(cell_start[i, j], cell_start[i, j + 1]):
            pixel = cell_pixels[c]
            distance2 = (lon[k] - pixel_lon[pixel]) ** 2 + (lat[k] - pixel_lat[pixel]) ** 2
            if distance2 < nearest_distance2:
                nearest, nearest_distance2 = pixel, distance2
        if nearest >= 0 and nearest_distance2 < max_distance[nearest] ** 2:
            expected[nearest] += weight[k]
            summed_time[nearest] += weight[k] * time[k]
    return expected, summed_time


@njit(cache=True)
def _charges_and_trigger_patches(
    true_image, nsb, charge_normal, noise, nsb_mean, single_pe_resolution, neighbor_indptr,
    neighbor_indices,
):
    """Calibrated charges (float32) and the charge summed over each pixel and its neighbours (the
    trigger patches), from photo-electron and NSB counts and per-pixel random numbers."""
    n_pixels = len(true_image)
    wide_charge = np.empty(n_pixels)
    for k in range(n_pixels):
        total = true_image[k] + nsb[k]
        wide_charge[k] = (
            total + charge_normal[k] * single_pe_resolution * np.sqrt(total) - nsb_mean + noise[k]
        )
    return wide_charge.astype(np.float32), _patch_sums(wide_charge, neighbor_indptr, neighbor_indices)


@njit(cache=True)
def _patch_sums(values, neighbor_indptr, neighbor_indices):
    """Each pixel's value plus its neighbours' (the trigger patch centred on the pixel)."""
    sums = values.copy()
    for k in range(len(values)):
        for n in range(neighbor_indptr[k], neighbor_indptr[k + 1]):
            sums[k] += values[neighbor_indices[n]]
    return sums


@njit(cache=True)
def _peak_times(
    true_image, time_normal, noise_time, mean_time, pulse_time_spread, time_jitter, trigger_time,
    readout_window,
):
    """Peak times (float32): signal pixels from the photo-electrons' mean arrival time relative to the
    image's p.e.-weighted mean, placed at ``trigger_time`` in the window; noise pixels at random."""
    n_pixels = len(true_image)
    peak_time = np.empty(n_pixels, dtype=np.float32)
    weighted_time, n_signal = 0.0, 0
    for k in range(n_pixels):
        if true_image[k] > 0:
            weighted_time += mean_time[k] * true_image[k]
            n_signal += true_image[k]
    reference = weighted_time / n_signal if n_signal > 0 else 0.0
    for k in range(n_pixels):
        if true_image[k] > 0:
            spread = np.sqrt(pulse_time_spread**2 / true_image[k] + time_jitter**2)
            time = mean_time[k] - reference + trigger_time + time_normal[k] * spread
            peak_time[k] = min(max(time if np.isfinite(time) else 0.0, 0.0), readout_window)
        else:
            peak_time[k] = noise_time[k]
    return peak_time


class CameraResponse:
    """Per-camera lookup structures for `CameraSimulator` (and its `ReadoutModel` when it
    simulates waveforms)."""

    def __init__(self, geometry, settings, readout=None):
        self.settings = settings
        in_fov = geometry.transform_to(TelescopeFrame())
        self.pixel_lon = in_fov.pix_x.to_value("deg")
        self.pixel_lat = in_fov.pix_y.to_value("deg")
        self.n_pixels = geometry.n_pixels
        # a point belongs to the camera if it is inside its nearest pixel
        self._max_distance = 0.5 * in_fov.pixel_width.to_value("deg") * 1.16
        self._neighbors = geometry.neighbor_matrix_sparse.tocsr()
        self._build_pixel_grid(in_fov.pixel_width.to_value("deg").max())
        self.name = geometry.name
        self.readout = ReadoutModel(readout, settings) if settings.waveforms and readout is not None else None

    def _build_pixel_grid(self, cell_size):
        """Candidate pixels per square cell of the field of view: every pixel whose centre lies
        within the cell's half-diagonal plus the largest pixel radius of the cell centre, so that a
        point inside a pixel always has that pixel, and any nearer pixel, among its candidates."""
        largest_distance = self._max_distance.max()
        pixels = np.column_stack([self.pixel_lon, self.pixel_lat])
        self._grid_origin = pixels.min(axis=0) - largest_distance
        self._cell_size = float(cell_size)
        n_lon, n_lat = np.ceil((pixels.max(axis=0) + largest_distance - self._grid_origin) / cell_size).astype(int)
        i, j = np.meshgrid(np.arange(n_lon), np.arange(n_lat), indexing="ij")
        centres = self._grid_origin + (np.column_stack([i.ravel(), j.ravel()]) + 0.5) * cell_size
        candidates = cKDTree(pixels).query_ball_point(centres, cell_size / np.sqrt(2) + largest_distance)
        # pixels of cell (i, j), cells in row-major order: cell_pixels[cell_start[i, j]:cell_start[i, j + 1]]
        ends = np.cumsum([len(c) for c in candidates])
        starts = np.concatenate([[0], ends[:-1]]).reshape(n_lon, n_lat)
        self._cell_start = np.column_stack([starts, ends[n_lat - 1 :: n_lat]]).astype(np.int64)
        self._cell_pixels = np.concatenate([np.sort(c) for c in candidates]).astype(np.int64)

    def expected_photoelectrons(self, light, rng):
        """Mean p.e. per pixel and their mean arrival time from photons on the mirror."""
        s = self.settings
        lon = light.fov_lon + rng.normal(0, s.psf_sigma, size=len(light.photons))
        lat = light.fov_lat + rng.normal(0, s.psf_sigma, size=len(light.photons))
        expected, summed_time = _accumulate_photoelectrons(
            lon, lat, light.photons * s.photon_detection_efficiency, light.time, self.pixel_lon,
            self.pixel_lat, self._max_distance, self._grid_origin, self._cell_size,
            self._cell_start, self._cell_pixels,
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
        brightest = _patch_sums(expected, self._neighbors.indptr, self._neighbors.indices).max()
        return brightest + 5 * patch_sigma + 5 * np.sqrt(brightest) >= s.trigger_threshold

    def digitize(self, expected, mean_time, rng):
        """Photo-electron counts and the trigger decision (from the direct model's charges), and
        for triggered images the r1 waveforms or, with the direct model, charges and peak times
        (their random numbers are only drawn then)."""
        s = self.settings
        true_image = rng.poisson(expected).astype(np.int32)
        charge, patch_sum = _charges_and_trigger_patches(
            true_image,
            rng.poisson(s.nsb_rate * s.integration_window, size=self.n_pixels),
            rng.normal(0, 1, size=self.n_pixels),
            rng.normal(0, s.electronic_noise, size=self.n_pixels),
            s.nsb_rate * s.integration_window,
            s.single_pe_resolution,
            self._neighbors.indptr,
            self._neighbors.indices,
        )
        n_trigger = int(np.count_nonzero(patch_sum > s.trigger_threshold))
        if n_trigger < s.trigger_min_pixels:
            return SimulatedImage(true_image=true_image, image=charge, peak_time=None, n_trigger_pixels=0)
        if s.waveforms:
            if self.readout is None:
                raise ValueError(f"camera {self.name}: simulating waveforms needs its CameraReadout")
            waveform, selected_gain_channel = self.readout.render(true_image, mean_time, rng)
            return SimulatedImage(
                true_image=true_image, image=None, peak_time=None, n_trigger_pixels=n_trigger,
                waveform=waveform, selected_gain_channel=selected_gain_channel,
            )
        peak_time = _peak_times(
            true_image,
            rng.normal(0, 1, size=self.n_pixels),
            rng.uniform(0, s.readout_window, size=self.n_pixels),
            mean_time,
            s.pulse_time_spread,
            s.time_jitter,
            s.trigger_time,
            s.readout_window,
        )
        return SimulatedImage(
            true_image=true_image, image=charge, peak_time=peak_time, n_trigger_pixels=n_trigger
        )


class ReadoutModel:
    """A camera read-out's waveform simulation: its pulse shapes and sampling (`CameraReadout`)
    with the digitisation settings of `CameraSimulator`."""

    def __init__(self, readout, settings):
        self.settings = settings
        self.high_gain = PulseShape(readout, 0)
        self.low_gain = PulseShape(readout, 1)
        self.sample_time = self.high_gain.sample_time
        self.n_samples = self.high_gain.n_samples
        # night-sky p.e. reach the window from a pulse length before it to a pulse rise after it
        self.nsb_start = -max(self.high_gain.tail, self.low_gain.tail)
        self.nsb_end = self.n_samples * self.sample_time + max(self.high_gain.lead, self.low_gain.lead)
        self.amplitude_quantiles = single_pe_quantiles(settings.single_pe_resolution)
        self.dc_to_pe = np.array([settings.high_gain_dc_to_pe, settings.low_gain_dc_to_pe])
        self.adc_noise = np.array([settings.high_gain_noise, settings.low_gain_noise])

    def render(self, true_image, mean_time, rng):
        """r1 waveforms (n_pixels, n_samples) and the selected gain channel per pixel; the
        image's p.e.-weighted mean arrival time lies at ``trigger_time`` in the window."""
        s = self.settings
        signal = true_image > 0
        if signal.any():
            reference = np.average(mean_time[signal], weights=true_image[signal])
            signal_time = np.where(signal, mean_time - reference + s.trigger_time, 0.0)
        else:
            signal_time = np.zeros(len(true_image))
        return render_waveforms(
            rng, true_image.astype(np.int64), signal_time, s.photoelectron_time_spread, s.time_jitter,
            s.nsb_rate, self.high_gain.table, self.high_gain.first, self.low_gain.table,
            self.low_gain.first, self.sample_time, self.n_samples, self.nsb_start, self.nsb_end,
            self.amplitude_quantiles, s.adc_pedestal, self.dc_to_pe, self.adc_noise, float(s.adc_max),
            s.gain_switch_threshold,
        )
