"""γ-PhysNet exported to ONNX, and run through ONNX Runtime like the torch network.

An exported file holds the network of one telescope type with a dynamic batch axis; its
``metadata_props`` carry the model file's JSON document (key ``gammaphysnet``: format, versions,
and ``telescopes`` with this one type) and the camera's pixel positions (``camera_pix_x``,
``camera_pix_y``, JSON lists in metres), so the model is matched to cameras as a model file is.

``OnnxGammaPhysNet.load(path)`` is called as the network is: ``outputs = net(image, peak_time)`` with
``(B, n_pixels)`` tensors or arrays gives the dict of output tensors, and ``net.gammaness(outputs)``
and ``net.grid`` exist; ``load_onnx_model_file`` wraps it in a ``ModelFile`` as
``load_model_file`` does. onnxruntime is an optional dependency (``pip install
ctapipe_gammaphysnet[onnx]``).
"""
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..geometry import CameraGrid
from ..io.model_file import METADATA_KEY, ModelFile, ModelFileError, TelescopeModel
from .network import OUTPUTS, GammaPhysNet

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "DEFAULT_OPSET", "to_onnx", "OnnxGammaPhysNet",
           "load_onnx_model_file", "import_onnxruntime"]

INPUT_NAMES = ("image", "peak_time")
OUTPUT_NAMES = tuple(OUTPUTS)
PIX_X_KEY, PIX_Y_KEY = "camera_pix_x", "camera_pix_y"
#: the opset of the TorchScript exporter known to round-trip through ONNX Runtime ≥ 1.17
DEFAULT_OPSET = 17


def import_onnxruntime():
    """The onnxruntime module, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("running exported models needs onnxruntime: "
                          "pip install 'ctapipe_gammaphysnet[onnx]'") from err
    return onnxruntime


def to_onnx(network, opset=DEFAULT_OPSET):
    """The network as an ONNX model (``onnx.ModelProto``) with a dynamic batch axis.

    Exported from ``optimize_for_inference(network)``: masks baked in, batch norms folded.
    """
    import onnx

    from .inference import optimize_for_inference

    optimized = optimize_for_inference(network, channels_last=False)
    n_pixels = network.grid.n_pixels
    example = (torch.zeros(2, n_pixels), torch.zeros(2, n_pixels))
    buffer = io.BytesIO()
    # the TorchScript exporter: needs no onnxscript and gives a plain, portable graph
    # (torch ≥ 2.9 warns that it is no longer the default)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(optimized, example, buffer, input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES})
    return onnx.load_model_from_string(buffer.getvalue())


class OnnxGammaPhysNet:
    """A γ-PhysNet network on ONNX Runtime (CPU unless other providers are given).

    Made by ``load`` from an exported file or by ``from_network`` from a torch network.

    Parameters
    ----------
    model : bytes or path-like
        The serialized ONNX model or its file.
    grid : CameraGrid
        The camera's grid (``n_pixels`` inputs per image).
    metadata : dict
        The model file's JSON document (for exported files).
    n_threads : int
        Intra-op threads (0: ONNX Runtime's choice, one per physical core).
    providers : list of str
        ONNX Runtime execution providers, e.g. ``["CUDAExecutionProvider"]``.
    """

    gammaness = staticmethod(GammaPhysNet.gammaness)

    def __init__(self, model, grid, metadata=None, n_threads=0, providers=None):
        onnxruntime = import_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(
            model, options, providers=providers or ["CPUExecutionProvider"])
        self.grid = grid
        self.metadata = metadata or {}

    @classmethod
    def from_network(cls, network, n_threads=0, providers=None):
        """A trained torch ``GammaPhysNet`` exported in memory."""
        return cls(to_onnx(network).SerializeToString(), network.grid, n_threads=n_threads,
                   providers=providers)

    @classmethod
    def load(cls, path, n_threads=0, providers=None):
        """A file written by ``ctapipe-export-gammaphysnet``; ``ModelFileError`` if it is not one."""
        import onnx

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: ONNX model file does not exist")
        try:
            model = onnx.load(str(path))
        except Exception as err:  # onnx raises protobuf's DecodeError, or others, per failure
            raise ModelFileError(f"{path}: not a readable ONNX model ({err})") from None
        properties = {entry.key: entry.value for entry in model.metadata_props}
        try:
            metadata = json.loads(properties[METADATA_KEY])
            ((tel_type, meta),) = metadata["telescopes"].items()
            camera = meta["camera"]
            grid = CameraGrid(np.array(json.loads(properties[PIX_X_KEY])),
                              np.array(json.loads(properties[PIX_Y_KEY])),
                              camera["hexagonal"], camera["name"])
        except (KeyError, ValueError) as err:
            raise ModelFileError(
                f"{path}: an ONNX file, but not one exported by ctapipe-export-gammaphysnet "
                f"(metadata: {err})") from None
        if grid.fingerprint() != camera.get("fingerprint"):
            raise ModelFileError(f"{path}: camera geometry does not match its fingerprint")
        network = cls(model.SerializeToString(), grid, metadata, n_threads, providers)
        network.tel_type = tel_type
        return network

    def __call__(self, image, peak_time):
        """Outputs as the torch network gives them: dict of float32 tensors on the CPU."""
        feed = {name: np.ascontiguousarray(_as_numpy(value), dtype=np.float32)
                for name, value in zip(INPUT_NAMES, (image, peak_time))}
        results = self.session.run(list(OUTPUT_NAMES), feed)
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, results)}

    forward = __call__

    def eval(self):
        return self


def _as_numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def load_onnx_model_file(path, n_threads=0, providers=None):
    """An exported model as a ``ModelFile`` (one telescope type), the network on ONNX Runtime."""
    network = OnnxGammaPhysNet.load(path, n_threads=n_threads, providers=providers)
    meta = network.metadata["telescopes"][network.tel_type]
    return ModelFile(path=Path(path), metadata=network.metadata,
                     models={network.tel_type: TelescopeModel(network.tel_type, network, meta)})
