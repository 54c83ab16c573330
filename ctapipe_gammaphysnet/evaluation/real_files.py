"""Real sim_telarray files through ``ctapipe-process`` with γ-PhysNet and the Random Forests.

The transfer check (``transfer.py``) needs the real LST images of gammas and protons with the
telescope-level results of every reconstructor. Two things stand in the way of ctapipe's own
tools, and this module removes them:

- ctapipe's Random Forests (``ctapipe.reco.sklearn``) key their models by
  ``TelescopeDescription``, and every sim_telarray file describes the LST differently (camera
  ``LSTCam``, ``LSTN-design``, ``LSTS-design``; effective focal length 29.237–29.306 m; the
  hexagons turned by 40.9° or by 100.9°, the same hexagons): a forest trained on the built-in
  simulator's LST-1 has a model for none of them. ``ctapipe-apply-models`` then logs "No model
  ... skipping" for every telescope and fails with ``KeyError: '<prefix>_tel_is_valid'`` (the
  stereo combiner gets no prediction at all). `forests_for_telescopes` gives the trained model to
  every telescope type whose camera has the trained camera's pixels (`CameraGrid.matches`, the
  rule γ-PhysNet's model files follow) and writes the forests anew.
- Some files hold MSTs besides the LSTs, and one (``lst_muons``) holds muons only:
  `real_shower_files` lists the files with LST images of gammas or protons and their LST ids
  (``tel.optics.size_type``, not the camera name), processed with ``--allowed-tels``. It also
  gives the part of the mirror the file's CORSIKA spheres cover and warns where it is not all
  (``test_lasercal_v3``: 7.5 m spheres, 46 % of the LST mirror, so images about half as bright as
  a full LST's).

The forests then run inside ``ctapipe-process`` next to γ-PhysNet (`process_config`): one
command per file (`process_command`), one DL2 file with both.
"""
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
from ctapipe.io import SimTelEventSource
from ctapipe.reco import Reconstructor

from ..constants import GAMMA_ID, PARTICLE_NAMES, PROTON_ID
from ..geometry import CameraGrid
from ..simulation.validation import sphere_limited_mirror_areas

__all__ = ["RealFile", "real_shower_files", "forests_for_telescopes", "process_config",
           "process_command"]

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent


@dataclass
class RealFile:
    """A sim_telarray file with telescope images of gammas or protons."""

    path: Path
    #: the file name without the .simtel* suffixes
    name: str
    #: ids of the telescopes of the selected size type
    tel_ids: tuple
    #: true_shower_primary_id of its first event
    primary_id: int
    subarray: object
    #: the smallest part of a selected telescope's mirror that its CORSIKA sphere covers (the rest
    #: stays dark in sim_telarray); NaN where the file has no CORSIKA input card
    mirror_fraction: float = float("nan")


def real_shower_files(directories, size_type="LST"):
    """The sim_telarray files in ``directories`` with ``size_type`` images of gammas or protons.

    A file that ctapipe cannot open as it is (e.g. an old muon run that needs
    ``focal_length_choice``), or whose first event is another particle, is skipped with a log
    message.
    """
    result = []
    for directory in directories:
        for path in sorted(Path(directory).glob("*.simtel*")):
            try:
                with SimTelEventSource(path, max_events=1) as source:
                    subarray = source.subarray
                    event = next(iter(source), None)
            except Exception as error:  # noqa: BLE001 - any unreadable file is only skipped
                log.info("%s skipped: ctapipe cannot read it as it is (%s)", path.name, error)
                continue
            primary_id = int(event.simulation.shower.shower_primary_id) if event else -1
            tel_ids = tuple(int(t) for t, tel in subarray.tel.items()
                            if tel.optics.size_type.name == size_type)
            if primary_id not in (GAMMA_ID, PROTON_ID) or not tel_ids:
                log.info("%s skipped: %s, %d %s telescope(s)", path.name,
                         PARTICLE_NAMES.get(primary_id, f"primary id {primary_id}"),
                         len(tel_ids), size_type)
                continue
            result.append(RealFile(path, path.name.split(".simtel")[0], tel_ids, primary_id,
                                   subarray, _mirror_fraction(path, subarray, tel_ids)))
    return result


def _mirror_fraction(path, subarray, tel_ids):
    try:
        areas = sphere_limited_mirror_areas(path, subarray)
    except ValueError as error:
        log.info("%s: the CORSIKA spheres are not known (%s)", path.name, error)
        return float("nan")
    fraction = min(areas[t] / subarray.tel[t].optics.mirror_area.to_value(u.m**2) for t in tel_ids)
    if fraction < 1:
        log.warning(
            "%s: its CORSIKA spheres cover only %.0f %% of the mirror, so its images carry that "
            "part of the light a full telescope collects: energies reconstructed from them come "
            "out low (docs/transfer.rst)", path.name, 100 * fraction,
        )
    return fraction


def forests_for_telescopes(forest_paths, subarrays, output_dir):
    """Write the forests of ``forest_paths`` with a model for every matching telescope type.

    A telescope type of ``subarrays`` gets the model trained for a type of the same size whose
    camera has its pixels at the same positions, in the same order.

    Returns
    -------
    dict
        reconstructor class name (``EnergyRegressor``, …) -> path of the written forest
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    telescope_types = {t for subarray in subarrays for t in subarray.telescope_types}
    written = {}
    for path in forest_paths:
        forest = Reconstructor.read(path)
        models = forest._models  # ctapipe's sklearn reconstructors: type -> fitted model
        for trained, model in list(models.items()):
            grid = CameraGrid.from_geometry(trained.camera.geometry)
            for tel_type in telescope_types:
                if (tel_type.optics.size_type == trained.optics.size_type
                        and grid.matches(tel_type.camera.geometry)):
                    models.setdefault(tel_type, model)
        unmatched = sorted(str(t) for t in telescope_types if t not in models)
        if unmatched:
            log.warning("%s: no model for the telescope types %s (no camera match)", path,
                        unmatched)
        class_name = type(forest).__name__
        if class_name in written:
            raise ValueError(f"{path}: a second {class_name} (first: {written[class_name]})")
        output = output_dir / Path(path).name
        forest.write(output, overwrite=True)
        written[class_name] = output
    return written


def process_config(base_config, forests):
    """``ctapipe-process`` configuration: ``base_config`` (e.g. gpn.yaml with the model) with
    the ``forests`` (class name -> file) as further reconstructors, parameters written."""
    config = {key: dict(value) if isinstance(value, dict) else value
              for key, value in base_config.items()}
    processor = dict(config.get("ProcessorTool", {}))
    shower = dict(processor.get("ShowerProcessor", {}))
    shower["reconstructor_types"] = [*shower.get("reconstructor_types", []), *forests]
    processor["ShowerProcessor"] = shower
    config["ProcessorTool"] = processor
    for class_name, path in forests.items():
        config.setdefault(class_name, {})["load_path"] = str(path)
    writer = config.setdefault("DataWriter", {})
    writer.update(write_dl2=True, write_dl1_parameters=True)
    return config


def process_command(real_file, config_path, output):
    """The ``ctapipe-process`` command of ``real_file`` (its selected telescopes only)."""
    return [
        str(BIN / "ctapipe-process"), f"--input={real_file.path}", f"--output={output}",
        f"--config={config_path}",
        f"--EventSource.allowed_tels={list(real_file.tel_ids)}",
    ]
