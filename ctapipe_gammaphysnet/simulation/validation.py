"""Checks of the simulator against real sim_telarray images and against the geometry conventions.

`simulate_matched` re-simulates every real image of a DL1 file with showers of the same particle,
energy and direction, hitting the same telescope at the same impact distance, and returns
ctapipe's Hillas parameters of both; `major_axis_geometry` measures, for simulated images, how far
the true source lies from the extension of the Hillas major axis and on which side.
"""
import astropy.units as u
import numpy as np
from astropy.table import QTable, Table, vstack
from ctapipe.coordinates import TelescopeFrame
from ctapipe.image import ImageProcessor
from ctapipe.instrument import OpticsDescription, SubarrayDescription, TelescopeDescription
from ctapipe.io import TableLoader
from traitlets.config import Config

from ..constants import PARTICLE_NAMES
from .corsika_reference import corsika_spheres
from .primaries import Primary, rotate_away, sky_direction
from .showers import ShowerModel
from .simulator import ShowerSimulator

__all__ = [
    "read_real_images",
    "simulate_matched",
    "sphere_limited_mirror_areas",
    "compare_medians",
    "major_axis_geometry",
    "noise_pixel_statistics",
    "compare_noise_pixels",
    "pedestal_images",
    "tuned_nsb_rate",
    "observed_conditions",
]

PARAMETERS = ("hillas_intensity", "hillas_width", "hillas_length")


def read_real_images(path, size_type="LST", images=False):
    """Cleaned real images of one telescope size type (valid Hillas parameters) with their truth,
    pointing and site altitude (and with ``images`` the image, peak time and cleaning mask), as
    one table."""
    with TableLoader(
        path, dl1_parameters=True, dl1_images=images, simulated=True, pointing=True
    ) as loader:
        tables = loader.read_telescope_events_by_type()
        site_altitude = loader.read_simulation_configuration()["prod_site_alt"].quantity[0]
    subarray = SubarrayDescription.read(path)
    types = {str(t): t for t in subarray.telescope_types}
    selected = [
        table for key, table in tables.items() if types[key].optics.size_type.name == size_type
    ]
    if not selected:
        raise ValueError(f"{path}: no {size_type} images")
    table = QTable(vstack(selected))
    table = table[np.isfinite(table["hillas_intensity"]) & (table["hillas_width"].value > 0)]
    table.meta["site_altitude"] = site_altitude.to_value(u.m)
    return table, subarray


def _matched_primary(row, telescope_position, rng, atmosphere):
    """A primary like the real one whose axis passes ``true_impact_distance`` from the telescope;
    photon showers start where they reach the real shower maximum, hadron showers at the real
    first-interaction height (their maximum is not set by a single depth).

    sim_telarray's ``true_x_max`` is a vertical depth; the model's depths are slant depths along
    the axis.
    """
    particle = PARTICLE_NAMES[int(row["true_shower_primary_id"])]
    alt, az = row["true_alt"].to_value(u.rad), row["true_az"].to_value(u.rad)
    to_sky = sky_direction(alt, az)
    # the axis passes through the telescope position moved perpendicular to it by the impact
    offset = rotate_away(to_sky, np.pi / 2, rng.uniform(0, 2 * np.pi))[0]
    on_axis = telescope_position - offset * row["true_impact_distance"].to_value(u.m)
    core = on_axis - to_sky * on_axis[2] / to_sky[2]
    energy = row["true_energy"].to_value(u.TeV)
    if particle == "proton":
        first_height = row["true_h_first_int"].to_value(u.m)
        first_depth = float(atmosphere.vertical_depth(first_height)) / to_sky[2]
    else:
        x_max = row["true_x_max"].to_value(u.g / u.cm**2) / to_sky[2]
        first_depth = max(x_max - ShowerModel.depth_of_maximum(energy * 1e3), 1.0)
    return Primary(
        particle=particle,
        energy=energy,
        alt=alt,
        az=az,
        core_x=core[0],
        core_y=core[1],
        first_interaction_depth=first_depth,
    )


def sphere_limited_mirror_areas(simtel_path, subarray):
    """Per telescope of ``subarray``, the mirror area (m²) that sim_telarray could illuminate in
    ``simtel_path``: the optics' mirror area or, where the CORSIKA sphere is smaller, its
    cross-section π r² (the model's mirror is a disc of the mirror's area; sim_telarray traces
    only photons that crossed the sphere)."""
    _, radii = corsika_spheres(simtel_path)
    if max(subarray.tel) > len(radii):
        raise ValueError(f"{simtel_path}: {len(radii)} CORSIKA spheres for telescope ids up to "
                         f"{max(subarray.tel)}")
    return {
        tel_id: min(tel.optics.mirror_area.to_value(u.m**2), np.pi * radii[tel_id - 1] ** 2)
        for tel_id, tel in subarray.tel.items()
    }


def _with_mirror_area(subarray, tel_id, area):
    """The one-telescope ``subarray`` with the mirror area of telescope ``tel_id`` set to ``area``."""
    tel = subarray.tel[tel_id]
    o = tel.optics
    optics = OpticsDescription(
        name=o.name, size_type=o.size_type, n_mirrors=o.n_mirrors,
        equivalent_focal_length=o.equivalent_focal_length,
        effective_focal_length=o.effective_focal_length, mirror_area=area * u.m**2,
        n_mirror_tiles=o.n_mirror_tiles, reflector_shape=o.reflector_shape,
    )
    return SubarrayDescription(
        name=subarray.name,
        tel_positions=subarray.positions,
        tel_descriptions={tel_id: TelescopeDescription(name=tel.name, optics=optics, camera=tel.camera)},
        reference_location=subarray.reference_location,
    )


def simulate_matched(real, subarray, n_per_image=20, seed=0, config=None, images=False,
                     mirror_areas=None):
    """Simulated Hillas parameters of ``n_per_image`` showers matched to each real image.

    ``mirror_areas`` ({tel_id: m²}, `sphere_limited_mirror_areas`) replace the optics' mirror
    areas, so that a real file whose CORSIKA spheres cover only part of the dish is matched like
    for like. Returns a table with the real row index (``real_index``), the true values and the DL1
    parameters of the matched telescope (with ``images`` also its tel_id, image, peak time and
    cleaning mask), for simulated images that survive the cleaning.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for index, row in enumerate(real):
        tel_id = int(row["tel_id"])
        single = subarray.select_subarray([tel_id])
        if mirror_areas is not None:
            single = _with_mirror_area(single, tel_id, mirror_areas[tel_id])
        settings = Config(config or {})
        settings.ShowerSimulator.pointing_alt = float(row["telescope_pointing_altitude"].to_value(u.deg))
        settings.ShowerSimulator.pointing_az = float(row["telescope_pointing_azimuth"].to_value(u.deg))
        settings.ShowerSimulator.site_altitude = float(real.meta["site_altitude"])
        simulator = ShowerSimulator(single, config=settings)
        processor = ImageProcessor(subarray=single, config=settings)
        position = single.positions[tel_id].to_value(u.m)
        for _ in range(n_per_image):
            primary = _matched_primary(row, position, rng, simulator.atmosphere)
            event = simulator.event_of(primary, index, rng)
            if event is None:
                continue
            processor(event)
            dl1 = event.dl1.tel[tel_id]
            hillas = dl1.parameters.hillas
            if not np.isfinite(hillas.intensity) or not hillas.width.value > 0:
                continue
            matched = {
                "real_index": index,
                "true_shower_primary_id": primary.primary_id,
                "true_energy": primary.energy,
                "true_impact_distance": row["true_impact_distance"].to_value(u.m),
                "hillas_intensity": hillas.intensity,
                "hillas_width": hillas.width.to_value(u.deg),
                "hillas_length": hillas.length.to_value(u.deg),
                "n_islands": dl1.parameters.morphology.n_islands,
            }
            if images:
                matched.update(
                    tel_id=tel_id, image=dl1.image, peak_time=dl1.peak_time, image_mask=dl1.image_mask
                )
            rows.append(matched)
    return Table(rows=rows) if rows else Table(names=["real_index", *PARAMETERS])


def compare_medians(real, simulated):
    """Median Hillas intensity, width and length of real and matched simulated images."""
    result = {}
    for name in PARAMETERS:
        real_value = np.median(np.asarray(real[name]))
        simulated_value = np.median(np.asarray(simulated[name]))
        result[name] = (float(real_value), float(simulated_value), float(simulated_value / real_value))
    return result


def major_axis_geometry(table, subarray):
    """For simulated images in ``table`` (TableLoader rows with DL1 parameters, truth and pointing):
    the miss distance (deg) of the true source from the Hillas major axis and the signed distance
    of the source from the image centre along the axis (positive along ``hillas_psi``)."""
    from astropy.coordinates import AltAz, SkyCoord

    pointing = SkyCoord(
        alt=table["telescope_pointing_altitude"].quantity,
        az=table["telescope_pointing_azimuth"].quantity,
        frame=AltAz(),
    )
    source = SkyCoord(alt=table["true_alt"].quantity, az=table["true_az"].quantity, frame=AltAz())
    in_frame = source.transform_to(TelescopeFrame(telescope_pointing=pointing))
    dx = in_frame.fov_lon.to_value(u.deg) - table["hillas_fov_lon"].quantity.to_value(u.deg)
    dy = in_frame.fov_lat.to_value(u.deg) - table["hillas_fov_lat"].quantity.to_value(u.deg)
    psi = table["hillas_psi"].quantity.to_value(u.rad)
    along = dx * np.cos(psi) + dy * np.sin(psi)
    miss = np.abs(-dx * np.sin(psi) + dy * np.cos(psi))
    return miss, along


# quantiles (%) of the charges and relative peak times of the pixels outside the cleaning mask
NOISE_QUANTILES = (1, 5, 25, 50, 75, 95, 99)


def noise_pixel_statistics(table, subarray):
    """Statistics of the pixels without signal of a table of cleaned images (``image``,
    ``peak_time``, ``image_mask``, ``tel_id`` columns), pooled over the images:

    * ``charge``, ``time``: the charges (p.e.) of the pixels outside the cleaning mask and their peak
      times relative to the image's charge-weighted mean time over the mask (ns), all pixels;
    * ``n_outside_main_island``: per image, pixels of the cleaning mask outside its brightest island;
    * ``pedestal_variance``: per image, the charge variance of the pixels more than two neighbour
      rings away from the mask (pedestal-like pixels);
    * ``image_time``: per image, the charge-weighted mean peak time over the mask (ns).
    """
    from ctapipe.image.morphology import number_of_islands

    charges, times, outside_main, variances, image_times = [], [], [], [], []
    for row in table:
        geometry = subarray.tel[int(row["tel_id"])].camera.geometry
        neighbours = geometry.neighbor_matrix_sparse
        image = np.asarray(row["image"], dtype=float)
        peak_time = np.asarray(row["peak_time"], dtype=float)
        mask = np.asarray(row["image_mask"], dtype=bool)
        if not mask.any() or image[mask].sum() <= 0:
            continue
        reference = np.average(peak_time[mask], weights=np.clip(image[mask], 0, None))
        image_times.append(reference)
        charges.append(image[~mask])
        times.append(peak_time[~mask] - reference)
        _, labels = number_of_islands(geometry, mask)
        island_charge = np.bincount(labels, weights=image, minlength=labels.max() + 1)[1:]
        main = np.argmax(island_charge) + 1
        outside_main.append(np.count_nonzero(mask & (labels != main)))
        near = mask.copy()
        for _ in range(2):
            near |= (neighbours @ near.astype(np.int64)) > 0
        if np.count_nonzero(~near) > 10:
            variances.append(np.var(image[~near]))
    return {
        "charge": np.concatenate(charges) if charges else np.array([]),
        "time": np.concatenate(times) if times else np.array([]),
        "n_outside_main_island": np.array(outside_main),
        "pedestal_variance": np.array(variances),
        "image_time": np.array(image_times),
    }


def compare_noise_pixels(real, simulated):
    """Rows (statistic, real, simulated, deviation) comparing two `noise_pixel_statistics`.

    The deviation of a quantile is its difference in units of 10 % of the larger of the real
    quantile's magnitude and the real distribution's width (half the 16–84 % range), so that
    |deviation| <= 1 means "within 10 %" also for quantiles near zero; for the other statistics
    it is the relative difference in units of 10 %.
    """
    rows = []
    for name, unit in (("charge", "p.e."), ("time", "ns")):
        real_values, sim_values = real[name], simulated[name]
        width = 0.5 * np.diff(np.percentile(real_values, [16, 84]))[0]
        for level in NOISE_QUANTILES:
            r, s = np.percentile(real_values, level), np.percentile(sim_values, level)
            rows.append((f"{name} q{level} [{unit}]", r, s, (s - r) / (0.1 * max(abs(r), width))))
    r, s = (np.mean(np.abs(v["time"]) < 3) for v in (real, simulated))
    rows.append(("time fraction within ±3 ns", r, s, (s - r) / (0.1 * r)))
    for name, label, statistic in (
        ("n_outside_main_island", "mask pixels outside the main island (mean)", np.mean),
        ("pedestal_variance", "pedestal-like charge variance [p.e.²] (median)", np.median),
    ):
        r, s = statistic(real[name]), statistic(simulated[name])
        rows.append((label, r, s, (s - r) / (0.1 * r) if r else np.inf if s else 0.0))
    return rows


def pedestal_images(subarray, tel_id, n_images=10, seed=0, config=None):
    """Images (n_images, n_pixels) that ctapipe's CameraCalibrator makes of simulated read-outs of
    telescope ``tel_id`` without any Cherenkov light: the simulation's pedestal events."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.containers import ArrayEventContainer, R1CameraContainer

    from .camera import CameraSimulator, ReadoutModel

    settings = CameraSimulator(config=Config(config or {}))
    camera = subarray.tel[tel_id].camera
    model = ReadoutModel(camera.readout, settings)
    calibrator = CameraCalibrator(subarray.select_subarray([tel_id]), config=Config(config or {}))
    n_pixels = camera.geometry.n_pixels
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        waveform, gain = model.render(np.zeros(n_pixels, np.int64), np.full(n_pixels, np.nan), rng)
        event = ArrayEventContainer()
        event.r1.tel[tel_id] = R1CameraContainer(
            waveform=waveform[np.newaxis], selected_gain_channel=gain, pixel_status=np.zeros(n_pixels, np.uint8)
        )
        event.monitoring.tel[tel_id].camera.coefficients.outlier_mask = np.zeros((2, n_pixels), bool)
        calibrator(event)
        images.append(event.dl1.tel[tel_id].image)
    return np.array(images)


def tuned_nsb_rate(subarray, tel_id, pedestal_variance, config=None, rates=(0.15, 0.35)):
    """Night-sky background rate (p.e./ns) whose simulated pedestal events have the given charge
    variance (as lstchain tunes its simulations to the pedestal noise of data): the variance is
    linear in the rate, so two rates are simulated and interpolated."""
    variances = []
    for rate in rates:
        settings = Config(config or {})
        settings.CameraSimulator.nsb_rate = rate
        variances.append(np.var(pedestal_images(subarray, tel_id, n_images=8, seed=7, config=settings)))
    slope = (variances[1] - variances[0]) / (rates[1] - rates[0])
    return float(max(rates[0] + (pedestal_variance - variances[0]) / slope, 0.0))


def observed_conditions(real, subarray, faint_mask=200):
    """`CameraSimulator` settings for the conditions of real images (a table with images, one
    telescope type): the NSB rate from the pedestal-like charge variance of the images with at
    most ``faint_mask`` pixels in the cleaning mask (bigger images leave no pixels without light;
    without such images the default rate stays) and the trigger time from the images' mean time."""
    conditions = {"trigger_time": float(np.median(noise_pixel_statistics(real, subarray)["image_time"]))}
    faint = real[np.sum(np.asarray(real["image_mask"]), axis=1) <= faint_mask]
    variances = noise_pixel_statistics(faint, subarray)["pedestal_variance"]
    if len(variances):
        conditions["nsb_rate"] = tuned_nsb_rate(subarray, int(real["tel_id"][0]), float(np.median(variances)))
    return conditions
