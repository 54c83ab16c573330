"""The shower model against real CORSIKA photon fields, and the camera model fed with CORSIKA photons
against sim_telarray images of the same showers (docs/simulation.rst, "Photon fields against
CORSIKA"). Goals not reached yet are strict xfails: they fail loudly once the model reaches them."""
import numpy as np
import pytest

from ctapipe_gammaphysnet.simulation.corsika_reference import (
    compare_detector_images,
    compare_photon_fields,
    matched_model_light,
    photon_field_summary,
    read_corsika,
    scatter_between_showers,
    shower_model_for,
    summarise_photon_fields,
)

from conftest import SHARED_DATA

RUN = "gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test"
CORSIKA_FILE = SHARED_DATA / "corsika" / f"{RUN}.corsika.zst"
SIMTEL_FILE = SHARED_DATA / "simtel" / f"{RUN}.simtel.zst"
SHARED_EVENTS = {10: 1000, 15: 1500, 17: 1700, 19: 1900}


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
    the core it is ~1.3 × CORSIKA's for these showers, ~1.15 over all shared files)."""
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


@pytest.mark.xfail(strict=True, reason="light pool too concentrated: ~2.7x CORSIKA's photons inside 150 m")
def test_photon_counts_within_goal(summary):
    for distance in CLASSES:
        assert summary["photons (no CEFFIC files)"][distance] == pytest.approx(1.0, abs=0.2)


def test_ideal_image_width_and_length_within_goal(all_summary):
    """Over all shared CORSIKA showers the ideal images are as wide and as long as CORSIKA's (the
    emitting electrons' lateral spread is calibrated on this core width)."""
    for quantity in ("core width (16-84 %)", "width", "core length (16-84 %)", "length"):
        assert all_summary[quantity]["spheres"] > 200
        assert all_summary[quantity]["ratio all"] == pytest.approx(1.0, abs=0.2), quantity


@pytest.mark.xfail(strict=True, reason="image shapes fluctuate too little: width and length scatter 0.3-0.9x")
def test_shape_scatter_between_showers_within_goal(all_photon_fields):
    for quantity in ("width", "length"):
        for row in scatter_between_showers(all_photon_fields, quantity):
            assert row["model_scatter"] / row["corsika_scatter"] == pytest.approx(1.0, abs=0.3), row


def test_arrival_time_spread_overall_within_goal(all_summary):
    """Over all shared CORSIKA showers the arrival-time spread of the light is CORSIKA's."""
    assert all_summary["arrival-time spread"]["ratio all"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.xfail(strict=True, reason="arrival times too concentrated inside 150 m (~0.8x)")
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
    # the camera model's photon detection efficiency compensates the shower model's photon
    # excess: on real photons it gives 0.2-0.4 of sim_telarray's photo-electrons
    ratio = np.asarray(table["model_expected_pe"]) / np.asarray(table["sim_telarray_true_pe"])
    assert np.all((ratio > 0.2) & (ratio < 0.4)), ratio


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


def test_wider_electron_angles_fix_the_light_pool_but_lengthen_the_images():
    """The trade-off documented in docs/simulation.rst, on every shared CORSIKA shower: electrons
    spread twice as wide (``angular_scale`` 2) and less along the axis (``angular_spread_dof`` 2)
    bring the photon counts to CORSIKA's at every core distance, where the default model has
    more than twice CORSIKA's inside 150 m, and make the ideal images too long (overall length
    ratio beyond the 20 % goal, which the default model meets)."""
    files = sorted(p for p in (SHARED_DATA / "corsika").iterdir() if p.is_file())
    showers = [s for p in files for s in read_corsika(p)]
    options = dict(angular_scale=2.0, angular_spread_dof=2, lateral_scale=0.55)
    wide = {row["quantity"]: row for row in summarise_photon_fields(
        compare_photon_fields(showers, n_matched=6, seed=3, **options))}
    default = {row["quantity"]: row for row in summarise_photon_fields(
        compare_photon_fields(showers, n_matched=6, seed=3))}
    assert default["photons (no CEFFIC files)"]["ratio 0-150 m"] > 2.0
    for distance in CLASSES:
        assert wide["photons (no CEFFIC files)"][distance] == pytest.approx(1.0, abs=0.2), distance
    assert default["length"]["ratio all"] == pytest.approx(1.0, abs=0.2)
    assert wide["length"]["ratio all"] > 1.2


def test_electron_angles_growing_with_age_keep_photons_and_core_shapes():
    """The lead of docs/simulation.rst, on every shared CORSIKA shower: with θ0 growing as the
    square of the shower age (``angular_age_power`` 2, wide angles late, narrow early) the photon
    counts stay at CORSIKA's at every core distance and the ideal images' centroid, core width,
    core length and arrival-time spread are within 20 % overall, where the wider angles alone
    (previous test) make the core length 1.3x CORSIKA's."""
    files = sorted(p for p in (SHARED_DATA / "corsika").iterdir() if p.is_file())
    showers = [s for p in files for s in read_corsika(p)]
    options = dict(angular_scale=2.0, angular_spread_dof=2, lateral_scale=0.75, angular_age_power=2.0)
    summary = {row["quantity"]: row for row in summarise_photon_fields(
        compare_photon_fields(showers, n_matched=6, seed=3, **options))}
    for distance in CLASSES:
        assert summary["photons (no CEFFIC files)"][distance] == pytest.approx(1.0, abs=0.2), distance
    for quantity in ("centroid offset", "core width (16-84 %)", "core length (16-84 %)",
                     "arrival-time spread"):
        assert summary[quantity]["ratio all"] == pytest.approx(1.0, abs=0.2), quantity
