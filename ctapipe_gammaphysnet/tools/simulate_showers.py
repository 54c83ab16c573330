"""``ctapipe-simulate-showers``: simulate air showers and write a standard ctapipe DL1 file."""
from pathlib import Path

from ctapipe.calib import CameraCalibrator
from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, Float, Int, List, Path as PathTrait, classes_with_traits, flag
from ctapipe.image import ImageExtractor, ImageProcessor
from ctapipe.instrument import SubarrayDescription
from ctapipe.io import DataWriter

from ..io.outputs import AtomicOutput
from ..progress import progress_bar
from ..simulation.camera import CameraSimulator
from ..simulation.runner import observations, write_dl1
from ..simulation.simulator import ShowerSimulator
from . import GammaPhysNetTool

__all__ = ["SimulateShowers", "main"]


class SimulateShowers(GammaPhysNetTool):
    """Simulate gamma-ray or cosmic-ray air showers seen by a subarray (default: LST-1) and write
    what ``ctapipe-process --write-images`` writes: images, peak times, image masks, DL1
    parameters, simulated truth and the simulation configuration (compressed with blosc:zstd at
    level 3 unless DataWriter.compression_level is given)."""

    name = "ctapipe-simulate-showers"
    description = __doc__
    examples = """
    ctapipe-simulate-showers --particle gamma --n-showers 10000 --seed 1 -o gamma.dl1.h5 \\
        --source-offset 0.4 --source-position-angle 90
    ctapipe-simulate-showers --particle proton --n-showers 50000 --workers 2 -o proton.dl1.h5 \\
        --energy-min 0.03TeV --view-cone 8
    """

    output_path = PathTrait(
        directory_ok=False, help="output DL1 HDF5 file", default_value=None, allow_none=True
    ).tag(config=True)
    n_showers = Int(1000, help="number of showers to simulate").tag(config=True)
    n_workers = Int(1, help="worker processes (1 = simulate in this process)").tag(config=True)
    subarray_path = PathTrait(
        default_value=None,
        allow_none=True,
        directory_ok=False,
        help="take the subarray from this ctapipe HDF5 or sim_telarray file (default: LST-1)",
    ).tag(config=True)
    obs_id = Int(1, help="observation (run) id written to the file").tag(config=True)
    pointing_zeniths = List(
        Float(), default_value=[],
        help="Zenith angles (deg) of the observations in the file: one observation per angle "
             "(obs ids obs_id, obs_id + 1, …), the showers split evenly between them, as for a "
             "training over a zenith range (docs/zenith.rst); empty: one observation at "
             "ShowerSimulator.pointing_alt",
    ).tag(config=True)
    overwrite = Bool(False, help="overwrite an existing output file").tag(config=True)
    progress_bar = Bool(True, help="show a progress bar").tag(config=True)

    aliases = {
        ("o", "output"): "SimulateShowers.output_path",
        "n-showers": "SimulateShowers.n_showers",
        "workers": "SimulateShowers.n_workers",
        "subarray": "SimulateShowers.subarray_path",
        "obs-id": "SimulateShowers.obs_id",
        "pointing-zenith": "SimulateShowers.pointing_zeniths",
        "particle": "ShowerSimulator.particle",
        "seed": "ShowerSimulator.seed",
        "energy-min": "ShowerSimulator.energy_min",
        "energy-max": "ShowerSimulator.energy_max",
        "spectral-index": "ShowerSimulator.spectral_index",
        "max-impact": "ShowerSimulator.max_impact",
        "view-cone": "ShowerSimulator.view_cone",
        "source-offset": "ShowerSimulator.source_offset",
        "source-position-angle": "ShowerSimulator.source_position_angle",
        "view-cone-centre": "ShowerSimulator.view_cone_centre",
        "pointing-alt": "ShowerSimulator.pointing_alt",
        "pointing-az": "ShowerSimulator.pointing_az",
        "site-altitude": "ShowerSimulator.site_altitude",
        "nsb-rate": "CameraSimulator.nsb_rate",
    }
    flags = {
        **flag("overwrite", "SimulateShowers.overwrite", "overwrite the output", "keep existing output"),
        **flag("progress", "SimulateShowers.progress_bar", "show a progress bar", "no progress bar"),
    }
    # the camera calibrator and extractors make the images from the simulated waveforms
    classes = [
        ShowerSimulator, CameraSimulator, CameraCalibrator, *classes_with_traits(ImageExtractor),
        ImageProcessor, DataWriter,
    ]

    def setup(self):
        if self.output_path is None:
            raise ToolConfigurationError("ctapipe-simulate-showers: no output file given (--output)")
        self.output_path = Path(self.output_path).expanduser().absolute()
        if self.output_path.exists() and not self.overwrite:
            raise ToolConfigurationError(
                f"Output file {self.output_path} exists, use --overwrite to replace it"
            )
        if self.n_showers < 1:
            raise ToolConfigurationError(f"--n-showers must be >= 1, got {self.n_showers}")
        if self.n_workers < 1:
            raise ToolConfigurationError(f"--workers must be >= 1, got {self.n_workers}")

        self.subarray = self._load_subarray()
        try:
            self.simulator = ShowerSimulator(self.subarray, parent=self)
            # each observation's simulator, built now so that a bad zenith fails before any work
            self.observations = observations(self.simulator, self.n_showers, self.obs_id,
                                             self.pointing_zeniths)
        except ValueError as error:
            raise ToolConfigurationError(str(error)) from error

        self.output = AtomicOutput(self.output_path, overwrite=self.overwrite)
        self._exit_stack.callback(self.output.discard)
        self.log.info(
            "simulating %d %s showers (%s - %s, index %.2f) for %d telescope(s) into %s",
            self.n_showers,
            self.simulator.particle,
            self.simulator.energy_min,
            self.simulator.energy_max,
            self.simulator.spectral_index,
            len(self.subarray),
            self.output_path,
        )

    def _load_subarray(self):
        if self.subarray_path is None:
            from ctapipe_io_lst import LSTEventSource

            return LSTEventSource.create_subarray(tel_id=1)
        if not self.subarray_path.is_file():
            raise ToolConfigurationError(f"--subarray: {self.subarray_path} is not a file")
        try:
            return SubarrayDescription.read(self.subarray_path)
        except Exception as error:
            raise ToolConfigurationError(
                f"cannot read a subarray from {self.subarray_path}: {error}"
            ) from error

    def start(self):
        with progress_bar(total=self.n_showers, unit="showers", disable=not self.progress_bar) as progress:
            n_events, n_images = write_dl1(self.output.tmp, self.observations, self.n_workers,
                                           parent=self, progress=progress)
        self.output.commit()
        Provenance().add_output_file(str(self.output_path), role="DL1/Event")
        if n_events == 0:
            self.log.warning("no shower triggered the telescopes: %s holds no events (more "
                             "showers, higher energies or a smaller impact range give some)",
                             self.output_path)
        self.log.info(
            "%d of %d showers triggered, %d images written to %s",
            n_events,
            self.n_showers,
            n_images,
            self.output_path,
        )


def main():
    SimulateShowers().run()


if __name__ == "__main__":
    main()
