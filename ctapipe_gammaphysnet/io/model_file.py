"""γ-PhysNet model files: safetensors weights + JSON metadata; loading never executes code.

One file holds one network per telescope type. Tensors are named ``"<tel_type>/<parameter>"``;
the camera's pixel positions travel with them (``"<tel_type>/camera.pix_x"``, ``…pix_y``) so a
model is usable without the subarray it was trained on. The header metadata key ``gammaphysnet``
holds a JSON document::

    {"format": "gammaphysnet-model", "format_version": 1, "created": …, "versions": {…},
     "telescopes": {"<tel_type>": {"network": {…}, "camera": {"name", "n_pixels", "hexagonal",
                                   "fingerprint"}, "inputs": {…}, "targets": {…},
                                   "image_selection": [[name, expression], …],
                                   "pointing": {"zenith_range_deg": [min, max]},
                                   "training": {…}}}}

``image_selection`` holds the criteria of the images the network was trained on
(``selection.GammaPhysNetImageSelection``), which inference applies; ``pointing`` the range of
telescope pointing zenith angles of those images, outside which inference warns.
"""
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..geometry import CameraGrid
from ..nn.inputs import describe_inputs
from ..nn.network import GammaPhysNet, NetworkConfig
from ..version import __version__
from .outputs import atomic_output

__all__ = ["FORMAT_VERSION", "ModelFileError", "ModelFile", "TelescopeModel", "save_model_file",
           "load_model_file", "library_versions"]

FORMAT = "gammaphysnet-model"
FORMAT_VERSION = 1
METADATA_KEY = "gammaphysnet"

TARGET_CONVENTIONS = {
    "class_logits": "2 logits, index 1 = gamma (gammaness = softmax[1])",
    "log_energy": "log10(E / TeV)",
    "direction": "true source position in the telescope's TelescopeFrame: fov_lon, fov_lat (deg)",
    "impact": "true core position minus telescope position on the ground: x, y (km)",
}


class ModelFileError(ValueError):
    """A model file is missing, damaged, or not usable here; the message names the file."""


def library_versions():
    import ctapipe
    import numpy

    return {"ctapipe_gammaphysnet": __version__, "ctapipe": ctapipe.__version__,
            "torch": torch.__version__, "numpy": numpy.__version__}


@dataclass
class TelescopeModel:
    """The network of one telescope type and its metadata."""

    tel_type: str
    network: GammaPhysNet
    metadata: dict

    @property
    def grid(self):
        return self.network.grid

    @property
    def image_selection(self):
        """The ``(name, expression)`` criteria of the training images; None if the file records
        none (files written before they were recorded)."""
        # the first files kept them with the other training details
        criteria = self.metadata.get("image_selection",
                                     self.metadata.get("training", {}).get("quality_criteria"))
        return None if criteria is None else [tuple(criterion) for criterion in criteria]

    @property
    def zenith_range(self):
        """``(min, max)`` telescope pointing zenith angle (deg) of the training images; None if
        the file records none (files written before it was recorded)."""
        zenith = self.metadata.get("pointing", {}).get("zenith_range_deg")
        return None if zenith is None else (float(zenith[0]), float(zenith[1]))


@dataclass
class ModelFile:
    """A loaded model file."""

    path: Path
    metadata: dict
    models: dict  # tel_type → TelescopeModel

    def model_for_geometry(self, geometry):
        """The telescope model whose camera has this ``CameraGeometry``'s pixels, or None."""
        for model in self.models.values():
            if model.grid.matches(geometry):
                return model
        return None


def save_model_file(path, networks, metadata_by_type, extra_metadata=None, overwrite=False):
    """Write networks (``{tel_type: GammaPhysNet}``) and their metadata atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ModelFileError(f"{path}: exists already (use overwrite)")
    tensors = {}
    telescopes = {}
    for tel_type, network in networks.items():
        if "/" in tel_type:
            raise ModelFileError(f"{path}: telescope type {tel_type!r} must not contain '/'")
        for name, value in network.state_dict().items():
            # clone: buffers may share memory (a stage reuses the input mask), which safetensors refuses
            tensors[f"{tel_type}/{name}"] = value.detach().cpu().clone().contiguous()
        grid = network.grid
        tensors[f"{tel_type}/camera.pix_x"] = torch.from_numpy(grid.pix_x)
        tensors[f"{tel_type}/camera.pix_y"] = torch.from_numpy(grid.pix_y)
        telescopes[tel_type] = {
            "network": network.config.to_dict(),
            "camera": {"name": grid.camera_name, "n_pixels": grid.n_pixels,
                       "hexagonal": grid.hexagonal, "fingerprint": grid.fingerprint()},
            "inputs": describe_inputs(network.config),
            "targets": TARGET_CONVENTIONS,
            **metadata_by_type.get(tel_type, {}),
        }
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        **(extra_metadata or {}),
        "telescopes": telescopes,
    }
    # strict JSON: a metric that could not be computed (NaN) is written as null
    metadata = {METADATA_KEY: json.dumps(_finite_or_none(document), allow_nan=False)}
    with atomic_output(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _finite_or_none(value):
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read(path):
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path}: not a readable γ-PhysNet model file ({err})") from None
    if METADATA_KEY not in header:
        raise ModelFileError(f"{path}: a safetensors file, but not a γ-PhysNet model (no metadata)")
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: damaged model metadata ({err})") from None
    return document, tensors


def load_model_file(path, device="cpu"):
    """Load a model file; networks are in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file does not exist")
    document, tensors = _read(path)
    if document.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a γ-PhysNet model file (format {document.get('format')!r})")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this ctapipe_gammaphysnet "
            f"({__version__}) reads (≤ {FORMAT_VERSION}); please upgrade"
        )
    models = {}
    for tel_type, meta in document.get("telescopes", {}).items():
        try:
            pix_x = tensors[f"{tel_type}/camera.pix_x"].numpy()
            pix_y = tensors[f"{tel_type}/camera.pix_y"].numpy()
            grid = CameraGrid(pix_x, pix_y, meta["camera"]["hexagonal"], meta["camera"]["name"])
            network = GammaPhysNet(grid, NetworkConfig.from_dict(meta["network"]))
            prefix = f"{tel_type}/"
            state = {k[len(prefix):]: v for k, v in tensors.items()
                     if k.startswith(prefix) and not k.startswith(prefix + "camera.")}
            # files of the camera-input networks also stored the pixel → grid index, which is
            # derived from the camera
            state.pop("pixel_index", None)
            network.load_state_dict(state, strict=True)
        except (KeyError, RuntimeError, ValueError) as err:
            raise ModelFileError(f"{path}: damaged model for {tel_type} ({err})") from None
        if grid.fingerprint() != meta["camera"].get("fingerprint"):
            raise ModelFileError(f"{path}: camera geometry of {tel_type} does not match its fingerprint")
        models[tel_type] = TelescopeModel(tel_type, network.to(device).eval(), meta)
    if not models:
        raise ModelFileError(f"{path}: the model file holds no telescope model")
    return ModelFile(path=path, metadata=document, models=models)
