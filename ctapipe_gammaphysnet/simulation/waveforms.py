"""Pixel waveforms of a camera read-out, as sim_telarray writes them, in numba kernels.

Photo-electrons from the shower and from the night-sky background (a Poisson process in time over
the read-out window and the pulse length before it) each add the camera's reference pulse, scaled
by an amplitude from the single-p.e. spectrum, to the pixel's samples. The samples are digitised
with pedestal and electronic noise in the high-gain channel, pixels whose high gain goes above
the gain-switch threshold are read out in the low gain instead, and the selected channel is
calibrated as ctapipe's `SimTelEventSource` calibrates sim_telarray's ADC samples:
r1 = (adc − pedestal) × dc_to_pe, in p.e. per sample (the full pulse of one p.e. sums to 1).
"""
import numpy as np
from numba import njit
from scipy.stats import gamma

__all__ = ["PulseShape", "single_pe_quantiles", "render_waveforms"]

# sub-sample phases at which the pulse is tabulated: 1/64 sample (15 ps for LST), far below the
# photo-electrons' time spread
_N_PHASES = 64
# quantiles tabulating the single-p.e. amplitude spectrum
_N_AMPLITUDES = 1024


class PulseShape:
    """A gain channel's reference pulse shape of a `CameraReadout`, tabulated per sample.

    ``table[phase, j]`` is the r1 signal (p.e. per sample, summing to 1 over the pulse) of one
    photo-electron in sample ``i0 + j``, where ``i0`` is the first sample at or after the pulse's
    start (``first`` samples from its peak, negative) and ``phase / N`` the fraction of a sample
    between the two. The pulse is cut where it falls below 10⁻³ of its maximum; ``lead`` and
    ``tail`` (ns) are its extent before and after the peak.
    """

    def __init__(self, readout, channel):
        if readout.reference_pulse_shape is None or len(readout.reference_pulse_shape) == 0:
            raise ValueError(f"camera read-out {readout.name}: no reference pulse shape to simulate waveforms")
        if not readout.n_samples or readout.n_samples < 2:
            raise ValueError(f"camera read-out {readout.name}: needs at least 2 samples, got {readout.n_samples}")
        shapes = np.asarray(readout.reference_pulse_shape, dtype=float)
        shape = shapes[min(channel, len(shapes) - 1)]
        step = readout.reference_pulse_sample_width.to_value("ns")
        self.sample_time = 1 / readout.sampling_rate.to_value("GHz")
        self.n_samples = int(readout.n_samples)
        area = shape.sum() * step
        if not area > 0:
            raise ValueError(f"camera read-out {readout.name}: reference pulse of channel {channel} has no "
                             "positive area")
        # p.e. per sample for a pulse of unit area sampled every ``sample_time``
        per_sample = shape / area * self.sample_time
        significant = np.nonzero(np.abs(shape) > 1e-3 * shape.max())[0]
        start, stop = significant[0], significant[-1] + 1
        time = (np.arange(len(shape)) - shape.argmax()) * step  # ns from the pulse peak
        # the pulse starts ``first`` samples (negative) from its peak
        self.first = time[start] / self.sample_time
        n_taps = int(np.ceil((time[stop - 1] - time[start]) / self.sample_time)) + 1
        offsets = (np.arange(n_taps)[np.newaxis, :] + np.arange(_N_PHASES)[:, np.newaxis] / _N_PHASES)
        self.table = np.interp(
            self.first * self.sample_time + offsets * self.sample_time, time[start:stop], per_sample[start:stop],
            left=0.0, right=0.0,
        )
        self.lead = max(-time[start], 0.0)
        self.tail = max(time[stop - 1], 0.0)


def single_pe_quantiles(resolution):
    """Quantiles of the single-p.e. amplitude spectrum: a gamma distribution of mean 1 and
    relative width ``resolution`` (positive, with a tail to large amplitudes)."""
    levels = (np.arange(_N_AMPLITUDES) + 0.5) / _N_AMPLITUDES
    if resolution == 0:
        return np.ones(_N_AMPLITUDES)
    shape = 1 / resolution**2
    quantiles = gamma.ppf(levels, shape, scale=1 / shape)
    return quantiles / quantiles.mean()


@njit(cache=True, fastmath=True)
def _add_pulses(buffer, offset, times, amplitudes, n, table, first, sample_time):
    """Add the pulses of ``n`` photo-electrons (peak times in ns from the window start) to
    ``buffer``, whose sample ``offset`` is the window's first sample (padded so that every
    pulse starting from the tabulated range of times fits)."""
    n_phases, n_taps = table.shape
    for p in range(n):
        # sample coordinate of the pulse's first tabulated point; sample i0 is the first one on it
        start = times[p] / sample_time + first
        i0 = int(np.ceil(start))
        phase = min(int((i0 - start) * n_phases), n_phases - 1)
        a = amplitudes[p]
        # contiguous views let LLVM vectorise the loop (2-3x faster than 2-d indexing)
        row = table[phase]
        segment = buffer[offset + i0 : offset + i0 + n_taps]
        for j in range(n_taps):
            segment[j] += a * row[j]


@njit(cache=True)
def _digitize(samples, nsb_level, pedestal, dc_to_pe, noise, adc_max, rng, adc):
    """ADC counts of one channel (rounded, clipped to the ADC range); the largest count."""
    largest = 0.0
    for i in range(len(adc)):
        value = np.rint(pedestal + (samples[i] - nsb_level) / dc_to_pe + noise * rng.standard_normal())
        adc[i] = min(max(value, 0.0), adc_max)
        largest = max(largest, adc[i])
    return largest


@njit(cache=True)
def render_waveforms(
    rng, true_image, signal_time, photoelectron_time_spread, time_jitter, nsb_rate, high_table,
    high_first, low_table, low_first, sample_time, n_samples, nsb_start, nsb_end,
    amplitude_quantiles, pedestal, dc_to_pe, adc_noise, adc_max, gain_threshold,
):
    """Calibrated r1 waveforms (float32, p.e. per sample) of the selected gain channel and the
    selected channel per pixel (int8, 0 = high, 1 = low).

    ``signal_time``: each pixel's mean photo-electron arrival time in the window (ns), around
    which its p.e. spread by ``photoelectron_time_spread``, shifted together by
    ``time_jitter``; night-sky p.e. arrive at ``nsb_rate`` per ns from ``nsb_start`` to
    ``nsb_end`` (ns from the window start: the pulse's length before the window to its rise
    after it); p.e. outside that range do not reach the window. The mean night-sky level is not
    part of the pedestal (AC coupling: sim_telarray's LST pedestal is the bare baseline).
    """
    n_pixels = len(true_image)
    nsb_duration = nsb_end - nsb_start
    nsb_mean = nsb_rate * nsb_duration
    nsb_level = nsb_rate * sample_time  # mean r1 of the night-sky background per sample
    n_amplitudes = len(amplitude_quantiles)
    # room for any pulse reaching into the window from either side
    pad = 2 * max(high_table.shape[1], low_table.shape[1]) + 2
    r1 = np.empty((n_pixels, n_samples), dtype=np.float32)
    selected = np.zeros(n_pixels, dtype=np.int8)
    capacity = 64
    times = np.empty(capacity)
    amplitudes = np.empty(capacity)
    buffer = np.empty(n_samples + 2 * pad)
    adc = np.empty(n_samples)
    for k in range(n_pixels):
        n_nsb = rng.poisson(nsb_mean)
        n_signal = true_image[k]
        if n_nsb + n_signal > capacity:
            capacity = 2 * (n_nsb + n_signal)
            times = np.empty(capacity)
            amplitudes = np.empty(capacity)
        for p in range(n_nsb):
            # one uniform number for both: its leading 20 bits give the time, the next ten the
            # amplitude's quantile
            u = rng.random() * 1048576.0
            whole = np.floor(u)
            times[p] = nsb_start + whole / 1048576.0 * nsb_duration
            amplitudes[p] = amplitude_quantiles[int((u - whole) * n_amplitudes)]
        n = n_nsb
        if n_signal > 0:
            centre = signal_time[k] + time_jitter * rng.standard_normal()
            for _ in range(n_signal):
                time = centre + photoelectron_time_spread * rng.standard_normal()
                amplitude = amplitude_quantiles[int(rng.random() * n_amplitudes)]
                if nsb_start <= time < nsb_end:
                    times[n] = time
                    amplitudes[n] = amplitude
                    n += 1

        buffer[:] = 0.0
        _add_pulses(buffer, pad, times, amplitudes, n, high_table, high_first, sample_time)
        window = buffer[pad : pad + n_samples]
        largest = _digitize(window, nsb_level, pedestal, dc_to_pe[0], adc_noise[0], adc_max, rng, adc)
        if largest > gain_threshold:
            selected[k] = 1
            buffer[:] = 0.0
            _add_pulses(buffer, pad, times, amplitudes, n, low_table, low_first, sample_time)
            _digitize(window, nsb_level, pedestal, dc_to_pe[1], adc_noise[1], adc_max, rng, adc)
        gain = dc_to_pe[selected[k]]
        for i in range(n_samples):
            r1[k, i] = (adc[i] - pedestal) * gain
    return r1, selected
