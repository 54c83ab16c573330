"""Exported γ-PhysNet ONNX files (``ctapipe-export-gammaphysnet``), read for ONNX Runtime.

An exported file holds the network of one telescope type with a dynamic batch axis; its
``metadata_props`` carry the model file's JSON document (key ``gammaphysnet``: format, versions,
and ``telescopes`` with this one type) and the camera's pixel positions (``camera_pix_x``,
``camera_pix_y``, JSON lists in metres), so the model is matched to cameras as a model file is.
``load_onnx_model_file`` gives a ``ModelFile`` as ``load_model_file`` does.
"""
import json
from pathlib import Path

import numpy as np

from ..geometry import CameraGrid
from ..nn.onnx_runtime import OnnxGammaPhysNet
from .model_file import METADATA_KEY, ModelFile, ModelFileError, TelescopeModel

__all__ = ["PIX_X_KEY", "PIX_Y_KEY", "load_onnx_network", "load_onnx_model_file"]

PIX_X_KEY, PIX_Y_KEY = "camera_pix_x", "camera_pix_y"


def load_onnx_network(path, n_threads=0, providers=None):
    """The ``OnnxGammaPhysNet`` of a file written by ``ctapipe-export-gammaphysnet``, with its
    ``tel_type``; ``ModelFileError`` if the file is not one."""
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
    network = OnnxGammaPhysNet(model.SerializeToString(), grid, metadata, n_threads, providers)
    network.tel_type = tel_type
    return network


def load_onnx_model_file(path, n_threads=0, providers=None):
    """An exported model as a ``ModelFile`` (one telescope type), the network on ONNX Runtime."""
    network = load_onnx_network(path, n_threads=n_threads, providers=providers)
    meta = network.metadata["telescopes"][network.tel_type]
    return ModelFile(path=Path(path), metadata=network.metadata,
                     models={network.tel_type: TelescopeModel(network.tel_type, network, meta)})
