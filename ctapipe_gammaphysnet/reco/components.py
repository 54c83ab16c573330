"""γ-PhysNet as ctapipe reconstructors (``ctapipe_reco`` entry points).

``GammaPhysNetReconstructor`` fills energy and direction, ``GammaPhysNetClassifier`` the
gammaness. Both share one :class:`~ctapipe_gammaphysnet.reco.engine.InferenceEngine` per set of
model files, so with both configured the network still runs once per telescope image.

Each property has its own prefix (``GammaPhysNetEnergy``, ``GammaPhysNetGeometry``,
``GammaPhysNetClassifier``): with a shared prefix ``TableLoader`` would return clashing
``<prefix>_is_valid`` columns. Telescope-level results carry ``<prefix>_tel``, as in ctapipe's
scikit-learn reconstructors; ctapipe's ``StereoCombiner`` makes the array-level result.

Images are selected by ``GammaPhysNetImageSelection`` with the criteria the model file records
(its training images), not by ctapipe's ``StereoQualityQuery``: the others are written invalid.
"""
from abc import abstractmethod

import astropy.units as u
import numpy as np
import torch
from astropy.table import Table
from ctapipe.containers import (
    DL2Container,
    ParticleClassificationContainer,
    ReconstructedEnergyContainer,
    ReconstructedGeometryContainer,
)
from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import CaselessStrEnum, ComponentName, Float, Integer, List, Path, Unicode
from ctapipe.reco import Reconstructor
from ctapipe.reco.reconstructor import ReconstructionProperty
from ctapipe.reco.stereo_combination import StereoCombiner
from ctapipe.reco.utils import add_defaults_and_meta

from ..io.model_file import ModelFileError
from ..selection import GammaPhysNetImageSelection
from .engine import OUTSIDE_ZENITH_RANGE, ZENITH_TOLERANCE_DEG, get_engine, table_pointing, telescope_to_altaz

__all__ = ["GammaPhysNetComponent", "GammaPhysNetReconstructor", "GammaPhysNetClassifier",
           "CLASSIFICATION_GROUP"]

#: name of the particle-type container and HDF5 group: ctapipe 0.29 renamed it
CLASSIFICATION_GROUP = (
    "particle_type" if "particle_type" in DL2Container().tel.default_factory.fields
    else "classification"
)

class GammaPhysNetComponent(Reconstructor):
    """Common configuration of the γ-PhysNet reconstructors.

    Settings given to this class name (``GammaPhysNetComponent.model_paths``) apply to both
    components at once.
    """

    needs_atmosphere_profile = False

    model_paths = List(
        Path(directory_ok=False),
        default_value=[],
        help=(
            "γ-PhysNet model files (.safetensors). Several files form an ensemble: their "
            "predictions are averaged and their spread fills the uncertainty columns."
        ),
    ).tag(config=True)

    device = Unicode("cpu", help="Torch device to run the network on, e.g. cpu or cuda").tag(
        config=True
    )

    # small batches keep the feature maps in cache (docs/performance.rst)
    batch_size = Integer(32, min=1, help="Images per forward pass of the network").tag(
        config=True
    )

    outside_zenith_range = CaselessStrEnum(
        list(OUTSIDE_ZENITH_RANGE), default_value="warn",
        help=("Images whose telescope pointing lies more than "
              f"{ZENITH_TOLERANCE_DEG:g}° outside the zenith range the model was trained on: "
              "'warn' predicts them and warns once, 'invalid' writes them invalid"),
    ).tag(config=True)

    stereo_combiner_cls = ComponentName(
        StereoCombiner,
        default_value="StereoMeanCombiner",
        help="How telescope-level predictions are combined into the array-level one",
    ).tag(config=True)

    def __init__(self, subarray, atmosphere_profile=None, **kwargs):
        super().__init__(subarray, atmosphere_profile=atmosphere_profile, **kwargs)
        if not self.model_paths:
            raise ToolConfigurationError(
                f"{self.__class__.__name__}: no model file given; set "
                f"{self.__class__.__name__}.model_paths (or GammaPhysNetComponent.model_paths)"
            )
        if self.n_jobs:
            # ctapipe's n_jobs of a reconstructor; torch's thread count is one per process
            torch.set_num_threads(self.n_jobs)
        try:
            self.engine = get_engine(self.model_paths, subarray, self.device, self.batch_size,
                                     log=self.log, outside_zenith_range=self.outside_zenith_range)
        except ModelFileError as err:
            raise ToolConfigurationError(f"{self.__class__.__name__}: {err}") from err
        self.engine.log_checks_at_end_of_run(self)
        for path in self.model_paths:
            Provenance().add_input_file(path, role="γ-PhysNet model", add_meta=False)
        if "quality_criteria" in self.quality_query._find_my_config(self.config):
            self.log.warning(
                "%s: StereoQualityQuery.quality_criteria are not used by γ-PhysNet; images are "
                "selected by GammaPhysNetImageSelection", self.__class__.__name__)
        # replaces the base class's StereoQualityQuery (ctapipe-process writes its statistics)
        self.quality_query = GammaPhysNetImageSelection.for_models(
            [model.image_selection for model_file in self.engine.model_files
             for model in model_file.models.values()],
            parent=self, description=", ".join(map(str, self.model_paths)))
        self.combiners = {
            prop: StereoCombiner.from_name(
                self.stereo_combiner_cls, prefix=prefix, property=prop, parent=self
            )
            for prop, prefix in self.prefixes.items()
        }

    @property
    @abstractmethod
    def prefixes(self):
        """``{ReconstructionProperty: prefix}`` of the properties this component fills."""

    @abstractmethod
    def _columns(self, result, valid, pointing, tel_ids):
        """``{ReconstructionProperty: {column: values}}`` (without prefix) for table rows."""

    def _containers(self, tel_id, result, pointing):
        """``{ReconstructionProperty: container}`` of one telescope from its network result (None
        if it has none), through the same ``_columns`` as the table path."""
        if result is None:
            columns = self._columns(None, np.array([False]), None, None)
        else:
            columns = self._columns(
                {name: np.array([value]) for name, value in result.items()},
                np.array([True]),
                (np.array([pointing.altitude.to_value(u.deg)]),
                 np.array([pointing.azimuth.to_value(u.deg)])),
                np.array([tel_id]),
            )
        containers = {}
        for prop, values in columns.items():
            values = {name: column[0] for name, column in values.items()}
            is_valid = bool(np.isfinite(next(iter(values.values()))))
            containers[prop] = _CONTAINERS[prop](**values, is_valid=is_valid)
        return containers

    @property
    def prefix(self):
        """The first prefix (``ctapipe-apply-models`` reads ``reconstructor.prefix``)."""
        return next(iter(self.prefixes.values()))

    @property
    def stereo_combiner(self):
        """The combiner of the first property (``ctapipe-apply-models`` reads this name)."""
        return self.combiners[next(iter(self.prefixes))]

    def _passes_quality(self, event, tel_id):
        dl1 = event.dl1.tel[tel_id]
        if dl1.image is None or dl1.peak_time is None:
            raise ValueError(
                f"event {event.index.event_id}, telescope {tel_id}: no DL1 image or peak time; "
                "γ-PhysNet needs images (DL1 files written with --write-images)"
            )
        return self.quality_query.passes(dl1)

    def __call__(self, event):
        tel_ids = [t for t in event.trigger.tels_with_trigger if t in event.dl1.tel]
        selected = [t for t in tel_ids
                    if self.engine.group_for(t) is not None and self._passes_quality(event, t)]
        results = self.engine.predict_event(event, selected)
        for tel_id in event.trigger.tels_with_trigger:
            pointing = event.monitoring.tel[tel_id].pointing
            containers = self._containers(tel_id, results.get(tel_id), pointing)
            for prop, container in containers.items():
                prefix = self.prefixes[prop]
                container.prefix = f"{prefix}_tel"
                _container_map(event.dl2.tel[tel_id], prop)[prefix] = container
        for combiner in self.combiners.values():
            combiner(event)

    def predict_table(self, key, table: Table) -> dict:
        """Predict for a table of telescope events of one telescope type.

        Parameters
        ----------
        key : ctapipe.instrument.TelescopeDescription
            The telescope type (its camera geometry selects the model).
        table : astropy.table.Table
            Telescope events with ``obs_id``, ``event_id``, ``tel_id``, DL1 parameters,
            ``image`` and ``peak_time`` columns and the pointing (as read by
            ``TableLoader(dl1_images=True)``).

        Returns
        -------
        dict
            ``{ReconstructionProperty: Table}`` with the ``<prefix>_tel_…`` columns.
        """
        n_rows = len(table)
        group = self.engine.group_for_geometry(key.camera.geometry)
        valid = np.zeros(n_rows, dtype=bool)
        if group is not None and n_rows > 0:
            valid = self.quality_query.table_mask(table)
        if group is not None:
            result = self.engine.predict_table(group, table, valid)
            pointing = table_pointing(table) if np.any(valid) else None
        else:
            result, pointing = None, None
        tables = {}
        for prop, columns in self._columns(result, valid, pointing, table["tel_id"]).items():
            prefix = self.prefixes[prop]
            out = Table({f"{prefix}_tel_{name}": values for name, values in columns.items()})
            out[f"{prefix}_tel_is_valid"] = valid & np.isfinite(next(iter(columns.values())))
            add_defaults_and_meta(out, _CONTAINERS[prop], prefix=prefix, add_tel_prefix=True)
            # the container's field order, as ctapipe-process writes it (appending is positional)
            tables[prop] = out[[f"{prefix}_tel_{field}" for field in _CONTAINERS[prop].fields
                                if field != "telescopes"]]
        return tables


_CONTAINERS = {
    ReconstructionProperty.ENERGY: ReconstructedEnergyContainer,
    ReconstructionProperty.GEOMETRY: ReconstructedGeometryContainer,
    ReconstructionProperty.PARTICLE_TYPE: ParticleClassificationContainer,
}


def _container_map(dl2_tel, prop):
    if prop is ReconstructionProperty.PARTICLE_TYPE:
        return getattr(dl2_tel, CLASSIFICATION_GROUP)
    return getattr(dl2_tel, str(prop))


def _nan(n, unit=None):
    values = np.full(n, np.nan)
    return values if unit is None else u.Quantity(values, unit)


class GammaPhysNetReconstructor(GammaPhysNetComponent):
    """Energy and direction of the primary from each telescope image with γ-PhysNet.

    The network predicts log10(E/TeV) and the source position in the telescope's
    ``TelescopeFrame``; the position is turned into alt/az with the telescope's pointing. The
    telescope-level ``core_x/core_y`` are the telescope position plus the predicted impact.
    """

    energy_prefix = Unicode("GammaPhysNetEnergy", help="Prefix of the energy columns").tag(
        config=True
    )
    geometry_prefix = Unicode(
        "GammaPhysNetGeometry", help="Prefix of the direction (geometry) columns"
    ).tag(config=True)

    # the spread of an ensemble says how much its members disagree, which is less than their
    # error; ctapipe-train-gammaphysnet-seeds measures the factors that make ±1σ cover 68 %
    # (63 % within the direction spread) of the true values and writes them into its ensemble YAML
    energy_uncertainty_scale = Float(
        1.0, min=0.0,
        help="Factor on the ensemble spread of log10(E) before it fills energy_uncert",
    ).tag(config=True)
    direction_uncertainty_scale = Float(
        1.0, min=0.0,
        help="Factor on the ensemble's direction spread before it fills ang_distance_uncert",
    ).tag(config=True)

    @property
    def prefixes(self):
        return {ReconstructionProperty.ENERGY: self.energy_prefix,
                ReconstructionProperty.GEOMETRY: self.geometry_prefix}

    # after the ``@property`` above: this class attribute shadows the builtin in the class body
    property = ReconstructionProperty.ENERGY | ReconstructionProperty.GEOMETRY


    def _columns(self, result, valid, pointing, tel_ids):
        n = len(valid)
        if result is None or not np.any(valid):
            return {
                ReconstructionProperty.ENERGY: {"energy": _nan(n, u.TeV)},
                ReconstructionProperty.GEOMETRY: {"alt": _nan(n, u.deg), "az": _nan(n, u.deg)},
            }
        energy = 10 ** result["log_energy"]
        # first-order propagation of the (scaled) ensemble spread of log10(E)
        energy_uncert = energy * np.log(10) * self.energy_uncertainty_scale * result["log_energy_std"]
        alt, az = telescope_to_altaz(result["fov_lon"], result["fov_lat"], *pointing)
        alt[~valid], az[~valid] = np.nan, np.nan
        positions = self.subarray.tel_coords
        index = np.array([self.subarray.tel_indices[t] for t in tel_ids])
        core_x = positions.x.to_value(u.m)[index] + 1000 * result["impact_x"]
        core_y = positions.y.to_value(u.m)[index] + 1000 * result["impact_y"]
        return {
            ReconstructionProperty.ENERGY: {
                "energy": u.Quantity(energy, u.TeV),
                "energy_uncert": u.Quantity(energy_uncert, u.TeV),
            },
            ReconstructionProperty.GEOMETRY: {
                "alt": u.Quantity(alt, u.deg),
                "az": u.Quantity(az, u.deg),
                "ang_distance_uncert": u.Quantity(
                    self.direction_uncertainty_scale * result["direction_spread"], u.deg),
                "core_x": u.Quantity(core_x, u.m),
                "core_y": u.Quantity(core_y, u.m),
            },
        }


class GammaPhysNetClassifier(GammaPhysNetComponent):
    """Gammaness (``prediction``, 1 = gamma-like) of each telescope image with γ-PhysNet."""

    classifier_prefix = Unicode(
        "GammaPhysNetClassifier", help="Prefix of the particle-type (gammaness) columns"
    ).tag(config=True)

    @property
    def prefixes(self):
        return {ReconstructionProperty.PARTICLE_TYPE: self.classifier_prefix}

    property = ReconstructionProperty.PARTICLE_TYPE


    def _columns(self, result, valid, pointing, tel_ids):
        gammaness = _nan(len(valid)) if result is None else result["gammaness"]
        return {ReconstructionProperty.PARTICLE_TYPE: {"prediction": gammaness}}
