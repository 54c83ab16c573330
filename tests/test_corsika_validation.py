"""The shower model against real CORSIKA photon fields, and the camera model fed with CORSIKA photons
against sim_telarray images of the same showers (docs/simulation.rst, "Photon fields against
CORSIKA"). Goals not reached yet are strict xfails: they fail loudly once the model reaches them."""
import numpy as np
import pytest

from ctapipe_gammaphysnet.simulation.corsika_reference import (
    compare_detector_images,
    compare_photon_fields,
    corsika_spheres,
    matched_model_light,
    photon_field_summary,
    read_corsika,
    read_simtel_light_pool,
    scatter_between_showers,
    shower_model_for,
    summarise_photon_fields,
)

from conftest import SHARED_DATA

RUN = "gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test"
CORSIKA_FILE = SHARED_DATA / "corsika" / f"{RUN}.corsika.zst"
SIMTEL_FILE = SHARED_DATA / "simtel" / f"{RUN}.simtel.zst"
SHARED_EVENTS = {10: 1000, 15: 1500, 17: 1700, 19: 1900}
LASERCAL_FILE = SHARED_DATA / "simtel" / "test_lasercal_v3.simtel.gz"
PROTON_FILE = SHARED_DATA / "simtel" / "proton_run202_za20deg_azm0deg_North_test_layout_test-prod.simtel.zst"
#: the shower model before its calibration on CORSIKA's light pools (Hillas' exp(-θ/θ0) angles)
FORMER_MODEL = dict(angular_scale=0.7, angular_spread_dof=1, lateral_scale=0.42, angular_age_power=0.0)


@pytest.fixture(scope="session")
def corsika_showers():
    return read_corsika(CORSIKA_FILE)


@pytest.fixture(scope="session")
def photon_fields(corsika_showers):
    """20 CORSIKA showers of 100 GeV at zenith 40°, 4 LST spheres each, 10 matched model showers each."""
    return compare_photon_fields(corsika_showers, n_matched=10, seed=3)


@pytest.fixture(scope="session")
def summary(photon_fields):
    return {row["quantity"]: row for row in summarise_photon_fields(photon_fields)}


@pytest.fixture(scope="session")
def all_photon_fields():
    """Every shared CORSIKA file (60 showers, 219 spheres), 6 matched model showers each."""
    files = sorted(p for p in (SHARED_DATA / "corsika").iterdir() if p.is_file())
    return compare_photon_fields([s for p in files for s in read_corsika(p)], n_matched=6, seed=3)


@pytest.fixture(scope="session")
def all_summary(all_photon_fields):
    return {row["quantity"]: row for row in summarise_photon_fields(all_photon_fields)}


def test_corsika_showers_match_the_sim_telarray_truth(corsika_showers):
    """Reading CORSIKA: direction in the array frame, cores and X_max as sim_telarray has them."""
    from ctapipe.io import SimTelEventSource

    by_number = {s.event_number: s for s in corsika_showers}
    assert len(corsika_showers) == 20
    with SimTelEventSource(SIMTEL_FILE) as source:
        for event in source:
            shower = by_number[event.index.event_id // 100]
            truth = event.simulation.shower
            alt, az = np.degrees(shower.source_alt_az)
            assert alt == pytest.approx(truth.alt.to_value("deg"), abs=1e-3)
            assert az == pytest.approx(truth.az.to_value("deg"), abs=1e-3)
            core = -shower.telescope_offsets[0, :2] + source.subarray.positions[1][:2].to_value("m")
            assert core == pytest.approx([truth.core_x.to_value("m"), truth.core_y.to_value("m")], abs=0.01)
            # sim_telarray's x_max is the vertical depth of CORSIKA's charged-particle maximum
            vertical = shower.x_max * np.cos(shower.zenith)
            assert vertical == pytest.approx(truth.x_max.to_value("g/cm2"), abs=0.5)
            assert shower.first_interaction_height == pytest.approx(truth.h_first_int.to_value("m"), rel=1e-4)


CLASSES = ("ratio 0-150 m", "ratio 150-300 m", "ratio > 300 m")


def test_ideal_image_centroid_length_and_heights_within_goal(summary):
    """Within 20 % of CORSIKA at every core distance: the centroid offset from the source and the
    emission heights (median and spread); the core length of the ideal image beyond 150 m (nearer
    the core it is ~0.8 × CORSIKA's for these showers, ~0.86 over all shared files)."""
    for quantity in ("centroid offset", "median emission height above ground", "emission-height spread"):
        for distance in CLASSES:
            assert summary[quantity][distance] == pytest.approx(1.0, abs=0.2), (quantity, distance)
    for distance in CLASSES[1:]:
        assert summary["core length (16-84 %)"][distance] == pytest.approx(1.0, abs=0.2), distance


def test_photon_scatter_between_showers_within_goal(photon_fields):
    """Shower-to-shower scatter of the photons at similar core distance within 30 % of CORSIKA's."""
    (row,) = scatter_between_showers(photon_fields, "photons")
    assert row["spheres"] > 60
    assert row["model_scatter"] / row["corsika_scatter"] == pytest.approx(1.0, abs=0.3), row


def test_photons_emitted_by_the_whole_shower_within_goal(summary):
    """The whole shower emits as many Cherenkov photons as in CORSIKA's longitudinal table."""
    row = summary["photons emitted by the whole shower (per shower)"]
    assert row["spheres"] == 20
    assert row["ratio all"] == pytest.approx(1.0, abs=0.2), row


def test_photon_counts_within_goal(summary):
    """The photons at the spheres within 20 % of CORSIKA's at every core distance."""
    for distance in CLASSES:
        assert summary["photons (no CEFFIC files)"][distance] == pytest.approx(1.0, abs=0.2), distance


def test_ideal_image_core_width_and_length_within_goal(all_summary):
    """Over all shared CORSIKA showers the cores (16-84 %) of the ideal images are as wide and as
    long as CORSIKA's."""
    for quantity in ("core width (16-84 %)", "core length (16-84 %)"):
        assert all_summary[quantity]["spheres"] > 200
        assert all_summary[quantity]["ratio all"] == pytest.approx(1.0, abs=0.2), quantity


@pytest.mark.xfail(strict=True, reason="faint wide-angle tails: covariance width 1.28x and length 1.25x overall")
def test_ideal_image_covariance_width_and_length_within_goal(all_summary):
    for quantity in ("width", "length"):
        assert all_summary[quantity]["ratio all"] == pytest.approx(1.0, abs=0.2), quantity


@pytest.mark.xfail(strict=True, reason="image shapes fluctuate too little: width and length scatter 0.3-0.9x")
def test_shape_scatter_between_showers_within_goal(all_photon_fields):
    for quantity in ("width", "length"):
        for row in scatter_between_showers(all_photon_fields, quantity):
            assert row["model_scatter"] / row["corsika_scatter"] == pytest.approx(1.0, abs=0.3), row


def test_arrival_time_spread_overall_within_goal(all_summary):
    """Over all shared CORSIKA showers the arrival-time spread of the light is CORSIKA's."""
    assert all_summary["arrival-time spread"]["ratio all"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.xfail(strict=True, reason="arrival times too concentrated inside 150 m (~0.7x)")
def test_arrival_time_spread_within_goal(summary):
    for distance in CLASSES:
        assert summary["arrival-time spread"][distance] == pytest.approx(1.0, abs=0.2)


def test_camera_model_on_corsika_photons_against_sim_telarray(corsika_showers):
    """The detector part alone: CORSIKA photons through the camera model land on the pixels where
    sim_telarray put its photo-electrons (true images correlate pixel by pixel)."""
    table = compare_detector_images(corsika_showers, SIMTEL_FILE, n_noise=2, seed=1)
    assert sorted(set(table["event_id"])) == sorted(SHARED_EVENTS.values())
    assert len(table) == 13
    assert np.all(table["true_pe_pixel_correlation"] > 0.85)
    # the photon detection efficiency is calibrated on these images: CORSIKA's photons give
    # sim_telarray's photo-electrons
    ratio = np.asarray(table["model_expected_pe"]) / np.asarray(table["sim_telarray_true_pe"])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1), ratio
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


def test_bunch_directions_keep_the_mean_light_and_make_shapes_fluctuate(corsika_showers):
    """Per-bunch electron directions (bunch_spread_fraction < 1) leave the mean photons at each
    sphere as they are, and make the image width scatter more from shower to shower."""
    shower = corsika_showers[0]
    photons, scatter = {}, {}
    for fraction in (1.0, 0.5):
        model = shower_model_for(shower, bunch_spread_fraction=fraction)
        rng = np.random.default_rng(5)
        fields = [matched_model_light(shower, model, rng)[0] for _ in range(40)]
        summaries = [[photon_field_summary(*light[shower.reuse, i]) for i in range(len(shower.radii))]
                     for light in fields]
        photons[fraction] = np.mean([[s["photons"] for s in row] for row in summaries], axis=0)
        width = np.array([[s["width"] for s in row] for row in summaries])
        scatter[fraction] = np.std(width, axis=0) / np.mean(width, axis=0)
    assert photons[0.5] == pytest.approx(photons[1.0], rel=0.05)
    assert np.all(scatter[0.5] > 1.2 * scatter[1.0]), scatter


def test_age_dependent_angles_fix_the_light_pool_and_keep_the_core_length(all_summary):
    """Why the default electron angles grow with the shower age, on every shared CORSIKA shower:
    the former model has more than twice CORSIKA's photons inside 150 m; electrons spread twice as
    wide without the age factor fix the photons but make the ideal images' cores 1.3x too long;
    the default (θ0 × age², docs/simulation.rst) has both, and the centroid, core width and
    arrival-time spread, within 20 %."""
    files = sorted(p for p in (SHARED_DATA / "corsika").iterdir() if p.is_file())
    showers = [s for p in files for s in read_corsika(p)]
    former, wide = (
        {row["quantity"]: row for row in summarise_photon_fields(
            compare_photon_fields(showers, n_matched=6, seed=3, **options))}
        for options in (FORMER_MODEL, dict(FORMER_MODEL, angular_scale=2.0, angular_spread_dof=2, lateral_scale=0.55))
    )
    assert former["photons (no CEFFIC files)"]["ratio 0-150 m"] > 2.0
    assert wide["core length (16-84 %)"]["ratio all"] > 1.2
    for distance in CLASSES:
        assert all_summary["photons (no CEFFIC files)"][distance] == pytest.approx(1.0, abs=0.2), distance
    for quantity in ("centroid offset", "core width (16-84 %)", "core length (16-84 %)",
                     "arrival-time spread"):
        assert all_summary[quantity]["ratio all"] == pytest.approx(1.0, abs=0.2), quantity


def test_sim_telarray_records_corsikas_photons_and_spheres(corsika_showers):
    """sim_telarray's photon sums are CORSIKA's photons per sphere: the showers read from the
    sim_telarray file carry the bunch sums, emitted photons, geometry and first interaction of the
    same showers read from the CORSIKA file, and the spheres of its input card."""
    by_number = {(s.event_number, s.reuse): s for s in corsika_showers}
    recorded = read_simtel_light_pool(SIMTEL_FILE)
    assert sorted(100 * s.event_number + s.reuse - 1 for s in recorded) == sorted(SHARED_EVENTS.values())
    for shower in recorded:
        reference = by_number[shower.event_number, shower.reuse]
        bunch_sums = [reference.bunches[i]["photons"].sum() if i in reference.bunches else 0.0
                      for i in range(len(reference.radii))]
        assert shower.sphere_photons == pytest.approx(bunch_sums, rel=1e-5)
        assert shower.emitted_photons == pytest.approx(reference.emitted_photons, rel=1e-6)
        assert shower.telescope_offsets == pytest.approx(reference.telescope_offsets, abs=1e-3)
        assert shower.radii == pytest.approx(reference.radii)
        assert shower.first_interaction_height == pytest.approx(reference.first_interaction_height, abs=0.01)
        assert shower.x_max == pytest.approx(reference.x_max, abs=0.01)
        assert shower.to_sky == pytest.approx(reference.to_sky, abs=1e-6)
        assert shower.band == reference.band


def test_corsika_spheres_of_the_shared_files():
    """The input cards' spheres: 12.5 m LSTs and 9.6 m MSTs in the proton production test, and
    7.5 m for the LSTs of test_lasercal_v3: less than half of the LST mirror lies inside them."""
    from ctapipe.io import SimTelEventSource

    from ctapipe_gammaphysnet.simulation.validation import sphere_limited_mirror_areas

    _, radii = corsika_spheres(PROTON_FILE)
    assert radii[:4] == pytest.approx(12.5) and radii[4:] == pytest.approx(9.6)
    centres, radii = corsika_spheres(LASERCAL_FILE)
    assert radii == pytest.approx(7.5)
    with SimTelEventSource(LASERCAL_FILE) as source:
        subarray = source.subarray
        assert centres[:, :2] == pytest.approx(
            np.stack([subarray.positions[t][:2].to_value("m") for t in subarray.tel]), abs=0.01)
    areas = sphere_limited_mirror_areas(LASERCAL_FILE, subarray)
    mirror = subarray.tel[1].optics.mirror_area.to_value("m2")
    assert areas == {t: pytest.approx(np.pi * 7.5**2) for t in subarray.tel}
    assert areas[1] / mirror == pytest.approx(0.46, abs=0.01)


@pytest.fixture(scope="session")
def tev_light_pools():
    """The 1.37 TeV gamma and the 0.08-8.5 TeV protons of the shared sim_telarray files against
    CORSIKA's recorded photons, the model and the former model."""
    showers = read_simtel_light_pool(LASERCAL_FILE) + read_simtel_light_pool(PROTON_FILE)
    assert {s.particle for s in showers} == {"gamma", "proton"}
    return {
        label: compare_photon_fields(showers, n_matched=4, seed=3, **options)
        for label, options in (("default", {}), ("former", FORMER_MODEL))
    }


def _photon_ratios(table, particle):
    part = table[table["particle"] == particle]
    return {row["quantity"]: row for row in summarise_photon_fields(part)}["photons (no CEFFIC files)"]


def test_light_pool_at_tev_energies_and_for_protons(tev_light_pools):
    """Calibrated at 0.05-0.2 TeV, the model's photons at the spheres are also within 30 % of
    CORSIKA's for the 1.37 TeV gamma and for the protons (0.08-8.5 TeV) in every core-distance
    class; the former model had 1.5x or more of CORSIKA's photons inside 150 m for both and half
    of them beyond 300 m for the protons."""
    default, former = tev_light_pools["default"], tev_light_pools["former"]
    for particle in ("gamma", "proton"):
        ratios = _photon_ratios(default, particle)
        for distance in CLASSES:
            assert ratios[distance] == pytest.approx(1.0, abs=0.3), (particle, distance)
        assert _photon_ratios(former, particle)["ratio 0-150 m"] > 1.5, particle
    assert _photon_ratios(former, "proton")["ratio > 300 m"] < 0.6
