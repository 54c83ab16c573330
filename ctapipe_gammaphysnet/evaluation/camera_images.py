"""The camera images of the report: the brightest DL1 images in the DL2 files, read again with
their telescope-level rows, and the predictions of every reconstructor for each of them.

Half gammas, half background where both exist; the positions the figure marks (true and
reconstructed source, Hillas ellipse) are in the image's ``TelescopeFrame``.
"""
import astropy.units as u
import numpy as np
import tables
from astropy.coordinates import AltAz, SkyCoord
from astropy.table import QTable
from ctapipe.coordinates import TelescopeFrame
from ctapipe.io import TableLoader
from ctapipe.io.hdf5dataformat import DL1_TEL_IMAGES_GROUP

from ..constants import GAMMA_ID
from .metrics import angular_separation_deg

__all__ = ["select_camera_images"]


def _prediction_lines(row, sample_prefixes):
    """Short text of the predictions in ``row`` for the prefixes of each property."""
    lines = []
    for property_name, prefixes in sample_prefixes.items():
        for prefix in prefixes:
            if not bool(np.ma.filled(row[f"{prefix}_is_valid"], False)):
                lines.append((prefix, property_name, np.nan, f"{prefix}: invalid"))
                continue
            if property_name == "energy":
                value = u.Quantity(row[f"{prefix}_energy"]).to_value(u.TeV)
                text = f"{prefix}: E = {value:.3g} TeV"
            elif property_name == "particle_type":
                value = float(row[f"{prefix}_prediction"])
                text = f"{prefix}: gammaness = {value:.3f}"
            else:
                value = float(angular_separation_deg(
                    row["true_alt"], row["true_az"], row[f"{prefix}_alt"], row[f"{prefix}_az"]
                ))
                text = f"{prefix}: Δθ = {value:.3f} deg"
            lines.append((prefix, property_name, value, text))
    return lines


def _camera_positions(row, geometry_prefixes):
    """What the camera image figure marks, in the image's ``TelescopeFrame`` (deg): the true
    source, the valid reconstructed directions and the Hillas ellipse (where the row has them)."""
    if "telescope_pointing_altitude" not in row.colnames:
        return {}
    pointing = SkyCoord(alt=row["telescope_pointing_altitude"],
                        az=row["telescope_pointing_azimuth"], frame=AltAz())
    frame = TelescopeFrame(telescope_pointing=pointing)

    def position(alt, az):
        offset = SkyCoord(alt=alt, az=az, frame=AltAz()).transform_to(frame)
        return float(offset.fov_lon.to_value(u.deg)), float(offset.fov_lat.to_value(u.deg))

    sources = [(prefix, *position(row[f"{prefix}_alt"], row[f"{prefix}_az"]))
               for prefix in geometry_prefixes
               if bool(np.ma.filled(row[f"{prefix}_is_valid"], False))]
    result = {"true_source": position(row["true_alt"], row["true_az"]), "sources": sources}
    names = ("fov_lon", "fov_lat", "length", "width", "psi")
    if all(f"hillas_{name}" in row.colnames for name in names):
        hillas = {name: float(u.Quantity(row[f"hillas_{name}"]).to_value(u.deg)) for name in names}
        if all(np.isfinite(list(hillas.values()))):
            result["hillas"] = hillas
    return result


def select_camera_images(paths, samples, n_images, n_scan=200):
    """The brightest images of gammas and of background among the first ``n_scan`` events of
    each file: the figure's entries (image, title, prediction lines, positions) and the rows of
    its table (one per image and reconstructor)."""
    candidates = []
    for path in paths:
        with tables.open_file(path) as h5file:
            if DL1_TEL_IMAGES_GROUP not in h5file:
                continue
        with TableLoader(input_url=path, dl1_images=True, dl1_parameters=True,
                         true_parameters=False, pointing=True, dl2=True,
                         simulated=True) as loader:
            n_stop = min(n_scan, len(loader))
            by_type = loader.read_telescope_events_by_type(start=0, stop=n_stop)
            for tel_type, table in by_type.items():
                if "image" not in table.colnames or len(table) == 0:
                    continue
                table = QTable(table)  # rows then hold Quantities, not bare numbers
                prefixes = {}
                for level in ("subarray", str(tel_type)):
                    if level in samples:
                        for prop, names in samples[level].reconstructors.items():
                            prefixes.setdefault(prop, []).extend(
                                n for n in names if f"{n}_is_valid" in table.colnames)
                charge = np.nansum(np.asarray(table["image"], dtype=float), axis=1)
                for index in np.argsort(charge)[::-1][:n_images]:
                    row = table[index]
                    candidates.append({
                        "charge": charge[index],
                        "is_gamma": int(row["true_shower_primary_id"]) == GAMMA_ID,
                        "row": row, "prefixes": prefixes, "tel_type": str(tel_type),
                        "geometry": loader.subarray.tel[int(row["tel_id"])].camera.geometry,
                    })
    # half gammas, half background where both exist, brightest first
    gammas = sorted((c for c in candidates if c["is_gamma"]), key=lambda c: -c["charge"])
    others = sorted((c for c in candidates if not c["is_gamma"]), key=lambda c: -c["charge"])
    n_gamma = min(len(gammas), max(n_images - len(others), (n_images + 1) // 2))
    chosen = gammas[:n_gamma] + others[: n_images - n_gamma]

    images, rows = [], []
    for entry in chosen:
        row = entry["row"]
        true_energy = u.Quantity(row["true_energy"]).to_value(u.TeV)
        particle = "gamma" if entry["is_gamma"] else f"primary {int(row['true_shower_primary_id'])}"
        predictions = _prediction_lines(row, entry["prefixes"])
        images.append({
            "geometry": entry["geometry"],
            "image": np.nan_to_num(np.asarray(row["image"], dtype=float)),
            "title": (f"{particle}, E_true = {true_energy:.3g} TeV\nobs {row['obs_id']} event "
                      f"{row['event_id']} tel {row['tel_id']} ({entry['tel_type']})"),
            "lines": [text for *_, text in predictions],
            **_camera_positions(row, entry["prefixes"].get("geometry", [])),
        })
        for prefix, property_name, value, _ in predictions:
            rows.append({
                "obs_id": int(row["obs_id"]), "event_id": int(row["event_id"]),
                "tel_id": int(row["tel_id"]), "telescope_type": entry["tel_type"],
                "true_shower_primary_id": int(row["true_shower_primary_id"]),
                "true_energy": true_energy * u.TeV, "image_charge": entry["charge"],
                "reconstructor": prefix, "property": property_name, "value": value,
            })
    return images, rows
