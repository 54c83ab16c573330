"""Writes the reference model file and its outputs that ``tests/test_reference_outputs.py`` checks.

Run once per architecture (``python tests/data/make_reference_model.py votes`` or ``… disp``)
and commit the two files: the test then asserts that the code gives these outputs bit for bit.
Rerun it only when a change to the network's outputs is intended, and say so in the commit.

The model is the ``tiny`` preset on LST-1's LSTCam with every weight and batch-norm statistic
drawn at random (so that the parts which start at zero — the votes, the head-tail weights —
take part too), applied to the LSTCam images of the shared ``test_lasercal_v3`` sim_telarray
file, calibrated by ``ctapipe-process``'s default image extraction. ``votes``: the heads of
model files written before the image parameters (``reference_tiny_lstcam``); ``disp``: today's
default heads on the image parameters (``reference_disp_tiny_lstcam``). The committed ``votes``
file predates the image parameters, and a rerun today draws other random weights (the heads are
built in another order): keep it, it shows that old model files still predict as they did.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from ctapipe.io import EventSource
from ctapipe.calib import CameraCalibrator
from ctapipe_io_lst import LSTEventSource

from ctapipe_gammaphysnet.geometry import CameraGrid
from ctapipe_gammaphysnet.io.model_file import load_model_file, save_model_file
from ctapipe_gammaphysnet.nn.network import PRESETS, GammaPhysNet, NetworkConfig

HERE = Path(__file__).parent
#: architecture → (file name stem, network options over the tiny preset)
REFERENCES = {"votes": ("reference_tiny_lstcam", {"image_parameters": False}),
              "disp": ("reference_disp_tiny_lstcam", {"image_parameters": True})}
SIMTEL = HERE.parents[2] / "shared" / "data" / "simtel" / "test_lasercal_v3.simtel.gz"


def real_images():
    images, peak_times = [], []
    with EventSource(SIMTEL) as source:
        calibrate = CameraCalibrator(source.subarray)
        for event in source:
            calibrate(event)
            for dl1 in event.dl1.tel.values():
                images.append(dl1.image)
                peak_times.append(dl1.peak_time)
    return np.array(images, dtype=np.float32), np.array(peak_times, dtype=np.float32)


def main(architecture):
    stem, options = REFERENCES[architecture]
    model, outputs_path = HERE / f"{stem}.safetensors", HERE / f"{stem}_outputs.npz"
    geometry = LSTEventSource.create_subarray(tel_id=1).tel[1].camera.geometry
    grid = CameraGrid.from_geometry(geometry)
    torch.manual_seed(20261201)
    network = GammaPhysNet(grid, NetworkConfig.from_dict({**PRESETS["tiny"].to_dict(), **options}))
    with torch.no_grad():
        for name, value in network.state_dict().items():
            if value.is_floating_point() and "mask" not in name and "position" not in name \
                    and "tap" not in name:
                if name.endswith("running_var"):
                    value.copy_(0.5 + torch.rand_like(value))
                else:
                    value.add_(0.1 * torch.randn_like(value))
    save_model_file(model, {"LST_LST_LSTCam": network.eval()},
                    {"LST_LST_LSTCam": {"training": {"note": "random weights: the reference of "
                                                     "tests/test_reference_outputs.py"}}},
                    overwrite=True)
    image, peak_time = real_images()
    loaded = load_model_file(model).models["LST_LST_LSTCam"].network
    torch.set_num_threads(1)  # as the test computes them
    with torch.inference_mode():
        outputs = loaded(torch.from_numpy(image), torch.from_numpy(peak_time))
    np.savez_compressed(outputs_path, image=image, peak_time=peak_time,
                        **{name: value.numpy() for name, value in outputs.items()})
    print(f"wrote {model} and {outputs_path}: {len(image)} images")


if __name__ == "__main__":
    main(sys.argv[1])
