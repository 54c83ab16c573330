"""``ctapipe-export-gammaphysnet``: a γ-PhysNet model as an ONNX file for ONNX Runtime."""
import json
from pathlib import Path

from ctapipe.core import Provenance, ToolConfigurationError
from ctapipe.core.traits import Bool, Int, Path as PathTrait, Unicode

from ..io.model_file import METADATA_KEY, ModelFileError, load_model_file
from ..io.outputs import atomic_output, check_output
from ..io.onnx_file import PIX_X_KEY, PIX_Y_KEY
from ..nn.inference import to_onnx
from ..nn.onnx_runtime import DEFAULT_OPSET
from . import GammaPhysNetTool

__all__ = ["ExportGammaPhysNetTool", "export_onnx", "export_telescope_model", "main"]


def export_onnx(network, metadata, output_path, opset=DEFAULT_OPSET):
    """Write ``network`` (a ``GammaPhysNet``) as ONNX with a dynamic batch axis, atomically.

    ``metadata`` is the model file's JSON document restricted to this network's telescope type;
    it is stored with the pixel positions in the ONNX ``metadata_props`` (see ``io.onnx_file``).
    """
    import onnx

    output_path = Path(output_path)
    model = to_onnx(network, opset)
    properties = {METADATA_KEY: json.dumps(metadata),
                  PIX_X_KEY: json.dumps(network.grid.pix_x.tolist()),
                  PIX_Y_KEY: json.dumps(network.grid.pix_y.tolist())}
    for key, value in properties.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "ctapipe_gammaphysnet"
    onnx.checker.check_model(model)
    with atomic_output(output_path, overwrite=True) as tmp:
        onnx.save(model, tmp)
    return output_path


def export_telescope_model(model_file, tel_type, output_path, opset=DEFAULT_OPSET):
    """Export the network of ``tel_type`` of a loaded ``ModelFile`` with its metadata."""
    model = model_file.models[tel_type]
    metadata = {**model_file.metadata, "telescopes": {tel_type: model.metadata}}
    return export_onnx(model.network, metadata, output_path, opset)


class ExportGammaPhysNetTool(GammaPhysNetTool):
    """Export the network of one telescope type of a γ-PhysNet model file to ONNX.

    The ONNX file takes ``image`` and ``peak_time`` (batch × pixels, float32, the camera's pixel
    order) and gives ``class_logits``, ``log_energy``, ``direction`` and ``impact`` as the torch
    network does; the model's metadata and pixel positions travel in its metadata_props.
    """

    name = "ctapipe-export-gammaphysnet"
    description = __doc__
    examples = """
    ctapipe-export-gammaphysnet --model gammaphysnet.safetensors --output lstcam.onnx \\
        --telescope-type LST_LST_LSTCam
    """

    model_path = PathTrait(None, allow_none=True, directory_ok=False,
                           help="γ-PhysNet model file (.safetensors)").tag(config=True)
    output_path = PathTrait(None, allow_none=True, directory_ok=False,
                            help="Output ONNX file").tag(config=True)
    telescope_type = Unicode(
        None, allow_none=True,
        help="Telescope type to export (needed when the model file holds several)",
    ).tag(config=True)
    opset = Int(DEFAULT_OPSET, help="ONNX opset version").tag(config=True)
    overwrite = Bool(False, help="Overwrite an existing output file").tag(config=True)

    aliases = {
        ("m", "model"): "ExportGammaPhysNetTool.model_path",
        ("o", "output"): "ExportGammaPhysNetTool.output_path",
        "telescope-type": "ExportGammaPhysNetTool.telescope_type",
        "opset": "ExportGammaPhysNetTool.opset",
    }
    flags = {
        "overwrite": ({"ExportGammaPhysNetTool": {"overwrite": True}}, "Overwrite existing output"),
    }

    def setup(self):
        if self.model_path is None:
            raise ToolConfigurationError("no model file given (--model)")
        if self.output_path is None:
            raise ToolConfigurationError("no output file given (--output)")
        if self.output_path.exists() and not self.overwrite:
            raise ToolConfigurationError(f"{self.output_path}: output exists; use --overwrite")
        check_output(self.output_path, self.overwrite)
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ToolConfigurationError(
                "ONNX export needs the onnx package: pip install 'ctapipe_gammaphysnet[onnx]'"
            ) from None
        try:
            self.model_file = load_model_file(self.model_path)
        except ModelFileError as err:
            raise ToolConfigurationError(str(err)) from None
        types = sorted(self.model_file.models)
        if self.telescope_type is None:
            if len(types) > 1:
                raise ToolConfigurationError(
                    f"{self.model_path} holds networks for {types}: choose one with --telescope-type")
            self.telescope_type = types[0]
        elif self.telescope_type not in types:
            raise ToolConfigurationError(
                f"{self.model_path}: no network for telescope type {self.telescope_type!r} "
                f"(present: {types})")
        Provenance().add_input_file(str(self.model_path), role="reconstruction model", add_meta=False)

    def start(self):
        self.log.info("exporting %s (%d pixels) to ONNX opset %d", self.telescope_type,
                      self.model_file.models[self.telescope_type].grid.n_pixels, self.opset)
        export_telescope_model(self.model_file, self.telescope_type, self.output_path, self.opset)

    def finish(self):
        Provenance().add_output_file(str(self.output_path), role="reconstruction model (ONNX)",
                                     add_meta=False)
        self.log.info("ONNX model written to %s", self.output_path)


def main():
    ExportGammaPhysNetTool().run()


if __name__ == "__main__":
    main()
