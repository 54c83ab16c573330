"""`ShowerSimulator`: thrown primaries → showers → light → camera images, as ctapipe events.

Every shower ``i`` of a run draws its random numbers from ``numpy.random.default_rng([seed, i])``,
so a run is reproducible and independent of how showers are spread over worker processes.
"""
import astropy.units as u
import numpy as np
from astropy.time import Time
from ctapipe.calib import CameraCalibrator
from ctapipe.containers import (
    ArrayEventContainer,
    CameraCalibrationContainer,
    CoordinateFrameType,
    DL1CameraContainer,
    EventType,
    ObservationBlockContainer,
    ObservationBlockState,
    ObservingMode,
    PixelStatus,
    PointingMode,
    R1CameraContainer,
    SchedulingBlockContainer,
    SchedulingBlockType,
    SimulatedCameraContainer,
    SimulatedEventContainer,
    SimulatedShowerContainer,
    SimulationConfigContainer,
    TelescopeImpactParameterContainer,
    TelescopePointingContainer,
    TelescopeTriggerContainer,
)
from ctapipe.core import Component
from ctapipe.core.traits import AstroQuantity, CaselessStrEnum, Float, Int

from .atmosphere import Atmosphere
from .camera import CameraSimulator
from .cherenkov import LightOnMirror, TelescopeView, bunch_light, muon_light
from .primaries import PARTICLES, PrimarySampler, offset_direction
from .showers import ShowerModel

__all__ = ["ShowerSimulator", "SimulatedRun"]

# start of every simulated run; event times are offsets from it so that files are reproducible
RUN_START = Time("2025-01-01T00:00:00", scale="tai")
_MS_PER_DAY = 86400e3
# composed once rather than for every event
_GRAMMAGE = u.g / u.cm**2

# default view cone (deg) and scatter radius (m) per particle, as in CTA productions for one LST
_DEFAULT_VIEW_CONE = {"gamma": 0.0, "gamma-diffuse": 6.0, "electron": 6.0, "proton": 8.0}
_DEFAULT_MAX_IMPACT = {"gamma": 500.0, "gamma-diffuse": 600.0, "electron": 600.0, "proton": 700.0}


class ShowerSimulator(Component):
    """Simulate air showers of one particle type and the images they make in a subarray."""

    particle = CaselessStrEnum(
        list(PARTICLES), default_value="gamma", help="primary particle (gamma = point-like)"
    ).tag(config=True)
    energy_min = AstroQuantity(
        default_value=0.01 * u.TeV, physical_type=u.physical.energy, help="minimum true energy"
    ).tag(config=True)
    energy_max = AstroQuantity(
        default_value=100.0 * u.TeV, physical_type=u.physical.energy, help="maximum true energy"
    ).tag(config=True)
    spectral_index = Float(-2.0, help="power-law index of the thrown spectrum dN/dE ∝ E^index").tag(
        config=True
    )
    max_impact = Float(
        None,
        allow_none=True,
        help="scatter radius of the cores (m), in the plane perpendicular to the shower axis; "
        "default 500 m (gamma), 600 m (gamma-diffuse, electron), 700 m (proton)",
    ).tag(config=True)
    view_cone = Float(
        None,
        allow_none=True,
        help="radius of the cone of arrival directions around view_cone_centre (deg); "
        "default 0 (gamma), 6 (gamma-diffuse, electron), 8 (proton)",
    ).tag(config=True)
    view_cone_centre = CaselessStrEnum(
        ["pointing", "source"],
        default_value="pointing",
        help="axis of the view cone of diffuse particles: the telescope pointing (as CTA "
        "productions) or the source position; point-like gammas always come from the source",
    ).tag(config=True)
    source_offset = Float(
        0.4, help="offset of the source from the pointing (deg): 0.4 is the standard wobble"
    ).tag(config=True)
    source_position_angle = Float(
        0.0,
        help="position angle of the source around the pointing (deg), measured from the "
        "direction of increasing altitude towards increasing azimuth: 0 above the pointing "
        "(+fov_lat of ctapipe's TelescopeFrame), 90 at larger azimuth (+fov_lon); wobble "
        "positions are 0, 90, 180, 270",
    ).tag(config=True)
    pointing_alt = Float(70.0, help="telescope pointing altitude (deg)").tag(config=True)
    pointing_az = Float(0.0, help="telescope pointing azimuth (deg, north = 0, east = 90)").tag(
        config=True
    )
    site_altitude = Float(2200.0, help="altitude of the observation level (m a.s.l.)").tag(config=True)
    bunches_per_tev = Float(
        2000.0, help="Cherenkov emission bunches per TeV of primary energy (speed vs. smoothness)"
    ).tag(config=True)
    min_bunches = Int(300, help="minimum number of emission bunches per shower").tag(config=True)
    max_bunches = Int(20000, help="maximum number of emission bunches per shower").tag(config=True)
    lateral_scale = Float(
        0.75, help="lateral spread of Cherenkov-emitting electrons, in Molière radii at 21 MeV"
    ).tag(config=True)
    angular_scale = Float(
        2.0,
        help="scale of the mean multiple-scattering angle θ0(E) of the Cherenkov-emitting electrons "
        "(see angular_spread_dof) relative to Hillas' 0.83 (E/MeV)^-0.67 rad",
    ).tag(config=True)
    angular_age_power = Float(
        2.0,
        min=-3.0,
        max=3.0,
        help="θ0 (angular_scale) is multiplied by the sub-shower's age (clipped to 0.3-2) to this "
        "power: 0 leaves Hillas' θ0(E), positive values narrow the angles early in the shower and "
        "widen them late (calibrated on CORSIKA's light pools and ideal images, docs: simulation)",
    ).tag(config=True)
    angular_spread_dof = Int(
        2,
        min=1,
        max=20,
        help="the Cherenkov-emitting electrons' directions are a mixture of 2-D Gaussians of widths "
        "θ0 (angular_scale) times the RMS of this many standard normals: 1 gives dN/dθ ~ "
        "exp(-θ/θ0), more give less light along the shower axis and a shorter wide-angle tail "
        "(docs: simulation)",
    ).tag(config=True)
    bunch_spread_fraction = Float(
        0.5,
        min=0.0,
        max=1.0,
        help="part of the emitting electrons' angular spread each emission bunch spreads its light "
        "over (in quadrature); the rest is a direction drawn per bunch, so that images fluctuate "
        "like the light of a finite number of electron tracks (1: smooth images)",
    ).tag(config=True)
    seed = Int(0, min=0, help="random seed of the run (>= 0)").tag(config=True)

    def __init__(self, subarray, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        self.subarray = subarray
        self.check_options()
        self.camera = CameraSimulator(parent=self)
        # waveforms → DL1 as ctapipe-process does for sim_telarray files (its configuration, if any,
        # applies here as well)
        self.calibrator = CameraCalibrator(subarray, parent=self) if self.camera.waveforms else None
        self.atmosphere = Atmosphere()
        self.shower_model = ShowerModel(
            self.atmosphere,
            self.site_altitude,
            bunches_per_tev=self.bunches_per_tev,
            min_bunches=self.min_bunches,
            max_bunches=self.max_bunches,
            lateral_scale=self.lateral_scale,
            angular_scale=self.angular_scale,
            angular_age_power=self.angular_age_power,
            angular_spread_dof=self.angular_spread_dof,
            bunch_spread_fraction=self.bunch_spread_fraction,
        )
        alt, az = np.radians(self.pointing_alt), np.radians(self.pointing_az)
        self.telescopes = {
            tel_id: TelescopeView(
                subarray.positions[tel_id].to_value(u.m),
                alt,
                az,
                tel.optics.mirror_area.to_value(u.m**2),
                self.site_altitude,
            )
            for tel_id, tel in subarray.tel.items()
        }
        self._pointing = TelescopePointingContainer(altitude=alt * u.rad, azimuth=az * u.rad)
        centre_alt, centre_az = self.view_cone_axis
        self.sampler = PrimarySampler(
            particle=self.particle,
            energy_min=self.energy_min.to_value(u.TeV),
            energy_max=self.energy_max.to_value(u.TeV),
            spectral_index=self.spectral_index,
            max_impact=self.scatter_radius,
            view_cone=np.radians(self.view_cone_radius),
            centre_alt=centre_alt,
            centre_az=centre_az,
        )

    @property
    def scatter_radius(self):
        return _DEFAULT_MAX_IMPACT[self.particle] if self.max_impact is None else self.max_impact

    @property
    def view_cone_radius(self):
        return _DEFAULT_VIEW_CONE[self.particle] if self.view_cone is None else self.view_cone

    @property
    def source_position(self):
        """(alt, az) of the source in radians, from the pointing, offset and position angle."""
        return offset_direction(
            np.radians(self.pointing_alt), np.radians(self.pointing_az),
            np.radians(self.source_offset), np.radians(self.source_position_angle),
        )

    @property
    def view_cone_axis(self):
        """(alt, az) in radians around which arrival directions are thrown: the source for
        point-like gammas (and with view_cone_centre = source), else the pointing."""
        if self.view_cone_radius == 0 or self.view_cone_centre == "source":
            return self.source_position
        return np.radians(self.pointing_alt), np.radians(self.pointing_az)

    def check_options(self):
        """Refuse inconsistent options before any work."""
        e_min, e_max = self.energy_min.to_value(u.TeV), self.energy_max.to_value(u.TeV)
        if not 0 < e_min < e_max:
            raise ValueError(
                f"ShowerSimulator: need 0 < energy_min < energy_max, got {self.energy_min}, {self.energy_max}"
            )
        if e_min < 0.001 or e_max > 1000:
            raise ValueError("ShowerSimulator: energies must lie between 1 GeV and 1 PeV")
        if self.scatter_radius <= 0:
            raise ValueError(f"ShowerSimulator.max_impact must be > 0, got {self.max_impact}")
        if not 0 <= self.view_cone_radius <= 20:
            raise ValueError(f"ShowerSimulator.view_cone must be in [0, 20] deg, got {self.view_cone}")
        if self.particle == "gamma" and self.view_cone_radius > 0:
            raise ValueError("ShowerSimulator: point-like 'gamma' needs view_cone 0, use 'gamma-diffuse'")
        if not 30 <= self.pointing_alt <= 90 - self.source_offset:
            raise ValueError(
                f"ShowerSimulator.pointing_alt must be in [30, {90 - self.source_offset}] deg, got {self.pointing_alt}"
            )
        if not 0 <= self.source_offset <= 5:
            raise ValueError(f"ShowerSimulator.source_offset must be in [0, 5] deg, got {self.source_offset}")
        if not -360 <= self.source_position_angle <= 360:
            raise ValueError(
                f"ShowerSimulator.source_position_angle must be in [-360, 360] deg, got {self.source_position_angle}"
            )
        if not -500 <= self.site_altitude <= 5000:
            raise ValueError(f"ShowerSimulator.site_altitude must be in [-500, 5000] m, got {self.site_altitude}")
        if self.min_bunches < 10 or self.max_bunches < self.min_bunches:
            raise ValueError("ShowerSimulator: need 10 <= min_bunches <= max_bunches")

    # --- one shower -------------------------------------------------------------------------
    def images_of(self, primary, rng):
        """X_max, first-interaction height and per-telescope `SimulatedImage` of a primary
        (telescopes that receive too little light to trigger are left out)."""
        core = np.array([primary.core_x, primary.core_y, 0.0])
        bunches, muons, x_max, first_height = self.shower_model.simulate(primary, core, rng)
        images = {}
        for tel_id, telescope in self.telescopes.items():
            parts = []
            if bunches is not None:
                parts.append(bunch_light(bunches, telescope, self.atmosphere))
            if len(muons.energy):
                muon = muon_light(muons, telescope, self.atmosphere, rng)
                if muon is not None:
                    parts.append(muon)
            if not parts:
                continue
            light = LightOnMirror.concatenate(parts)
            # far too little light to trigger: skip the camera simulation
            expected_total = light.photons.sum() * self.camera.photon_detection_efficiency
            if expected_total < 0.5 * self.camera.trigger_threshold:
                continue
            response = self.camera.response(self.subarray.tel[tel_id].camera)
            expected, mean_time = response.expected_photoelectrons(light, rng)
            if response.may_trigger(expected):
                images[tel_id] = response.digitize(expected, mean_time, rng)
        return x_max, first_height, images

    def impact_distance(self, primary, tel_id):
        """Distance (m) of a telescope from the shower axis, as in sim_telarray."""
        core = np.array([primary.core_x, primary.core_y, 0.0])
        offset = self.telescopes[tel_id].position - core
        along = offset @ primary.direction
        return float(np.sqrt(max(offset @ offset - along**2, 0.0)))

    def simulate_event(self, index, obs_id=1):
        """The triggered `ArrayEventContainer` of shower ``index`` (event_id = index + 1), or None."""
        rng = np.random.default_rng([self.seed, index])
        return self.event_of(self.sampler.sample(rng), index, rng, obs_id)

    def event_of(self, primary, index, rng, obs_id=1):
        """The triggered `ArrayEventContainer` of a given primary, or None if nothing triggered."""
        x_max, first_height, images = self.images_of(primary, rng)
        triggered = sorted(tel_id for tel_id, image in images.items() if image.triggered)
        if not triggered:
            return None

        event = ArrayEventContainer()
        event.index.obs_id = obs_id
        event.index.event_id = index + 1
        event.simulation = SimulatedEventContainer()
        event.simulation.shower = SimulatedShowerContainer(
            energy=primary.energy * u.TeV,
            alt=np.degrees(primary.alt) * u.deg,
            az=np.degrees(primary.az) * u.deg,
            core_x=primary.core_x * u.m,
            core_y=primary.core_y * u.m,
            h_first_int=first_height * u.m,
            # the vertical depth of the maximum, as sim_telarray writes it (the model's is slant)
            x_max=x_max * np.sin(primary.alt) * _GRAMMAGE,
            starting_grammage=0.0 * _GRAMMAGE,
            shower_primary_id=primary.primary_id,
        )
        # distinct, reproducible times: one shower per millisecond (built from the Julian date,
        # which is several times faster than adding a Quantity to a Time)
        time = Time(RUN_START.jd1, RUN_START.jd2 + index / _MS_PER_DAY, format="jd", scale="tai")
        event.trigger.time = time
        event.trigger.event_type = EventType.SUBARRAY
        event.trigger.tels_with_trigger = np.array(triggered, dtype=np.uint16)
        pointing = self._pointing
        for tel_id in triggered:
            image = images[tel_id]
            event.trigger.tel[tel_id] = TelescopeTriggerContainer(
                time=time, event_type=EventType.SUBARRAY, n_trigger_pixels=image.n_trigger_pixels
            )
            _set_telescope_pointing(event, tel_id, pointing)
            if image.waveform is None:
                event.dl1.tel[tel_id] = DL1CameraContainer(
                    image=image.image, peak_time=image.peak_time, is_valid=True
                )
            else:
                event.r1.tel[tel_id] = _r1_container(image)
                # no broken pixels (the extractor wants the mask per gain channel)
                event.monitoring.tel[tel_id].camera.coefficients = CameraCalibrationContainer(
                    outlier_mask=np.zeros((2, len(image.true_image)), dtype=bool)
                )
            event.simulation.tel[tel_id] = SimulatedCameraContainer(
                true_image=image.true_image,
                true_image_sum=int(image.true_image.sum()),
                impact=TelescopeImpactParameterContainer(
                    distance=self.impact_distance(primary, tel_id) * u.m,
                    distance_uncert=0.0 * u.m,
                    prefix="true_impact",  # as sim_telarray files give it
                ),
            )
        if event.r1.tel:
            self.calibrator(event)
            # the waveforms are not written; dropping them keeps events small between processes
            event.r1.tel.clear()
            event.dl0.tel.clear()
        return event

    # --- run header -------------------------------------------------------------------------
    def simulation_config(self, n_showers, obs_id=1):
        """`SimulationConfigContainer` describing the thrown showers (for effective areas)."""
        # the view cone's axis, as in the run headers of sim_telarray
        axis_alt, axis_az = self.view_cone_axis
        return SimulationConfigContainer(
            run_number=obs_id,
            corsika_version=0,
            simtel_version=0,
            energy_range_min=self.energy_min.to(u.TeV),
            energy_range_max=self.energy_max.to(u.TeV),
            prod_site_alt=self.site_altitude * u.m,
            spectral_index=self.spectral_index,
            n_showers=n_showers,
            shower_reuse=1,
            max_alt=axis_alt * u.rad,
            min_alt=axis_alt * u.rad,
            max_az=axis_az * u.rad,
            min_az=axis_az * u.rad,
            diffuse=self.view_cone_radius > 0,
            max_viewcone_radius=self.view_cone_radius * u.deg,
            min_viewcone_radius=0.0 * u.deg,
            max_scatter_range=self.scatter_radius * u.m,
            min_scatter_range=0.0 * u.m,
            core_pos_mode=1,
            atmosphere=1,
            corsika_wlen_min=300 * u.nm,
            corsika_wlen_max=600 * u.nm,
        )


def _r1_container(image):
    """r1 of a simulated read-out, with gain selection and pixel status as `SimTelEventSource`
    gives them."""
    gain = image.selected_gain_channel
    status = np.where(gain == 0, PixelStatus.HIGH_GAIN_STORED, PixelStatus.LOW_GAIN_STORED).astype(np.uint8)
    return R1CameraContainer(
        event_type=EventType.SUBARRAY,
        waveform=image.waveform[np.newaxis],
        selected_gain_channel=gain,
        pixel_status=status,
    )


def _set_telescope_pointing(event, tel_id, pointing):
    """Fixed pointing where the running ctapipe's DataWriter looks for it (monitoring ≤ 0.28,
    event.pointing later)."""
    if "pointing" in event.fields:
        event.pointing.tel[tel_id].altitude = pointing.altitude
        event.pointing.tel[tel_id].azimuth = pointing.azimuth
    else:
        event.monitoring.tel[tel_id].pointing = pointing


class SimulatedRun:
    """Run-level header information that ctapipe's `DataWriter` takes from an event source.

    ``observations``: ``(obs_id, simulator, n_showers)`` of each observation in the file, each
    with its own pointing (the simulators differ only in it).
    """

    is_simulation = True

    def __init__(self, observations):
        first = observations[0][1]
        self.subarray = first.subarray
        self.obs_ids = [obs_id for obs_id, _, _ in observations]
        self.simulation_config = {obs_id: simulator.simulation_config(n_showers, obs_id)
                                  for obs_id, simulator, n_showers in observations}
        self.atmosphere_density_profile = first.atmosphere.density_profile()
        self.scheduling_blocks = {
            obs_id: SchedulingBlockContainer(
                sb_id=np.uint64(obs_id),
                sb_type=SchedulingBlockType.OBSERVATION,
                producer_id="simulation",
                observing_mode=ObservingMode.WOBBLE,
                pointing_mode=PointingMode.TRACK,
            )
            for obs_id, _, _ in observations
        }
        self.observation_blocks = {
            obs_id: ObservationBlockContainer(
                obs_id=np.uint64(obs_id),
                sb_id=np.uint64(obs_id),
                producer_id="simulation",
                state=ObservationBlockState.COMPLETED_SUCCEDED,
                subarray_pointing_lat=simulator.pointing_alt * u.deg,
                subarray_pointing_lon=simulator.pointing_az * u.deg,
                subarray_pointing_frame=CoordinateFrameType.ALTAZ,
                actual_start_time=RUN_START,
                scheduled_start_time=RUN_START,
            )
            for obs_id, simulator, _ in observations
        }
