"""The built-in shower simulator: physics building blocks, the Tool, and its standard DL1 output."""
import astropy.units as u
import numpy as np
import pytest
import tables
from astropy.coordinates import AltAz, SkyCoord
from scipy.spatial import cKDTree
from ctapipe.coordinates import TelescopeFrame
from ctapipe.core import ToolConfigurationError, run_tool
from ctapipe.io import TableLoader
from traitlets.config import Config

from ctapipe_gammaphysnet.simulation import ShowerSimulator, simulate_to_file
from ctapipe_gammaphysnet.simulation.atmosphere import Atmosphere
from ctapipe_gammaphysnet.simulation.camera import CameraResponse, CameraSimulator
from ctapipe_gammaphysnet.simulation.cherenkov import LightOnMirror, TelescopeView, muon_light
from ctapipe_gammaphysnet.simulation.primaries import (
    PrimarySampler,
    alt_az_from_direction,
    perpendicular_basis,
    rotate_away,
    sky_direction,
)
from ctapipe_gammaphysnet.simulation.showers import Muons
from ctapipe_gammaphysnet.tools.simulate_showers import SimulateShowers


# --- physics building blocks ------------------------------------------------------------------
def test_atmosphere_depth_height_and_cherenkov_angle():
    atmosphere = Atmosphere()
    heights = np.array([0.0, 2200.0, 5000.0, 10e3, 30e3])
    assert np.allclose(atmosphere.height(atmosphere.vertical_depth(heights)), heights, atol=0.5)
    assert atmosphere.vertical_depth(0.0) == pytest.approx(1036, rel=0.01)
    angle = np.degrees(np.arccos(atmosphere.cherenkov_cos_angle(np.array([0.0, 10e3]))))
    assert 1.3 < angle[0] < 1.45  # ~1.4° near the ground
    assert angle[1] < 1.0  # under 1° at 10 km
    # the profile written to the file is ctapipe's and agrees with the model
    profile = atmosphere.density_profile()
    assert profile(10 * u.km).to_value(u.g / u.cm**3) == pytest.approx(atmosphere.density(10e3), rel=1e-3)


def test_telescope_frame_matches_ctapipe():
    alt, az = np.radians(70.0), np.radians(180.0)
    view = TelescopeView([0, 0, 0], alt, az, 386.7, 2200.0)
    rng = np.random.default_rng(1)
    directions = sky_direction(alt + rng.normal(0, 0.03, 20), az + rng.normal(0, 0.05, 20))
    fov_lon, fov_lat = view.fov_coordinates(directions)

    d_alt, d_az = alt_az_from_direction(directions)
    pointing = SkyCoord(alt=alt * u.rad, az=az * u.rad, frame=AltAz())
    expected = SkyCoord(alt=d_alt * u.rad, az=d_az * u.rad, frame=AltAz()).transform_to(
        TelescopeFrame(telescope_pointing=pointing)
    )
    assert np.allclose(fov_lon, expected.fov_lon.to_value(u.deg), atol=1e-6)
    assert np.allclose(fov_lat, expected.fov_lat.to_value(u.deg), atol=1e-6)


@pytest.mark.parametrize("camera_name", ["LSTCam", "NectarCam", "FlashCam"])
def test_photons_land_in_the_pixel_containing_them(real_cameras, camera_name):
    """The grid-cell pixel search finds the same pixels as a full nearest-neighbour search, for
    hexagonal cameras of different layouts and orientations."""
    geometry = next(g for name, g in real_cameras.items() if camera_name in name)
    response = CameraResponse(geometry, CameraSimulator(psf_sigma=1e-9))
    pixels = np.column_stack([response.pixel_lon, response.pixel_lat])
    extent = np.abs(pixels).max() + 0.2  # deg, beyond the camera edge
    rng = np.random.default_rng(4)
    n = 300_000
    light = LightOnMirror(*rng.uniform(-extent, extent, (2, n)), rng.uniform(0, 2, n), rng.uniform(0, 30, n))
    expected, mean_time = response.expected_photoelectrons(light, np.random.default_rng(5))

    distance, nearest = cKDTree(pixels).query(np.column_stack([light.fov_lon, light.fov_lat]))
    inside = distance < response._max_distance[nearest]
    weight = light.photons[inside] * response.settings.photon_detection_efficiency
    pixel = nearest[inside]
    reference = np.bincount(pixel, weights=weight, minlength=response.n_pixels)
    reference_time = np.bincount(pixel, weights=weight * light.time[inside], minlength=response.n_pixels)
    assert np.count_nonzero(reference) > 0.95 * response.n_pixels
    assert np.allclose(expected, reference, rtol=1e-9)
    lit = reference > 0
    assert np.allclose(mean_time[lit], reference_time[lit] / reference[lit], rtol=1e-9)
    assert np.all(np.isnan(mean_time[~lit]))


def test_trigger_patches_and_peak_times(real_cameras):
    """A compact 40 p.e. spot triggers (the patch sums of the expected image bound it from above,
    so it is not skipped); noise alone does not. Only triggered images get peak times: signal pixels
    near the trigger time, all inside the read-out window (the direct model; the waveforms are
    tested in test_waveforms.py)."""
    geometry = next(g for name, g in real_cameras.items() if "LSTCam" in name)
    settings = CameraSimulator(waveforms=False)
    response = CameraResponse(geometry, settings)
    rng = np.random.default_rng(3)
    dark = np.zeros(response.n_pixels)
    assert not response.may_trigger(dark)
    assert response.digitize(dark, np.full(response.n_pixels, np.nan), rng).peak_time is None

    spot = np.zeros(response.n_pixels)
    centre = 900
    neighbours = geometry.neighbors[centre]
    spot[centre], spot[neighbours] = 16.0, 24.0 / len(neighbours)
    assert response.may_trigger(spot)
    mean_time = np.where(spot > 0, 5.0, np.nan)
    image = response.digitize(spot, mean_time, rng)
    assert image.triggered and image.n_trigger_pixels >= 1
    assert image.image.dtype == np.float32 and image.peak_time.dtype == np.float32
    assert np.all((image.peak_time >= 0) & (image.peak_time <= settings.readout_window))
    assert abs(image.peak_time[centre] - settings.trigger_time) < 2.0
    patch = image.image[centre] + image.image[neighbours].sum()
    assert patch > settings.trigger_threshold


def test_rotate_away_keeps_unit_vectors_and_turns_by_the_angle():
    rng = np.random.default_rng(2)
    direction = sky_direction(rng.uniform(0.2, np.pi / 2, 500), rng.uniform(0, 2 * np.pi, 500))
    angle = rng.uniform(0, 0.5, 500)
    turned = rotate_away(direction, angle, rng.uniform(0, 2 * np.pi, 500))
    assert np.allclose(np.linalg.norm(turned, axis=1), 1.0)
    assert np.allclose(np.arccos(np.clip(np.einsum("ij,ij->i", turned, direction), -1, 1)), angle, atol=1e-6)
    first, second = perpendicular_basis(direction)
    for a, b in [(first, second), (first, direction), (second, direction)]:
        assert np.allclose(np.einsum("ij,ij->i", a, b), 0.0, atol=1e-12)
    # one direction and scalar angles, as the primary sampler calls it
    assert rotate_away(direction[0], 0.0, 1.0).shape == (1, 3)


def test_primaries_power_law_view_cone_and_scatter_radius():
    sampler = PrimarySampler(
        "proton", 0.01, 100.0, -2.0, max_impact=500.0, view_cone=np.radians(5.0),
        centre_alt=np.radians(70.0), centre_az=0.0,
    )
    rng = np.random.default_rng(2)
    primaries = [sampler.sample(rng) for _ in range(4000)]
    energy = np.array([p.energy for p in primaries])
    # maximum-likelihood index of a bounded power law is close to -2
    log_ratio = np.log(energy / 0.01)
    assert -1 - 1 / log_ratio.mean() == pytest.approx(-2.0, abs=0.12)
    offsets = np.degrees(
        np.arccos(np.clip([p.direction @ sampler.centre_direction for p in primaries], -1, 1))
    )
    assert offsets.max() <= 5.0
    # uniform in solid angle: half of the showers inside 5°/√2
    assert np.mean(offsets < 5.0 / np.sqrt(2)) == pytest.approx(0.5, abs=0.03)
    # core distances from the array centre, in the plane perpendicular to each axis
    impact = [
        np.linalg.norm(np.cross([p.core_x, p.core_y, 0.0], p.direction)) for p in primaries
    ]
    assert max(impact) <= 500.0 + 1e-6
    # first interaction: proton-air mean free path ~83 g/cm² at 1 TeV, photons 9/7 X0
    for particle, expected in (("proton", 83.3), ("gamma", 47.2)):
        at_1_tev = PrimarySampler(particle, 1.0, 1.0001, -2.0, 100.0, 0.0, np.radians(70.0), 0.0)
        depth = [at_1_tev.sample(rng).first_interaction_depth for _ in range(3000)]
        assert np.mean(depth) == pytest.approx(expected, rel=0.06)


def _telescope_frame(alt, az, pointing_alt, pointing_az):
    """(offset, position angle) in deg of (alt, az) around the pointing, by ctapipe's
    TelescopeFrame (all angles in deg); the position angle in (-180, 180]."""
    pointing = SkyCoord(alt=pointing_alt * u.deg, az=pointing_az * u.deg, frame=AltAz())
    fov = SkyCoord(alt=np.asarray(alt) * u.deg, az=np.asarray(az) * u.deg, frame=AltAz()).transform_to(
        TelescopeFrame(telescope_pointing=pointing)
    )
    offset = fov.separation(SkyCoord(0 * u.deg, 0 * u.deg, frame=fov.frame)).deg
    return offset, np.degrees(np.arctan2(fov.fov_lon.rad, fov.fov_lat.rad))


def test_view_cone_around_a_source_at_any_position_angle(lst1_subarray):
    """Thrown directions are uniform in solid angle on the cone around its axis, the source here,
    wherever the source sits around the pointing."""
    config = Config({"ShowerSimulator": {
        "particle": "gamma-diffuse", "view_cone": 2.0, "view_cone_centre": "source",
        "source_offset": 1.0, "source_position_angle": 135.0, "pointing_az": 30.0,
    }})
    simulator = ShowerSimulator(lst1_subarray, config=config)
    source_alt, source_az = np.degrees(simulator.source_position)
    offset, angle = _telescope_frame(source_alt, source_az, 70.0, 30.0)
    assert offset == pytest.approx(1.0, abs=1e-9)
    assert angle == pytest.approx(135.0, abs=0.02)

    rng = np.random.default_rng(4)
    primaries = [simulator.sampler.sample(rng) for _ in range(4000)]
    alt, az = np.degrees([[p.alt for p in primaries], [p.az for p in primaries]])
    # around the source: within the cone, half of the solid angle inside 2°/√2, every direction
    around_source = SkyCoord(alt=alt * u.deg, az=az * u.deg, frame=AltAz()).transform_to(
        TelescopeFrame(telescope_pointing=SkyCoord(alt=source_alt * u.deg, az=source_az * u.deg,
                                                   frame=AltAz()))
    )
    distance = np.hypot(around_source.fov_lon.deg, around_source.fov_lat.deg)
    assert distance.max() <= 2.0 + 1e-3
    assert np.mean(distance < 2.0 / np.sqrt(2)) == pytest.approx(0.5, abs=0.03)
    quadrant = np.floor_divide(np.arctan2(around_source.fov_lon.rad, around_source.fov_lat.rad), np.pi / 2)
    assert np.bincount((quadrant + 2).astype(int), minlength=4) / len(quadrant) == pytest.approx(
        np.full(4, 0.25), abs=0.03
    )
    # the pointing is not the centre: the mean direction is the source's
    from_pointing, _ = _telescope_frame(alt, az, 70.0, 30.0)
    assert from_pointing.max() == pytest.approx(3.0, abs=0.05)

    # the four wobble positions at 0.4°: above, at larger azimuth, below, at smaller azimuth
    wobble = {angle: np.degrees(ShowerSimulator(lst1_subarray, config=Config({"ShowerSimulator": {
        "source_position_angle": angle, "pointing_az": 30.0}})).source_position)
        for angle in (0.0, 90.0, 180.0, 270.0)}
    assert wobble[0.0][0] > wobble[90.0][0] > wobble[180.0][0]
    assert wobble[90.0][1] > 30.0 > wobble[270.0][1]
    for angle, (alt, az) in wobble.items():
        offset, position_angle = _telescope_frame(alt, az, 70.0, 30.0)
        assert offset == pytest.approx(0.4, abs=1e-9)
        assert np.mod(position_angle - angle + 180, 360) - 180 == pytest.approx(0, abs=0.01)


def test_source_position_angle_and_pointing_centred_cones_in_files(tmp_path):
    """True directions written to the files: point-like gammas exactly at the source (offset and
    position angle as asked), diffuse gammas inside the cone around the pointing, and the run
    table's axis the source or the pointing accordingly."""
    common = dict(n_showers=60, energy_min=0.2, energy_max=2.0, max_impact=150.0, seed=3,
                  pointing_alt=65.0, pointing_az=200.0)
    expected = {}
    for offset, position_angle in ((1.0, 0.0), (0.4, 270.0)):
        path = simulate_to_file(tmp_path / f"gamma_{position_angle:.0f}.dl1.h5", particle="gamma",
                                source_offset=offset, source_position_angle=position_angle, **common)
        expected[path] = ("point", offset, position_angle)
    diffuse = simulate_to_file(tmp_path / "diffuse.dl1.h5", particle="gamma-diffuse", view_cone=1.5,
                               source_offset=1.0, source_position_angle=90.0, **common)
    expected[diffuse] = ("pointing", 1.5, None)

    for path, (kind, value, position_angle) in expected.items():
        with TableLoader(path, simulated=True, observation_info=True) as loader:
            events = loader.read_subarray_events()
            run = loader.read_simulation_configuration()
        assert len(events) > 15, path
        pointing_alt = events["subarray_pointing_lat"].quantity.to_value(u.deg)
        pointing_az = events["subarray_pointing_lon"].quantity.to_value(u.deg)
        assert np.allclose(pointing_alt, 65.0) and np.allclose(pointing_az, 200.0)
        true_alt = events["true_alt"].quantity.to_value(u.deg)
        true_az = events["true_az"].quantity.to_value(u.deg)
        offset, angle = _telescope_frame(true_alt, true_az, 65.0, 200.0)
        axis_offset, _ = _telescope_frame(run["min_alt"].quantity.to_value(u.deg)[0],
                                          run["min_az"].quantity.to_value(u.deg)[0], 65.0, 200.0)
        if kind == "point":
            assert np.allclose(offset, value, atol=1e-6)
            assert np.allclose(np.mod(angle - position_angle + 180, 360) - 180, 0, atol=0.02)
            assert axis_offset == pytest.approx(value, abs=1e-6)  # the run table's axis: the source
            assert run["max_viewcone_radius"].quantity[0] == 0 * u.deg
        else:
            # the diffuse cone is centred on the pointing, not on the source at 1° / 90°
            assert offset.max() <= value + 1e-6
            assert np.count_nonzero(np.abs(angle) > 90) > 0.2 * len(angle)
            assert axis_offset == pytest.approx(0.0, abs=1e-6)
            assert run["max_viewcone_radius"].quantity[0] == value * u.deg


def test_muon_hitting_the_mirror_makes_a_ring():
    atmosphere = Atmosphere()
    view = TelescopeView([0, 0, 0], np.pi / 2, 0.0, 386.7, 2200.0)
    # a 20 GeV vertical muon from 2 km above, hitting the mirror 5 m from its centre
    muons = Muons(
        position=np.array([[5.0, 0.0, 2000.0]]),
        direction=np.array([[0.0, 0.0, -1.0]]),
        energy=np.array([20.0]),
        time=np.zeros(1),
    )
    light = muon_light(muons, view, atmosphere, np.random.default_rng(3))
    radius = np.hypot(light.fov_lon, light.fov_lat)
    weighted = np.average(radius, weights=light.photons)
    expected = np.degrees(np.arccos(atmosphere.cherenkov_cos_angle(2700.0, np.sqrt(1 - (0.10566 / 20) ** 2))))
    assert weighted == pytest.approx(expected, abs=0.1)
    azimuth = np.arctan2(light.fov_lat, light.fov_lon)
    assert np.ptp(azimuth) > 1.8 * np.pi  # a full ring, not an arc
    assert 1000 < light.photons.sum() < 100000


def test_options_are_checked(lst1_subarray):
    for bad in (
        {"energy_min": 10 * u.TeV, "energy_max": 1 * u.TeV},
        {"particle": "gamma", "view_cone": 3.0},
        {"pointing_alt": 10.0},
        {"max_impact": -1.0},
        {"source_position_angle": 400.0},
    ):
        with pytest.raises(ValueError):
            ShowerSimulator(lst1_subarray, config=Config({"ShowerSimulator": bad}))


# --- the Tool -------------------------------------------------------------------------------
def _table_contents(path):
    """Every table of an HDF5 file (path → rows), leaving out the file-level metadata."""
    with tables.open_file(path) as h5:
        return {node._v_pathname: node.read() for node in h5.walk_nodes("/", "Table")}


def test_same_seed_same_file_and_workers_do_not_matter(tmp_path):
    options = dict(particle="gamma", n_showers=80, energy_min=0.1, max_impact=250.0)
    first = simulate_to_file(tmp_path / "a.dl1.h5", seed=5, **options)
    second = simulate_to_file(tmp_path / "b.dl1.h5", seed=5, n_workers=2, **options)
    other = simulate_to_file(tmp_path / "c.dl1.h5", seed=6, **options)
    a, b, c = (_table_contents(p) for p in (first, second, other))
    assert a.keys() == b.keys()
    assert len(a["/dl1/event/subarray/trigger"]) > 5
    for name in a:
        for column in a[name].dtype.names:
            # NaN parameters of images that do not survive the cleaning compare equal here
            np.testing.assert_array_equal(a[name][column], b[name][column], err_msg=f"{name}:{column}")
    assert not np.array_equal(
        a["/simulation/event/subarray/shower"], c["/simulation/event/subarray/shower"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dl1.h5", "b.dl1.h5", "c.dl1.h5"]


def test_tool_refuses_existing_output_and_bad_options(tmp_path):
    existing = tmp_path / "exists.dl1.h5"
    existing.write_text("keep me")
    assert run_tool(SimulateShowers(), [f"--output={existing}", "--n-showers=5"], raises=False) != 0
    assert existing.read_text() == "keep me"

    output = tmp_path / "bad.dl1.h5"
    for argv in (
        ["--n-showers=0"],
        ["--energy-min=2 TeV", "--energy-max=1 TeV"],
        ["--particle=gamma", "--view-cone=4"],
        ["--workers=0"],
        ["--subarray=/does/not/exist.h5"],
    ):
        with pytest.raises((ToolConfigurationError, Exception)):
            run_tool(SimulateShowers(), [f"--output={output}", *argv], raises=True)
    with pytest.raises(ToolConfigurationError, match="pointing zenith 70.0°"):
        run_tool(SimulateShowers(), [f"--output={output}", "--pointing-zenith=20", "--pointing-zenith=70"],
                 raises=True)
    # nothing written: neither the output nor a temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.dl1.h5"]


def test_subarray_from_a_file(tmp_path, real_dl1_files):
    """Any subarray works, e.g. the 4 LSTs + 9 MSTs (NectarCam) of a real production file."""
    source = real_dl1_files["proton_run000001_za20deg_azm180deg_North_CTAO-North-Alpha_7.0.0_test"]
    output = simulate_to_file(
        tmp_path / "array.dl1.h5", particle="gamma", n_showers=40, energy_min=0.3,
        max_impact=150.0, subarray_path=source, seed=1,
    )
    with TableLoader(output) as loader:
        assert len(loader.subarray) == 13
        events = loader.read_telescope_events_by_type()
    assert len(events) >= 2  # LSTs and MSTs both saw showers


# --- the standard DL1 files -----------------------------------------------------------------
def test_dl1_files_are_standard(simulated_dl1_files):
    with tables.open_file(simulated_dl1_files["gamma"]) as h5:
        for group in (
            "/configuration/instrument/subarray/layout",
            "/configuration/simulation/run",
            "/configuration/telescope/pointing/tel_001",
            "/simulation/event/subarray/shower",
            "/simulation/event/telescope/images/tel_001",
            "/simulation/event/telescope/impact/tel_001",
            "/simulation/event/telescope/parameters/tel_001",
            "/simulation/service/atmosphere_density_profile",
            "/dl1/event/subarray/trigger",
            "/dl1/event/telescope/trigger",
            "/dl1/event/telescope/images/tel_001",
            "/dl1/event/telescope/parameters/tel_001",
        ):
            assert group in h5, group

    for name, primary_id in (("gamma", 0), ("gamma_diffuse", 0), ("proton", 101)):
        with TableLoader(
            simulated_dl1_files[name], dl1_images=True, dl1_parameters=True, true_images=True,
            true_parameters=True, simulated=True, pointing=True, instrument=True,
        ) as loader:
            events = loader.read_telescope_events()
            config = loader.read_simulation_configuration()
        assert len(events) > 150, name
        assert np.all(events["true_shower_primary_id"] == primary_id)
        assert events["image"].shape[1] == 1855
        assert events["image_mask"].dtype == bool
        peak_time = np.asarray(events["peak_time"])
        assert np.all((peak_time >= 0) & (peak_time <= 40))
        assert np.all(np.isfinite(events["true_impact_distance"]))
        assert np.all(np.isfinite(events["true_x_max"]))
        assert np.all(events["true_image_sum"] > 0)
        assert np.allclose(events["telescope_pointing_altitude"].quantity.to_value(u.deg), 70.0)
        assert np.isfinite(events["hillas_intensity"]).mean() > 0.4
        assert config["n_showers"][0] == pytest.approx(
            {"gamma": 600, "gamma_diffuse": 800, "proton": 900}[name]
        )
        assert config["spectral_index"][0] == -2.0
        assert bool(config["diffuse"][0]) == (name != "gamma")


def test_gammas_near_threshold_and_protons_are_different(simulated_dl1_files):
    def load(name):
        with TableLoader(simulated_dl1_files[name], dl1_parameters=True, simulated=True) as loader:
            events = loader.read_telescope_events()
        return events[np.isfinite(events["hillas_intensity"]) & (events["hillas_intensity"] > 100)]

    gammas, protons = load("gamma_diffuse"), load("proton")
    # bright proton images are much wider than gammas'; faint ones are mostly the light of one
    # leading sub-shower, about as wide as gammas' (the shared real images cannot tell more: their
    # faint gammas are at zenith 40°, their protons at 20°, and the matched widths of both are
    # within 2 % of sim_telarray's, docs/simulation.rst)
    for (low, high), factor in (((100, 300), 0.9), ((300, 3000), 1.5)):
        g = gammas[(gammas["hillas_intensity"] >= low) & (gammas["hillas_intensity"] < high)]
        p = protons[(protons["hillas_intensity"] >= low) & (protons["hillas_intensity"] < high)]
        assert np.median(p["hillas_width"]) > factor * np.median(g["hillas_width"])
    assert np.mean(protons["morphology_n_islands"] > 1) > np.mean(gammas["morphology_n_islands"] > 1)


def test_ctapipe_tools_train_and_process(simulated_dl1_files, tmp_path):
    from ctapipe.tools.process import ProcessorTool
    from ctapipe.tools.train_particle_classifier import TrainParticleClassifier

    config = tmp_path / "rf.yaml"
    config.write_text(
        """
TrainParticleClassifier:
  CrossValidator: {n_cross_validations: 2}
  ParticleClassifier:
    model_cls: RandomForestClassifier
    model_config: {n_estimators: 20, max_depth: 8}
    QualityQuery:
      quality_criteria: [["enough intensity", "hillas_intensity > 50"]]
    features: [hillas_intensity, hillas_width, hillas_length, hillas_skewness, timing_slope,
               leakage_intensity_width_2, morphology_n_islands, concentration_core]
"""
    )
    model = tmp_path / "classifier.pkl"
    run_tool(
        TrainParticleClassifier(),
        [
            f"--signal={simulated_dl1_files['gamma_diffuse']}",
            f"--background={simulated_dl1_files['proton']}",
            f"--output={model}",
            f"--config={config}",
            "--log-level=WARN",
        ],
        cwd=tmp_path,
        raises=True,
    )
    assert model.exists()
    output = tmp_path / "reprocessed.dl1.h5"
    run_tool(
        ProcessorTool(),
        [f"--input={simulated_dl1_files['gamma']}", f"--output={output}", "--log-level=WARN"],
        cwd=tmp_path,
        raises=True,
    )
    with TableLoader(output, simulated=True) as loader:
        assert len(loader.read_subarray_events()) > 100


def test_x_max_is_written_as_vertical_depth_like_sim_telarray(tmp_path):
    """The same 1 TeV gamma showers at zenith 20° and 40°: their maximum lies at the same slant
    depth along the axis, so the vertical depths written scale with cos(zenith)."""
    x_max = {}
    for zenith in (20, 40):
        path = simulate_to_file(tmp_path / f"za{zenith}.dl1.h5", particle="gamma", n_showers=80, seed=3,
                                energy_min=0.9, energy_max=1.1, max_impact=100.0, pointing_alt=90.0 - zenith)
        with TableLoader(path, simulated=True) as loader:
            x_max[zenith] = np.median(loader.read_subarray_events()["true_x_max"].quantity.to_value("g/cm2"))
    ratio = np.cos(np.radians(40)) / np.cos(np.radians(20))
    assert x_max[40] / x_max[20] == pytest.approx(ratio, rel=0.05)


def test_images_are_compressed_at_the_simulator_level_unless_configured(simulated_dl1_files, tmp_path):
    """The simulator writes with blosc:zstd level 3 (docs: "Speed and memory"); a configured
    ``DataWriter.compression_level`` wins."""
    import tables

    from ctapipe_gammaphysnet.simulation.runner import COMPRESSION_LEVEL

    def image_filters(path):
        with tables.open_file(path) as h5:
            return h5.root.dl1.event.telescope.images.tel_001.filters

    filters = image_filters(simulated_dl1_files["gamma"])
    assert (filters.complib, filters.complevel) == ("blosc:zstd", COMPRESSION_LEVEL) == ("blosc:zstd", 3)
    output = tmp_path / "level5.dl1.h5"
    run_tool(SimulateShowers(), [f"--output={output}", "--n-showers=60", "--seed=2", "--energy-min=1TeV",
                                 "--DataWriter.compression_level=5", "--SimulateShowers.progress_bar=False",
                                 "--log-level=WARN"], cwd=tmp_path, raises=True)
    assert image_filters(output).complevel == 5
    # also when set for the tool's own DataWriter only
    config = tmp_path / "simulate.yaml"
    config.write_text("SimulateShowers:\n  DataWriter:\n    compression_level: 4\n")
    output = tmp_path / "level4.dl1.h5"
    run_tool(SimulateShowers(), [f"--output={output}", "--n-showers=60", "--seed=2", "--energy-min=1TeV",
                                 f"--config={config}", "--SimulateShowers.progress_bar=False",
                                 "--log-level=WARN"], cwd=tmp_path, raises=True)
    assert image_filters(output).complevel == 4
