"""lstchain DL1 files in, lstchain DL2 files out (the layout of lstchain 0.12).

LST-1 is analysed with lstchain, whose DL1 files hold one table of images and one of parameters for
LST-1 (tel_id 1), with the Monte Carlo truth as ``mc_*`` columns (observed runs have none), and the
instrument under ``/configuration/instrument`` (``SubarrayDescription.from_hdf`` reads it). This
module hands the training stream and ``ctapipe-apply-gammaphysnet`` the same columns, units and
pixel order as ctapipe DL1 (``read_telescope_events``) and writes the DL2 table that lstchain's
IRF and DL3 tools read (``write_dl2``). Names and units are taken from lstchain 0.12.3's source:
see docs/lstchain.rst.
"""
from pathlib import Path

import astropy.units as u
import numpy as np
import tables
from astropy.coordinates import AltAz, SkyCoord
from astropy.table import Table
from ctapipe.coordinates import CameraFrame
from ctapipe.instrument import SubarrayDescription

__all__ = ["DL1_IMAGES", "DL1_PARAMETERS", "DL2_PARAMETERS", "LSTChainFileError", "TEL_ID",
           "is_lstchain_dl1", "n_telescope_events", "has_truth", "read_subarray",
           "read_primary_ids", "read_telescope_events", "read_parameters", "dl2_columns",
           "write_dl2"]

# lstchain.io.io: dl1_images_lstcam_key, dl1_params_lstcam_key, dl2_params_lstcam_key
DL1_IMAGES = "/dl1/event/telescope/image/LST_LSTCam"
DL1_PARAMETERS = "/dl1/event/telescope/parameters/LST_LSTCam"
DL2_PARAMETERS = "/dl2/event/telescope/parameters/LST_LSTCam"
# lstchain processes LST-1 only
TEL_ID = 1

# lstchain column → ctapipe DL1 column, where both mean the same quantity. lstchain's Hillas
# position and angles (x, y, r, phi, psi, in m and rad) are in the CameraFrame, ctapipe's
# (hillas_fov_lon, …) in the TelescopeFrame: they are left out rather than renamed.
PARAMETER_COLUMNS = {
    "intensity": "hillas_intensity",
    "length": "hillas_length",
    "width": "hillas_width",
    "skewness": "hillas_skewness",
    "kurtosis": "hillas_kurtosis",
    "leakage_intensity_width_1": "leakage_intensity_width_1",
    "leakage_intensity_width_2": "leakage_intensity_width_2",
    "leakage_pixels_width_1": "leakage_pixels_width_1",
    "leakage_pixels_width_2": "leakage_pixels_width_2",
    "concentration_cog": "concentration_cog",
    "concentration_core": "concentration_core",
    "concentration_pixel": "concentration_pixel",
    "n_pixels": "morphology_n_pixels",
    "n_islands": "morphology_n_islands",
}
POINTING_COLUMNS = {"alt_tel": "telescope_pointing_altitude", "az_tel": "telescope_pointing_azimuth"}
# Monte Carlo truth; lstchain's mc_type is the CORSIKA-style id of ctapipe (gamma 0, proton 101)
TRUTH_COLUMNS = {
    "mc_energy": "true_energy",
    "mc_alt": "true_alt",
    "mc_az": "true_az",
    "mc_core_x": "true_core_x",
    "mc_core_y": "true_core_y",
    "mc_h_first_int": "true_h_first_int",
    "mc_x_max": "true_x_max",
    "mc_type": "true_shower_primary_id",
}
# units of lstchain's columns (lstchain.io.lstcontainers.DL1ParametersContainer), for files whose
# tables carry no unit attributes
UNITS = {"length": u.deg, "width": u.deg, "alt_tel": u.rad, "az_tel": u.rad, "mc_energy": u.TeV,
         "mc_alt": u.rad, "mc_az": u.rad, "mc_core_x": u.m, "mc_core_y": u.m,
         "mc_h_first_int": u.m, "mc_x_max": u.g / u.cm**2}
# lstchain.io.io.HDF5_ZSTD_FILTERS
FILTERS = tables.Filters(complevel=1, complib="blosc:zstd", fletcher32=True, bitshuffle=False)
# lstchain's reconstructed particle type (lstchain.reco.dl1_to_dl2.apply_models)
GAMMA_TYPE, PROTON_TYPE = 0, 101
# reco_type of an image without prediction (outside the image selection)
NO_TYPE = -1


class LSTChainFileError(ValueError):
    """An lstchain file cannot be used; the message names the file and the problem."""


def is_lstchain_dl1(path):
    """True if ``path`` is an HDF5 file with lstchain's DL1 image table."""
    try:
        with tables.open_file(path, mode="r") as h5:
            return DL1_IMAGES in h5
    except (tables.HDF5ExtError, OSError):
        return False


def _check_layout(h5, path):
    for node in (DL1_IMAGES, DL1_PARAMETERS):
        if node not in h5:
            raise LSTChainFileError(f"{path}: lstchain DL1 file without {node}")
    images, parameters = h5.get_node(DL1_IMAGES), h5.get_node(DL1_PARAMETERS)
    if images.nrows != parameters.nrows:
        raise LSTChainFileError(
            f"{path}: {images.nrows} images but {parameters.nrows} parameter rows; lstchain "
            "writes one of each per event")
    if "peak_time" not in images.colnames:
        raise LSTChainFileError(f"{path}: the image table has no peak_time column")
    return images, parameters


def n_telescope_events(path):
    """Number of LST-1 events (rows of the image and parameter tables)."""
    with tables.open_file(path, mode="r") as h5:
        return _check_layout(h5, path)[1].nrows


def has_truth(path):
    """True for Monte Carlo files (the parameter table has lstchain's ``mc_*`` columns)."""
    with tables.open_file(path, mode="r") as h5:
        return set(TRUTH_COLUMNS) <= set(_check_layout(h5, path)[1].colnames)


def read_primary_ids(path):
    """``true_shower_primary_id`` of every event (lstchain's ``mc_type``)."""
    with tables.open_file(path, mode="r") as h5:
        return h5.get_node(DL1_PARAMETERS).col("mc_type")


def read_subarray(path):
    """The subarray (LST-1 with its camera) that lstchain stored in the file."""
    try:
        subarray = SubarrayDescription.from_hdf(path)
    except (KeyError, OSError, tables.NoSuchNodeError) as err:
        raise LSTChainFileError(
            f"{path}: cannot read the instrument description (/configuration/instrument): {err}"
        ) from None
    if TEL_ID not in subarray.tel:
        raise LSTChainFileError(f"{path}: the instrument description has no LST-1 (tel_id 1)")
    return subarray


def read_parameters(path, start=None, stop=None):
    """lstchain's own parameter rows (structured array), untouched."""
    with tables.open_file(path, mode="r") as h5:
        return _check_layout(h5, path)[1].read(start, stop)


def _quantity(parameters, name, attrs):
    """A column with its unit: the table's own unit attribute (ctapipe's writer), else lstchain's."""
    index = list(parameters.dtype.names).index(name)
    unit = attrs[f"CTAFIELD_{index}_UNIT"] if f"CTAFIELD_{index}_UNIT" in attrs else UNITS.get(name)
    values = parameters[name]
    return values if unit is None else u.Quantity(values, unit)


def read_telescope_events(path, start=None, stop=None, subarray=None, images=True):
    """LST-1 events ``start:stop`` as ctapipe's ``TableLoader`` gives them.

    Columns: ``obs_id, event_id, tel_id``, ``image`` and ``peak_time`` (p.e. and ns, lstchain's
    pixel order, which is the camera's: checked against ``ctapipe-process`` in the tests), the DL1
    parameters of ``PARAMETER_COLUMNS`` under ctapipe's names, the fixed pointing
    (``telescope_pointing_altitude/azimuth``), the telescope position (``pos_x/y``) and, for
    Monte Carlo files, the truth (``true_*``). ``images=False`` reads the parameters alone.
    """
    subarray = subarray or read_subarray(path)
    with tables.open_file(path, mode="r") as h5:
        image_table, parameter_table = _check_layout(h5, path)
        parameters = parameter_table.read(start, stop)
        attrs = parameter_table.attrs
        if not all(np.array_equal(image_table.read(start, stop, field=key), parameters[key])
                   for key in ("obs_id", "event_id")):
            raise LSTChainFileError(
                f"{path}: rows {start}-{stop} of the image and parameter tables are different "
                "events (obs_id, event_id)")
        table = Table({"obs_id": parameters["obs_id"].astype(np.int64),
                       "event_id": parameters["event_id"].astype(np.int64),
                       "tel_id": np.full(len(parameters), TEL_ID, dtype=np.int16)})
        if images:
            table["image"] = image_table.read(start, stop, field="image")
            table["peak_time"] = image_table.read(start, stop, field="peak_time")
        for names in (PARAMETER_COLUMNS, POINTING_COLUMNS, TRUTH_COLUMNS):
            for lst_name, name in names.items():
                if lst_name in parameters.dtype.names:
                    table[name] = _quantity(parameters, lst_name, attrs)
    x, y = subarray.positions[TEL_ID][:2]
    table["pos_x"] = np.full(len(table), x.to_value(u.m)) * u.m
    table["pos_y"] = np.full(len(table), y.to_value(u.m)) * u.m
    return table


def dl2_columns(parameters, energy, alt, az, gammaness, focal_length):
    """lstchain's DL2 columns for γ-PhysNet's predictions of the events ``parameters``.

    As ``lstchain.reco.dl1_to_dl2.apply_models`` (0.12.3) writes them: ``reco_energy`` and
    ``log_reco_energy`` (TeV), ``reco_alt``/``reco_az`` (rad), the source position in the
    ``CameraFrame`` of the effective focal length (``reco_src_x/y``, m; lstchain's
    ``utils.sky_to_camera``) and its offset from the image centroid (``reco_disp_dx/dy``,
    ``reco_disp_norm``, ``reco_disp_sign`` along ``psi``), ``signed_time_gradient`` and
    ``signed_skewness`` (sign from the reconstructed source), ``gammaness`` and ``reco_type``
    (0 gamma, 101 proton). Images without prediction (outside the image selection) have NaN
    and ``reco_type`` -1.

    Parameters
    ----------
    parameters : numpy structured array
        lstchain's DL1 parameter rows (``read_parameters``).
    energy : Quantity
    alt, az : Quantity
        Reconstructed direction.
    gammaness : array
    focal_length : Quantity
        The telescope's effective focal length, as lstchain uses.
    """
    alt, az = u.Quantity(alt, u.rad), u.Quantity(az, u.rad)
    # lstchain takes the simulated pointing where there is one (mc_alt_tel), else the drive's
    prefix = "mc_" if "mc_alt_tel" in parameters.dtype.names else ""
    pointing = SkyCoord(alt=parameters[f"{prefix}alt_tel"] * u.rad,
                        az=parameters[f"{prefix}az_tel"] * u.rad, frame=AltAz())
    valid = np.isfinite(alt) & np.isfinite(az)
    source = SkyCoord(alt=np.where(valid, alt, pointing.alt), az=np.where(valid, az, pointing.az),
                      frame=AltAz())
    camera = source.transform_to(CameraFrame(focal_length=focal_length, telescope_pointing=pointing))
    src_x = np.where(valid, camera.x.to_value(u.m), np.nan)
    src_y = np.where(valid, camera.y.to_value(u.m), np.nan)
    disp_dx, disp_dy = src_x - parameters["x"], src_y - parameters["y"]
    # longitudinal offset of the source along the major axis (lstchain: camera_to_shower_coordinates)
    longitudinal = disp_dx * np.cos(parameters["psi"]) + disp_dy * np.sin(parameters["psi"])
    energy = u.Quantity(energy, u.TeV).to_value(u.TeV)
    gammaness = np.asarray(gammaness, dtype=np.float64)
    return {
        "log_reco_energy": np.log10(energy),
        "reco_energy": energy,
        "reco_disp_norm": np.hypot(disp_dx, disp_dy),
        "reco_disp_sign": np.sign(longitudinal),
        "reco_disp_dx": disp_dx,
        "reco_disp_dy": disp_dy,
        "reco_src_x": src_x,
        "reco_src_y": src_y,
        "signed_time_gradient": -np.sign(longitudinal) * parameters["time_gradient"],
        "signed_skewness": -np.sign(longitudinal) * parameters["skewness"],
        "reco_alt": alt.to_value(u.rad),
        "reco_az": az.to_value(u.rad),
        "gammaness": gammaness,
        "reco_type": np.where(np.isfinite(gammaness),
                              np.where(gammaness > 0.5, GAMMA_TYPE, PROTON_TYPE),
                              NO_TYPE).astype(np.int64),
    }


def _group(h5, path):
    if path in h5:
        return h5.get_node(path)
    parent, name = path.rsplit("/", 1)
    return h5.create_group(parent or "/", name, createparents=True)


def write_dl2(input_path, output_path, chunks):
    """Write an lstchain DL2 file: what ``lstchain_dl1_to_dl2`` (0.12.3) writes.

    Every node of the DL1 file but the image and parameter tables is copied (the instrument, the
    simulation configuration ``/simulation/run_config`` that the IRF tools read, monitoring …),
    and the DL1 parameter rows with the ``dl2_columns`` appended become the table
    ``/dl2/event/telescope/parameters/LST_LSTCam`` (a plain PyTables table, as lstchain's
    ``io.write_dataframe`` makes from its pandas DataFrame).

    Parameters
    ----------
    input_path, output_path : path-like
        ``output_path`` is written directly: give a temporary name and rename it when done.
    chunks : iterable of (parameters, columns)
        lstchain parameter rows and their DL2 columns, in file order.
    """
    input_path = Path(input_path)
    with tables.open_file(input_path, mode="r") as h5in, \
            tables.open_file(output_path, mode="w") as h5:
        h5in.root._v_attrs._f_copy(h5.root)
        for leaf in h5in.walk_nodes("/", "Leaf"):
            if leaf._v_pathname not in (DL1_IMAGES, DL1_PARAMETERS):
                leaf._f_copy(_group(h5, leaf._v_parent._v_pathname))
        attrs = h5in.get_node(DL1_PARAMETERS).attrs
        config = attrs["config"] if "config" in attrs else None
        table = None
        for parameters, columns in chunks:
            rows = np.empty(len(parameters), dtype=[
                (name, parameters.dtype[name]) for name in parameters.dtype.names] + [
                (name, np.asarray(values).dtype.str) for name, values in columns.items()])
            for name in parameters.dtype.names:
                rows[name] = parameters[name]
            for name, values in columns.items():
                rows[name] = values
            if table is None:
                group, name = DL2_PARAMETERS.rsplit("/", 1)
                table = h5.create_table(group, name, rows, createparents=True, filters=FILTERS)
                if config is not None:
                    table.attrs["config"] = config
            else:
                table.append(rows)
        if table is None:
            raise LSTChainFileError(f"{input_path}: no events to write")
