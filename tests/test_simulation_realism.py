"""The simulator against real sim_telarray LST images, and its geometry conventions."""
import numpy as np
import pytest
from ctapipe.io import TableLoader

from ctapipe_gammaphysnet.simulation.validation import (
    compare_medians,
    major_axis_geometry,
    read_real_images,
    simulate_matched,
    sphere_limited_mirror_areas,
)

REAL_GAMMA_FILES = (
    "gamma_run000007_za40deg_azm180deg_South_subsystem_lsts_7.0.0_test",  # 0.1 TeV, zenith 40°
    "test_lasercal_v3",  # 1.37 TeV, zenith 20°
)


@pytest.mark.parametrize("name", REAL_GAMMA_FILES)
def test_matched_gammas_look_like_sim_telarray(name, real_dl1_files, simtel_files):
    """Showers with the energy, direction, X_max and impact distance of each real LST gamma image,
    on the part of the mirror that the file's CORSIKA spheres cover, give the same median Hillas
    intensity (within ×1.5), width and length (within 30 %)."""
    real, subarray = read_real_images(real_dl1_files[name])
    mirror_areas = sphere_limited_mirror_areas(simtel_files[name], subarray)
    simulated = simulate_matched(real, subarray, n_per_image=8, seed=1, mirror_areas=mirror_areas)
    assert len(simulated) > 3 * len(real)
    medians = compare_medians(real, simulated)
    intensity_ratio = medians["hillas_intensity"][2]
    assert 1 / 1.5 < intensity_ratio < 1.5, medians
    for parameter in ("hillas_width", "hillas_length"):
        assert medians[parameter][2] == pytest.approx(1.0, abs=0.3), medians


def test_source_on_major_axis_on_the_side_of_time_gradient_and_skewness(simulated_dl1_files):
    """Bright point-like gammas: the true source lies on the extension of the Hillas major axis,
    on the side opposite to where arrival times grow and where the light distribution is skewed."""
    with TableLoader(
        simulated_dl1_files["gamma"], dl1_parameters=True, simulated=True, pointing=True
    ) as loader:
        events = loader.read_telescope_events()
        subarray = loader.subarray
    bright = events[
        (events["hillas_intensity"] > 300)
        & (events["leakage_intensity_width_2"] < 0.2)
        & np.isfinite(events["hillas_intensity"])
    ]
    assert len(bright) > 30
    miss, along = major_axis_geometry(bright, subarray)
    assert np.median(miss) < 0.05
    far = np.asarray(bright["true_impact_distance"]) > 100
    time_side = np.sign(along[far]) == -np.sign(np.asarray(bright["timing_slope"])[far])
    skewness_side = np.sign(along) == -np.sign(np.asarray(bright["hillas_skewness"]))
    assert time_side.mean() > 0.85
    assert skewness_side.mean() > 0.75
