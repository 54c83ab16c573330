"""The simulated camera read-out: waveforms through ctapipe's own CameraCalibrator."""
import numpy as np
import pytest
import tables
from ctapipe.calib import CameraCalibrator
from ctapipe.containers import ArrayEventContainer, R1CameraContainer
from ctapipe.image.extractor import integration_correction
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.simulation.camera import CameraSimulator, ReadoutModel
from ctapipe_gammaphysnet.simulation.waveforms import PulseShape

N_IMAGES = 6


@pytest.fixture(scope="module")
def lst(lst1_subarray):
    settings = CameraSimulator()
    readout = lst1_subarray.tel[1].camera.readout
    return settings, ReadoutModel(readout, settings), CameraCalibrator(lst1_subarray), readout


def calibrate(calibrator, waveform, selected_gain_channel):
    """DL1 image and peak time that ctapipe-process's default calibration makes of r1 waveforms."""
    n_pixels = len(waveform)
    event = ArrayEventContainer()
    event.r1.tel[1] = R1CameraContainer(
        waveform=waveform[np.newaxis], selected_gain_channel=selected_gain_channel,
        pixel_status=np.zeros(n_pixels, np.uint8),
    )
    event.monitoring.tel[1].camera.coefficients.outlier_mask = np.zeros((2, n_pixels), bool)
    calibrator(event)
    return event.dl1.tel[1].image, event.dl1.tel[1].peak_time


def test_pulse_tables_sum_to_one_photoelectron(lst):
    """Every sub-sample phase of the tabulated pulse carries one p.e. (the r1 convention)."""
    _, model, _, _ = lst
    for pulse in (model.high_gain, model.low_gain):
        assert np.allclose(pulse.table.sum(axis=1), 1.0, atol=0.01)
        assert pulse.lead > 0 and pulse.tail > pulse.lead


def test_bright_pixels_give_the_true_charge_back(lst):
    """Pixels of 30-2000 p.e. (high gain below ~150 p.e., low gain above) at a common time come
    back from ctapipe's NeighborPeakWindowSum with their true charge: no bias beyond the charge
    lost by the photo-electrons' time spread outside the 7-sample window (a few %) and a
    resolution close to Poisson × the single-p.e. excess noise."""
    settings, model, calibrator, _ = lst
    rng = np.random.default_rng(1)
    n_pixels = 1855
    true_image = np.zeros(n_pixels, dtype=np.int64)
    levels = {30: slice(0, 300), 300: slice(300, 600), 2000: slice(600, 700)}
    ratios = {level: [] for level in levels}
    pulls = {level: [] for level in levels}
    gains = {level: [] for level in levels}
    for _ in range(N_IMAGES):
        for level, pixels in levels.items():
            true_image[pixels] = rng.poisson(level, pixels.stop - pixels.start)
        waveform, gain = model.render(true_image, np.full(n_pixels, 5.0), rng)
        image, peak_time = calibrate(calibrator, waveform, gain)
        for level, pixels in levels.items():
            ratios[level].append(image[pixels] / true_image[pixels])
            pulls[level].append((image[pixels] - true_image[pixels]) / np.sqrt(true_image[pixels]))
            gains[level].append(gain[pixels])
            assert np.median(np.abs(peak_time[pixels] - settings.trigger_time)) < 0.5
    excess = np.sqrt(1 + settings.single_pe_resolution**2)
    for level in levels:
        ratio, pull = np.concatenate(ratios[level]), np.concatenate(pulls[level])
        assert 0.93 < np.median(ratio) < 1.02, (level, np.median(ratio))
        # Poisson × excess noise, plus night-sky background, electronic noise and the time spread
        assert np.std(pull) < 1.6 * excess, (level, np.std(pull))
    assert np.all(np.concatenate(gains[30]) == 0)
    assert np.all(np.concatenate(gains[2000]) == 1)


def _window_sum_variance(pulse, rate, m2, noise_pe, width):
    """Campbell's theorem: variance of the sum of ``width`` consecutive r1 samples for p.e.
    arriving at ``rate`` with amplitude second moment ``m2``, plus white noise per sample."""
    n_phases, n_taps = pulse.table.shape
    total = 0.0
    # a p.e. whose pulse starts i0 samples (and a phase) before the window's first sample
    for i0 in range(-n_taps, width + 1):
        for phase in range(n_phases):
            j = np.arange(n_taps)
            inside = (i0 + j >= 0) & (i0 + j < width)
            total += pulse.table[phase, inside].sum() ** 2
    return rate * m2 * total * pulse.sample_time / n_phases + width * noise_pe**2


def test_noise_pixels_as_ctapipe_extracts_pedestal_like_input(lst):
    """Pixels with night-sky background only: the r1 samples have zero mean (AC coupling) and the
    variance and neighbour covariance of a Poisson process of pulses (Campbell's theorem); the
    extracted charge has no bias (the window is placed by the neighbours' peak) and the variance
    of a 7-sample sum with ctapipe's integration correction; the peak times spread over the whole
    read-out window."""
    settings, model, calibrator, readout = lst
    rng = np.random.default_rng(2)
    n_pixels = 1855
    samples, charges, times = [], [], []
    for _ in range(N_IMAGES):
        waveform, gain = model.render(np.zeros(n_pixels, np.int64), np.full(n_pixels, np.nan), rng)
        assert np.all(gain == 0)
        image, peak_time = calibrate(calibrator, waveform, gain)
        samples.append(waveform)
        charges.append(image)
        times.append(peak_time)
    samples, charge, peak_time = np.concatenate(samples), np.concatenate(charges), np.concatenate(times)

    m2 = np.mean(model.amplitude_quantiles**2)
    noise_pe = np.hypot(settings.high_gain_noise, np.sqrt(1 / 12)) * settings.high_gain_dc_to_pe
    pulse = PulseShape(readout, 0)
    assert abs(samples.mean()) < 0.005
    for width in (1, 2):
        expected = _window_sum_variance(pulse, settings.nsb_rate, m2, noise_pe, width)
        assert np.var(samples[:, 10 : 10 + width].sum(axis=1)) == pytest.approx(expected, rel=0.05), width

    correction = integration_correction(
        readout.reference_pulse_shape, readout.reference_pulse_sample_width.to_value("ns"),
        1 / readout.sampling_rate.to_value("GHz"), 7, 3,
    )[0]
    window_variance = correction**2 * _window_sum_variance(pulse, settings.nsb_rate, m2, noise_pe, 7)
    assert abs(charge.mean()) < 4 * charge.std() / np.sqrt(len(charge))
    # windows clipped at the read-out's ends hold fewer samples: a little less variance
    assert 0.85 * window_variance < np.var(charge) < 1.02 * window_variance
    window = readout.n_samples / readout.sampling_rate.to_value("GHz")
    thirds = np.histogram(peak_time, bins=3, range=(0, window))[0] / len(peak_time)
    assert np.all(thirds > 0.25), thirds
    assert np.std(peak_time) > 0.25 * window


def test_simulated_file_has_images_from_the_waveforms(simulated_dl1_files):
    """A file written by ctapipe-simulate-showers (the waveform read-out by default) reads back with
    images and finite peak times everywhere; the pixels without signal carry the extractor's
    noise (charges of both signs, times over the whole window), no waveforms are written."""
    path = simulated_dl1_files["gamma_diffuse"]
    with TableLoader(path, dl1_images=True, true_images=True, dl1_parameters=False) as loader:
        events = loader.read_telescope_events()
    image = np.asarray(events["image"])
    peak_time = np.asarray(events["peak_time"])
    true_image = np.asarray(events["true_image"])
    assert len(events) > 20 and image.dtype == np.float32
    assert np.all(np.isfinite(image)) and np.all(np.isfinite(peak_time))
    with tables.open_file(path) as h5:
        assert "/r1" not in h5 and "/dl0" not in h5
    dark = true_image == 0
    assert np.mean(image[dark] < 0) > 0.4 and np.percentile(image[dark], 99) > 2
    assert np.std(peak_time[dark]) > 8
    bright = true_image > 50
    assert 0.9 < np.median(image[bright] / true_image[bright]) < 1.02
