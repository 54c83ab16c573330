"""``ctapipe-apply-gammaphysnet``: γ-PhysNet energy, direction and gammaness for a DL1 file.

The batched counterpart of ``ctapipe-process --config gpn.yaml``: the input (DL1 with images) is
copied, then read in chunks of array events, all images of a chunk go through the network in big
batches, and the same DL2 tables as ``ctapipe-process`` writes are appended.

lstchain DL1 files (LST-1) are read as well (``io.lstchain``); with ``--output-format lstchain``
the output is the DL2 file of lstchain's ``lstchain_dl1_to_dl2``, which its IRF and DL3 tools read.
"""
import shutil

import numpy as np
import tables
from astropy.table import vstack
from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, CaselessStrEnum, Integer, List, flag
from ctapipe.core.traits import Path as PathTrait
from ctapipe.io import HDF5Merger, TableLoader, write_table
from ctapipe.io.hdf5dataformat import (DL1_SUBARRAY_TRIGGER_TABLE, DL2_EVENT_STATISTICS_GROUP,
                                       DL2_SUBARRAY_GROUP, DL2_TEL_GROUP)
from ctapipe.io.tableio import TelListToMaskTransform
from ctapipe.reco.reconstructor import ReconstructionProperty
from ctapipe.reco.stereo_combination import StereoMeanCombiner

from ..io import lstchain
from ..io.dl1_dataset import DL1InputError, check_dl1_images
from ..io.outputs import AtomicOutput
from ..progress import progress_bar
from ..reco.components import (
    CLASSIFICATION_GROUP,
    GammaPhysNetClassifier,
    GammaPhysNetComponent,
    GammaPhysNetReconstructor,
)
from ..selection import GammaPhysNetImageSelection
from . import GammaPhysNetTool

__all__ = ["ApplyGammaPhysNetTool", "main"]

_GROUPS = {
    ReconstructionProperty.ENERGY: "energy",
    ReconstructionProperty.GEOMETRY: "geometry",
    ReconstructionProperty.PARTICLE_TYPE: CLASSIFICATION_GROUP,
}


class ApplyGammaPhysNetTool(GammaPhysNetTool):
    """Apply γ-PhysNet models to a DL1 file with images, in batches.

    Writes energy (``GammaPhysNetEnergy``), direction (``GammaPhysNetGeometry``) and gammaness
    (``GammaPhysNetClassifier``) at telescope and array level, as ``ctapipe-process`` with
    ``gpn.yaml`` does.
    """

    name = "ctapipe-apply-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-apply-gammaphysnet \\
        --input gamma.dl1.h5 \\
        --model gammaphysnet.safetensors \\
        --output gamma.dl2.h5
    """

    input_url = PathTrait(None, allow_none=True, directory_ok=False,
                          help="Input DL1 file written with images").tag(config=True)
    output_path = PathTrait(None, allow_none=True, directory_ok=False,
                            help="Output DL2 file").tag(config=True)
    model_paths = List(PathTrait(directory_ok=False), default_value=[],
                       help="γ-PhysNet model files; several form an ensemble").tag(config=True)
    chunk_size = Integer(1000, min=1, help="Array events read and predicted at once").tag(config=True)
    progress_bar = Bool(True, help="Show a progress bar").tag(config=True)
    output_format = CaselessStrEnum(
        ["ctapipe", "lstchain"], default_value="ctapipe",
        help=("ctapipe: the DL2 tables of ctapipe-process, added to a copy of the input; "
              "lstchain (lstchain DL1 input only): lstchain's DL2 file, the DL1 parameter table "
              "with the reco_* and gammaness columns"),
    ).tag(config=True)

    aliases = {
        ("i", "input"): "ApplyGammaPhysNetTool.input_url",
        ("o", "output"): "ApplyGammaPhysNetTool.output_path",
        ("m", "model"): "ApplyGammaPhysNetTool.model_paths",
        "chunk-size": "ApplyGammaPhysNetTool.chunk_size",
        "output-format": "ApplyGammaPhysNetTool.output_format",
        "batch-size": "GammaPhysNetComponent.batch_size",
        "device": "GammaPhysNetComponent.device",
    }
    flags = {
        **flag("progress", "ApplyGammaPhysNetTool.progress_bar",
               "Show a progress bar", "Hide the progress bar"),
        **flag("dl1-images", "HDF5Merger.dl1_images",
               "Copy the DL1 images to the output", "Leave the DL1 images out of the output"),
        **flag("dl1-parameters", "HDF5Merger.dl1_parameters",
               "Copy the DL1 parameters to the output", "Leave the DL1 parameters out"),
        **flag("true-images", "HDF5Merger.true_images",
               "Copy the true images to the output", "Leave the true images out"),
        "overwrite": ({"ApplyGammaPhysNetTool": {"overwrite": True}},
                      "Overwrite the output file if it exists"),
    }
    classes = [TableLoader, HDF5Merger, GammaPhysNetComponent, GammaPhysNetReconstructor,
               GammaPhysNetClassifier, GammaPhysNetImageSelection, StereoMeanCombiner]

    def setup(self):
        if self.input_url is None:
            raise ToolConfigurationError("no input file given (--input)")
        if self.output_path is None:
            raise ToolConfigurationError("no output file given (--output)")
        if not self.model_paths:
            raise ToolConfigurationError("no model file given (--model)")
        if not self.input_url.is_file():
            raise ToolConfigurationError(f"input file {self.input_url} does not exist")
        self.output_path = self.output_path.absolute()
        if self.output_path.exists() and self.output_path.samefile(self.input_url):
            raise ToolConfigurationError(f"output {self.output_path} is the input file")
        self.check_output(self.output_path)
        self._check_input()
        # everything goes to a temporary file next to the output, renamed at the very end
        self.output = AtomicOutput(self.output_path, overwrite=self.overwrite)
        self._exit_stack.callback(self.output.discard)

        self.lstchain_input = lstchain.is_lstchain_dl1(self.input_url)
        if self.output_format == "lstchain" and not self.lstchain_input:
            raise ToolConfigurationError(
                f"--output-format lstchain needs an lstchain DL1 file (its parameter table becomes "
                f"the DL2 table); {self.input_url} is a ctapipe DL1 file")
        if self.lstchain_input:
            try:
                self.subarray = lstchain.read_subarray(self.input_url)
            except lstchain.LSTChainFileError as err:
                raise ToolConfigurationError(str(err)) from None
        else:
            self.loader = self.enter_context(TableLoader(self.input_url, parent=self))
            self.subarray = self.loader.subarray
        self.components = [
            component(self.subarray, model_paths=self.model_paths, parent=self)
            for component in (GammaPhysNetReconstructor, GammaPhysNetClassifier)
        ]
        self._check_no_existing_dl2()

        if self.output_format == "lstchain":
            return  # lstchain.write_dl2 copies what it keeps of the input
        self.log.info("Copying %s", self.input_url)
        if self.lstchain_input:
            shutil.copyfile(self.input_url, self.output.tmp)
        else:
            with HDF5Merger(self.output.tmp, overwrite=True, parent=self) as merger:
                merger(self.input_url)
        self.h5file = tables.open_file(self.output.tmp, mode="r+")
        self._exit_stack.callback(self.h5file.close)

    def _check_input(self):
        try:
            check_dl1_images(self.input_url)
        except DL1InputError as err:
            raise ToolConfigurationError(str(err)) from None

    def _check_no_existing_dl2(self):
        with tables.open_file(self.input_url, mode="r") as h5file:
            if self.output_format == "lstchain" and lstchain.DL2_PARAMETERS in h5file:
                raise ToolConfigurationError(
                    f"{self.input_url} already holds {lstchain.DL2_PARAMETERS}: give a DL1 file")
            for component in self.components:
                for prop, prefix in component.prefixes.items():
                    group = f"{DL2_SUBARRAY_GROUP}/{_GROUPS[prop]}/{prefix}"
                    if group in h5file:
                        raise ToolConfigurationError(
                            f"{self.input_url} already holds {group}; choose other prefixes "
                            f"({component.__class__.__name__}.*_prefix)"
                        )

    def start(self):
        if self.lstchain_input:
            self._start_lstchain()
            return
        chunks = self.loader.read_telescope_events_by_id_chunked(
            self.chunk_size,
            dl1_images=True,
            dl1_parameters=True,
            dl2=False,
            simulated=False,
            true_images=False,
            true_parameters=False,
            pointing=True,
            observation_info=True,
        )
        with progress_bar(total=chunks.n_total, desc="Applying γ-PhysNet", unit=" array events",
                          disable=not self.progress_bar) as bar:
            for start, stop, tel_tables in chunks:
                trigger = self.h5file.root[DL1_SUBARRAY_TRIGGER_TABLE].read(start, stop)
                self._apply(tel_tables, zip(trigger["obs_id"], trigger["event_id"]))
                bar.update(stop - start)

    def _start_lstchain(self):
        """lstchain DL1 input: chunks of LST-1 events, written in the chosen format."""
        path, tel_id = self.input_url, lstchain.TEL_ID
        n_events = lstchain.n_telescope_events(path)
        with progress_bar(total=n_events, desc="Applying γ-PhysNet", unit=" events",
                          disable=not self.progress_bar) as bar:
            def chunks():
                for start in range(0, n_events, self.chunk_size):
                    stop = min(start + self.chunk_size, n_events)
                    table = lstchain.read_telescope_events(path, start, stop, self.subarray)
                    yield start, stop, table
                    bar.update(stop - start)

            if self.output_format == "ctapipe":
                for _, _, table in chunks():
                    self._apply({tel_id: table}, zip(table["obs_id"], table["event_id"]))
                return
            lstchain.write_dl2(path, self.output.tmp, (
                self._lstchain_dl2(lstchain.read_parameters(path, start, stop), table)
                for start, stop, table in chunks()))

    def _lstchain_dl2(self, parameters, table):
        """lstchain's DL2 columns of one chunk: ``(parameters, columns)``."""
        tel = self.subarray.tel[lstchain.TEL_ID]
        predicted = {}
        for component in self.components:
            for prop, result in component.predict_table(tel, table).items():
                prefix = component.prefixes[prop]
                predicted.update({name.removeprefix(f"{prefix}_tel_"): result[name]
                                  for name in result.colnames})
        columns = lstchain.dl2_columns(parameters, predicted["energy"], predicted["alt"],
                                       predicted["az"], predicted["prediction"],
                                       tel.optics.effective_focal_length)
        return parameters, columns

    def _apply(self, tel_tables, events):
        """Predict and write the DL2 tables of one chunk; ``events``: its (obs_id, event_id) in
        array-event order."""
        tel_tables = {tel_id: table for tel_id, table in tel_tables.items() if len(table) > 0}
        predictions = {}  # (component, property) → list of (tel_id, table)
        for tel_id, table in tel_tables.items():
            tel = self.subarray.tel[tel_id]
            for component in self.components:
                for prop, result in component.predict_table(tel, table).items():
                    result.add_columns([table["obs_id"], table["event_id"], table["tel_id"]],
                                       indexes=[0, 0, 0])
                    write_table(
                        result, self.h5file,
                        f"{DL2_TEL_GROUP}/{_GROUPS[prop]}/{component.prefixes[prop]}/"
                        f"tel_{tel_id:03d}",
                        append=True,
                    )
                    result["hillas_intensity"] = table["hillas_intensity"]
                    result["hillas_length"] = table["hillas_length"]
                    result["hillas_width"] = table["hillas_width"]
                    predictions.setdefault((component, prop), []).append(result)
        if not predictions:
            return

        # array-event order of the chunk, so each event's telescopes form one block
        order = {key: i for i, key in enumerate(events)}
        to_mask = TelListToMaskTransform(self.subarray)
        for (component, prop), results in predictions.items():
            mono = vstack(results)
            position = np.array([order[key] for key in zip(mono["obs_id"], mono["event_id"])])
            mono = mono[np.lexsort((mono["tel_id"], position))]
            stereo = component.combiners[prop].predict_table(mono)
            column = f"{component.prefixes[prop]}_telescopes"
            description = stereo[column].description
            stereo[column] = np.array([to_mask(tel_ids) for tel_ids in stereo[column]])
            stereo[column].description = description
            write_table(stereo, self.h5file,
                        f"{DL2_SUBARRAY_GROUP}/{_GROUPS[prop]}/{component.prefixes[prop]}",
                        append=True)

    def finish(self):
        if self.output_format == "ctapipe":
            for component in self.components:
                write_table(component.quality_query.to_table(functions=True), self.h5file,
                            f"{DL2_EVENT_STATISTICS_GROUP}/{component.__class__.__name__}")
            self.h5file.close()
        self.output.commit()
        Provenance().add_output_file(self.output_path, role="DL2/Event")
        self.log.info("Wrote %s", self.output_path)


def main():
    ApplyGammaPhysNetTool().run()


if __name__ == "__main__":
    main()
