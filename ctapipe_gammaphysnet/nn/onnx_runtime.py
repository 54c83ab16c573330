"""γ-PhysNet run through ONNX Runtime like the torch network.

An ``OnnxGammaPhysNet`` is called as the network is: ``outputs = net(image, peak_time)`` with
``(B, n_pixels)`` tensors or arrays (plus ``pointing_zenith``, ``(B,)`` in deg, for pointing-aware
models) gives the dict of output tensors, and ``net.gammaness(outputs)``
and ``net.grid`` exist. It is made from a torch network by ``nn.inference`` (``to_onnx``,
``optimize_for_inference(backend="onnxruntime")``) or read from an exported file by
``io.onnx_file``. onnxruntime is an optional dependency (``pip install
ctapipe_gammaphysnet[onnx]``).
"""
import numpy as np
import torch

from .network import OUTPUTS, GammaPhysNet

__all__ = ["INPUT_NAMES", "POINTING_INPUT", "OUTPUT_NAMES", "DEFAULT_OPSET", "OnnxGammaPhysNet",
           "import_onnxruntime"]

INPUT_NAMES = ("image", "peak_time")
#: the extra input of pointing-aware models
POINTING_INPUT = "pointing_zenith"
OUTPUT_NAMES = tuple(OUTPUTS)
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


class OnnxGammaPhysNet:
    """A γ-PhysNet network on ONNX Runtime (CPU unless other providers are given).

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
        self.pointing_aware = POINTING_INPUT in {i.name for i in self.session.get_inputs()}

    def __call__(self, image, peak_time, pointing_zenith=None):
        """Outputs as the torch network gives them: dict of float32 tensors on the CPU."""
        values = [image, peak_time]
        names = list(INPUT_NAMES)
        if self.pointing_aware:
            if pointing_zenith is None:
                raise ValueError("this γ-PhysNet model is pointing-aware: it needs the telescope "
                                 "pointing's zenith angle (deg) of every image")
            values.append(pointing_zenith)
            names.append(POINTING_INPUT)
        feed = {name: np.ascontiguousarray(_as_numpy(value), dtype=np.float32)
                for name, value in zip(names, values)}
        results = self.session.run(list(OUTPUT_NAMES), feed)
        return {name: torch.from_numpy(value) for name, value in zip(OUTPUT_NAMES, results)}

    forward = __call__

    def eval(self):
        return self


def _as_numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

