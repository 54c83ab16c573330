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
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import TableLoader
from traitlets.config import Config

from ..constants import PARTICLE_NAMES
from .primaries import Primary, rotate_away, sky_direction
from .showers import ShowerModel
from .simulator import ShowerSimulator

__all__ = ["read_real_images", "simulate_matched", "compare_medians", "major_axis_geometry"]

PARAMETERS = ("hillas_intensity", "hillas_width", "hillas_length")


def read_real_images(path, size_type="LST"):
    """Cleaned real images of one telescope size type (valid Hillas parameters) with their truth,
    pointing and site altitude, as one table."""
    with TableLoader(path, dl1_parameters=True, simulated=True, pointing=True) as loader:
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
    first-interaction height (their maximum is not set by a single depth)."""
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
        x_max = row["true_x_max"].to_value(u.g / u.cm**2)
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


def simulate_matched(real, subarray, n_per_image=20, seed=0, config=None):
    """Simulated Hillas parameters of ``n_per_image`` showers matched to each real image.

    Returns a table with the real row index (``real_index``), the true values and the DL1
    parameters of the matched telescope, for simulated images that survive the cleaning.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for index, row in enumerate(real):
        tel_id = int(row["tel_id"])
        single = subarray.select_subarray([tel_id])
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
            hillas = event.dl1.tel[tel_id].parameters.hillas
            if not np.isfinite(hillas.intensity) or not hillas.width.value > 0:
                continue
            rows.append(
                {
                    "real_index": index,
                    "true_shower_primary_id": primary.primary_id,
                    "true_energy": primary.energy,
                    "true_impact_distance": row["true_impact_distance"].to_value(u.m),
                    "hillas_intensity": hillas.intensity,
                    "hillas_width": hillas.width.to_value(u.deg),
                    "hillas_length": hillas.length.to_value(u.deg),
                    "n_islands": event.dl1.tel[tel_id].parameters.morphology.n_islands,
                }
            )
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
