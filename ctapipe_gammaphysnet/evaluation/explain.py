"""What γ-PhysNet looks at: Grad-CAM maps per task and the spatial-attention maps, on the camera.

Grad-CAM (Selvaraju et al. 2017) weights the feature maps ``A_c`` of one stage by the mean gradient
of a task's score over the camera cells, ``α_c = mean(∂y/∂A_c)``, and keeps the positive part of
``Σ_c α_c A_c``: the cells whose features push the score up. The scores are the gamma logit margin
(the softmax argument of the gammaness), log10(E/TeV) and the two direction coordinates, as the
original γ-PhysNet explained class, energy, and the two direction angles.

Both kinds of map live on the stage's (down-sampled) grid and are brought back onto the camera's own
pixels with :meth:`CameraGrid.coarse_to_pixels`, so they can be drawn with ``CameraDisplay`` and
compared pixel by pixel across models.
"""
import numpy as np
import torch
from matplotlib.figure import Figure

from ..nn.network import GammaPhysNet

__all__ = ["GRAD_CAM_TASKS", "explain_images", "map_correlation", "ExplanationFigure"]

#: Grad-CAM task → the scalar score (B,) it explains, from the network outputs
GRAD_CAM_TASKS = {
    "gammaness": lambda out: out["class_logits"][:, 1] - out["class_logits"][:, 0],
    "energy": lambda out: out["log_energy"],
    "fov_lon": lambda out: out["direction"][:, 0],
    "fov_lat": lambda out: out["direction"][:, 1],
}


def _stage_index(network, stage):
    n_stages = len(network.stages)
    if not -n_stages <= stage < n_stages:
        raise ValueError(f"stage {stage} does not exist: the network has {n_stages} stages")
    return stage % n_stages


def _explain_batch(network, image, peak_time, pointing_zenith, stage):
    """Outputs, Grad-CAM grids (B, H, W) per task and attention grids per stage of one batch."""
    activations, attention = {}, {}
    hooks = [network.stages[stage].register_forward_hook(
        lambda module, inputs, output: activations.__setitem__("features", output))]
    for i, block in enumerate(network.stages):
        if block.attention is not None:
            hooks.append(block.attention.spatial.register_forward_hook(
                lambda module, inputs, output, i=i: attention.__setitem__(i, output[:, 0])))
    try:
        with torch.enable_grad():
            outputs = network(image, peak_time, pointing_zenith)
            features = activations["features"]
            camera = network.stages[stage].camera_mask[0]  # (1, H, W)
            n_cells = camera.sum()
            grad_cam = {}
            for task, score in GRAD_CAM_TASKS.items():
                # images are independent in eval mode: the gradient of the sum is per image
                (gradient,) = torch.autograd.grad(score(outputs).sum(), features, retain_graph=True)
                weights = (gradient * camera).sum(dim=(2, 3), keepdim=True) / n_cells
                grad_cam[task] = torch.relu((weights * features).sum(dim=1)).detach()
    finally:
        for hook in hooks:
            hook.remove()
    outputs = {k: v.detach() for k, v in outputs.items()}
    outputs["gammaness"] = GammaPhysNet.gammaness(outputs)
    return outputs, grad_cam, {i: a.detach() for i, a in attention.items()}


def explain_images(network, image, peak_time, stage=-1, batch_size=64, pointing_zenith=None):
    """Grad-CAM and attention maps of images of one camera, on the camera's pixels.

    Parameters
    ----------
    network : GammaPhysNet
        Put in eval mode (batch statistics must not mix images).
    image, peak_time : array (n, n_pixels)
        Charge (p.e.) and peak time (ns) in the camera's pixel order.
    stage : int
        Index of the stage whose output Grad-CAM explains (default: the last one).
    batch_size : int
    pointing_zenith : array (n,) or None
        Telescope pointing zenith angle (deg) of each image (needed by pointing-aware models).

    Returns
    -------
    dict
        ``"outputs"``: network outputs (numpy, with ``gammaness``); ``"grad_cam"``: task →
        (n, n_pixels); ``"attention"``: stage index → (n, n_pixels), empty without attention;
        ``"stage"``: the explained stage index.
    """
    stage = _stage_index(network, stage)
    grid = network.grid
    image = np.asarray(image, dtype=np.float32)
    peak_time = np.asarray(peak_time, dtype=np.float32)
    if image.ndim != 2 or image.shape[1] != grid.n_pixels or peak_time.shape != image.shape:
        raise ValueError(f"{grid.camera_name}: expected images and peak times of shape "
                         f"(n, {grid.n_pixels}), got {image.shape} and {peak_time.shape}")
    zenith = None if pointing_zenith is None else np.array(np.broadcast_to(
        np.asarray(pointing_zenith, dtype=np.float32), image.shape[:1]))
    network.eval()
    device = next(network.parameters()).device
    parts = []
    for start in range(0, len(image), batch_size):
        batch = [None if a is None else torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size])).to(device)
                 for a in (image, peak_time, zenith)]
        outputs, grad_cam, attention = _explain_batch(network, *batch, stage)
        parts.append((
            {k: v.float().cpu().numpy() for k, v in outputs.items()},
            {k: grid.coarse_to_pixels(v.float().cpu().numpy(), stage) for k, v in grad_cam.items()},
            {i: grid.coarse_to_pixels(v.float().cpu().numpy(), i) for i, v in attention.items()},
        ))
    if not parts:
        raise ValueError("no images to explain")
    return {
        "outputs": {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]},
        "grad_cam": {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]},
        "attention": {i: np.concatenate([p[2][i] for p in parts]) for i in parts[0][2]},
        "stage": stage,
    }


def map_correlation(maps_a, maps_b):
    """Pearson correlation per image of two sets of maps (n, n_pixels).

    A map that is constant (e.g. a Grad-CAM map that is zero everywhere) has no correlation with
    anything: its entry is NaN, for the caller to count and leave out.
    """
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(axis=1) / norm, np.nan)


def _title(row):
    """Predictions, and the truth when the row has it."""
    predicted = (f"gammaness {row['gammaness']:.2f}, E {10 ** row['log_energy']:.3g} TeV, "
                 f"(fov_lon, fov_lat) = ({row['fov_lon']:.2f}, {row['fov_lat']:.2f})°")
    title = f"obs {row['obs_id']} event {row['event_id']} tel {row['tel_id']}: {predicted}"
    if "true_label" in row.colnames:
        particle = "gamma" if row["true_label"] == 1 else "hadron"
        title += (f"\ntruth: {particle}, E {10 ** row['true_log_energy']:.3g} TeV, "
                  f"({row['true_fov_lon']:.2f}, {row['true_fov_lat']:.2f})°")
    return title


class ExplanationFigure:
    """Charge, peak time, Grad-CAM and attention maps of one image on the camera, as a PNG.

    The figure and its ``CameraDisplay`` panels are built once per camera and re-filled for each
    image: building ~2000 hexagon patches per panel costs far more than drawing them.

    Parameters
    ----------
    geometry : ctapipe.instrument.CameraGeometry
    columns : list of str
        Columns of the explain tool's table (``image``, ``peak_time``, ``grad_cam_<task>``,
        ``attention_stage<i>``); one panel per such column, in this order.
    """

    def __init__(self, geometry, columns):
        from ctapipe.visualization import CameraDisplay

        panels = [("image", "charge (p.e.)", "viridis"), ("peak_time", "peak time (ns)", "RdBu_r")]
        panels += [(c, f"Grad-CAM {c[len('grad_cam_'):]}", "inferno")
                   for c in columns if c.startswith("grad_cam_")]
        panels += [(c, f"attention, stage {c[len('attention_stage'):]}", "magma")
                   for c in columns if c.startswith("attention_stage")]
        n_cols = 3
        n_rows = -(-len(panels) // n_cols)
        height = 3.8 * n_rows + 0.8
        self.figure = Figure(figsize=(4.4 * n_cols, height))
        axes = self.figure.subplots(n_rows, n_cols, squeeze=False).ravel()
        self.displays = {}
        for ax, (column, label, cmap) in zip(axes, panels):
            display = CameraDisplay(geometry, ax=ax, cmap=cmap, title=label, show_frame=False,
                                    autoupdate=False)
            # figure.colorbar, not CameraDisplay.add_colorbar, which redraws the whole figure
            self.figure.colorbar(display.pixels, ax=ax, fraction=0.05, pad=0.02)
            ax.set_axis_off()
            self.displays[column] = display
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        self.figure.subplots_adjust(left=0.01, right=0.93, bottom=0.02, top=1 - 1.0 / height,
                                    wspace=0.3, hspace=0.15)
        self.title = self.figure.suptitle("", fontsize=10)

    def save(self, row, path):
        """Draw one row of the table and write it to ``path``."""
        for column, display in self.displays.items():
            display.image = np.nan_to_num(np.asarray(row[column], dtype=float))
        self.title.set_text(_title(row))
        self.figure.savefig(path, dpi=80)
