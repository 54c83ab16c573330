"""Model files: safetensors + JSON metadata, round trip, and a clear error for every bad file."""
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io import model_file
from ctapipe_gammaphysnet.io.model_file import (
    FORMAT_VERSION,
    ModelFileError,
    load_model_file,
    save_model_file,
)
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet

LST = "LST_LST_LSTCam"
FLASH = "MST_MST_FlashCam"


def _trained_looking(grid, seed):
    """A tiny network whose batch-norm statistics moved away from their initial values."""
    torch.manual_seed(seed)
    network = GammaPhysNet(grid, PRESETS["tiny"]).train()
    with torch.no_grad():
        network(torch.rand(4, grid.n_pixels) * 100, torch.rand(4, grid.n_pixels) * 30)
    return network.eval()


@pytest.fixture(scope="module")
def networks(real_cameras):
    return {
        LST: _trained_looking(CameraGrid.from_geometry(real_cameras["LSTCam"]), 1),
        FLASH: _trained_looking(CameraGrid.from_geometry(real_cameras["FlashCam"]), 2),
    }


@pytest.fixture(scope="module")
def saved_model(networks, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "gpn.safetensors"
    save_model_file(
        path, networks,
        {LST: {"training": {"n_events": 123, "seed": 7, "metrics": {"auc": 0.9}}}},
        extra_metadata={"tool": "test"},
    )
    return path


def _inputs(n_pixels, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, n_pixels, generator=gen) * 300, torch.rand(3, n_pixels, generator=gen) * 40


def test_round_trip_gives_identical_outputs(saved_model, networks, real_cameras):
    loaded = load_model_file(saved_model)
    assert set(loaded.models) == {LST, FLASH}
    for tel_type, network in networks.items():
        model = loaded.models[tel_type]
        assert not model.network.training
        assert model.network.config == network.config
        assert model.grid.fingerprint() == network.grid.fingerprint()
        np.testing.assert_array_equal(model.grid.flat_index, network.grid.flat_index)
        image, time = _inputs(network.grid.n_pixels)
        with torch.no_grad():
            expected, got = network(image, time), model.network(image, time)
        for key in expected:
            assert torch.equal(expected[key], got[key]), (tel_type, key)
        original = network.state_dict()
        for name, value in model.network.state_dict().items():
            assert torch.equal(value, original[name]), name

    meta = loaded.metadata
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["tool"] == "test"
    assert {"torch", "ctapipe", "ctapipe_gammaphysnet"} <= set(meta["versions"])
    lst = loaded.models[LST].metadata
    assert lst["training"] == {"n_events": 123, "seed": 7, "metrics": {"auc": 0.9}}
    assert lst["camera"]["name"] == "LSTCam"
    assert lst["camera"]["n_pixels"] == 1855
    assert lst["network"] == PRESETS["tiny"].to_dict()
    assert "log10" in lst["targets"]["log_energy"]


def test_model_for_geometry(saved_model, real_cameras):
    loaded = load_model_file(saved_model)
    # the same LST camera under other names, and the real LST-1 camera
    for name in ("LSTCam", "LSTS-design", "LSTN-design"):
        assert loaded.model_for_geometry(real_cameras[name]).tel_type == LST
    assert loaded.model_for_geometry(real_cameras["FlashCam"]).tel_type == FLASH
    # NectarCam has 1855 hexagonal pixels as well, but is another camera
    assert loaded.model_for_geometry(real_cameras["MSTx-NectarCam"]) is None


def test_file_is_plain_safetensors_with_json_metadata(saved_model):
    with open(saved_model, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    document = json.loads(header["__metadata__"]["gammaphysnet"])
    assert document["format"] == "gammaphysnet-model"
    assert all(key.startswith((LST + "/", FLASH + "/")) for key in header if key != "__metadata__")
    assert f"{LST}/camera.pix_x" in header


def test_loading_never_executes_code(tmp_path):
    """A pickle that would create a file when unpickled is refused, and nothing runs."""
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    malicious = tmp_path / "model.safetensors"
    malicious.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelFileError, match=f"{malicious}: not a readable γ-PhysNet model file"):
        load_model_file(malicious)
    assert not marker.exists()

    torch_file = tmp_path / "torch.pt"
    torch.save({"weight": torch.zeros(3)}, torch_file)
    with pytest.raises(ModelFileError, match=str(torch_file)):
        load_model_file(torch_file)


def _header(path):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def _write_with_header(path, header, payload):
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload)


def _with_document(source, target, change):
    header, payload = _header(source)
    document = json.loads(header["__metadata__"]["gammaphysnet"])
    change(document)
    header["__metadata__"]["gammaphysnet"] = json.dumps(document)
    _write_with_header(target, header, payload)
    return target


def test_rewritten_header_still_loads(saved_model, tmp_path):
    """The header rewriting used below keeps a valid file."""
    same = _with_document(saved_model, tmp_path / "same.safetensors", lambda d: None)
    assert set(load_model_file(same).models) == {LST, FLASH}


BAD_FILES = {
    "missing": (None, "model file does not exist"),
    "random_bytes": (lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(5000)),
                     "not a readable γ-PhysNet model file"),
    "empty": (lambda p, good: p.write_bytes(b""), "not a readable γ-PhysNet model file"),
    "json": (lambda p, good: p.write_text(json.dumps({"format": "gammaphysnet-model"})),
             "not a readable γ-PhysNet model file"),
    "plain_safetensors": (lambda p, good: save_file({"weight": torch.zeros(3)}, str(p)),
                          "a safetensors file, but not a γ-PhysNet model"),
    "other_metadata": (lambda p, good: save_file({"w": torch.zeros(3)}, str(p),
                                                 metadata={"gammaphysnet": "{broken"}),
                       "damaged model metadata"),
    "truncated": (lambda p, good: p.write_bytes(good.read_bytes()[:good.stat().st_size // 2]),
                  "not a readable γ-PhysNet model file"),
    "newer_version": (
        lambda p, good: _with_document(
            good, p, lambda d: d.update(format_version=FORMAT_VERSION + 1)),
        f"format version {FORMAT_VERSION + 1} is newer",
    ),
    "other_format": (lambda p, good: _with_document(good, p, lambda d: d.update(format="onnx")),
                     "not a γ-PhysNet model file"),
    "no_telescopes": (lambda p, good: _with_document(good, p, lambda d: d.update(telescopes={})),
                      "holds no telescope model"),
    "wrong_architecture": (
        lambda p, good: _with_document(
            good, p, lambda d: d["telescopes"][LST]["network"].update(channels=[8, 8, 8])),
        f"damaged model for {LST}",
    ),
    "wrong_fingerprint": (
        lambda p, good: _with_document(
            good, p, lambda d: d["telescopes"][LST]["camera"].update(fingerprint="0" * 16)),
        f"camera geometry of {LST} does not match",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_give_a_clear_error_naming_the_file(case, saved_model, tmp_path):
    make, message = BAD_FILES[case]
    path = tmp_path / f"{case}.safetensors"
    if make is not None:
        make(path, saved_model)
    with pytest.raises(ModelFileError) as error:
        load_model_file(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_tensor_is_reported(saved_model, tmp_path):
    with safe_open(str(saved_model), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != f"{FLASH}/stem.weight"}
    path = tmp_path / "missing_tensor.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    message = f"(?s){path}: damaged model for {FLASH}.*Missing.*stem.weight"
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path)


def test_existing_output_is_refused_without_overwrite(networks, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model_file(path, {LST: networks[LST]}, {})
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match=f"{path}: exists already"):
        save_model_file(path, networks, {})
    assert path.read_bytes() == before
    save_model_file(path, networks, {}, overwrite=True)
    assert set(load_model_file(path).models) == {LST, FLASH}


def test_write_is_atomic(networks, tmp_path, monkeypatch):
    path = tmp_path / "out" / "model.safetensors"
    save_model_file(path, networks, {})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]
    before = path.read_bytes()

    def crash_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model_file, "save_file", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_model_file(path, networks, {}, overwrite=True)
    # the old file is untouched and no temporary file is left behind
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]


def test_telescope_type_with_slash_is_refused(networks, tmp_path):
    path = tmp_path / "model.safetensors"
    with pytest.raises(ModelFileError, match="must not contain '/'"):
        save_model_file(path, {"LST/LSTCam": networks[LST]}, {})
    assert not any(tmp_path.iterdir())
