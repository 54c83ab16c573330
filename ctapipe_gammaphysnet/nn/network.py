"""γ-PhysNet: multi-task network on a camera's native pixels.

Read top to bottom: inputs (charge, peak time per pixel) are prepared and placed on the camera grid,
a stem convolution and three residual stages with dual attention extract features, and four heads
predict the particle class, the energy, the direction and the impact point.
"""
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import CameraGrid
from .image_parameters import ImageParameters
from .inputs import make_inputs
from .layers import HexConv2d, Stage

__all__ = ["NetworkConfig", "PRESETS", "GammaPhysNet", "OUTPUTS", "upgrade_state_dict"]

#: output name → number of values per image
OUTPUTS = {"class_logits": 2, "log_energy": 1, "direction": 2, "impact": 2}
#: exponent k of the first vote confidence (1 + charge)^k: bright cells dominate the centroid
INITIAL_BRIGHTNESS_WEIGHT = 2.0
#: vote-logit penalty of the cells without light (softmax weight e^-penalty: none)
EMPTY_CELL_PENALTY = 1e4
#: angular radius of a CTA camera's field of view (LSTCam 2.3°, MST and SST cameras 4-5°)
TYPICAL_FOV_RADIUS_DEG = 3.0
#: first guess of the source's distance from the image centroid (camera radii), ~0.7° on LSTCam
INITIAL_DISP = 0.3


@dataclass
class NetworkConfig:
    """Architecture of a γ-PhysNet model (stored in the model file)."""

    channels: list = field(default_factory=lambda: [16, 32, 64])
    blocks_per_stage: int = 3
    attention: bool = True
    attention_reduction: int = 16
    pooled_features: int = 64
    fusion_features: int = 256
    dropout: float = 0.0
    #: input representation (``nn.inputs``): "cleaned" or "camera"
    inputs: str = "cleaned"
    #: tailcuts cleaning of the "cleaned" representation (p.e.), as lstchain's LST cleaning
    picture_threshold: float = 6.0
    boundary_threshold: float = 3.0
    min_picture_neighbors: int = 2
    #: rings of pixels around the cleaning mask whose charge the network also sees
    mask_dilation: int = 1
    #: the telescope pointing's zenith angle as an input (``PointingConditioning``)
    pointing: bool = False
    #: heads that start from the cleaned image's Hillas-style parameters (``nn.image_parameters``)
    #: and a direction on the image's main axis (``DispDirectionHead``); needs "cleaned" inputs
    image_parameters: bool = True

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, config):
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown network options: {sorted(unknown)}")
        # model files written before the input representations saw every pixel, and before the
        # image parameters had heads on the features alone
        return cls(**{"inputs": "camera", "image_parameters": False, **config})


#: named architectures; "paper" is the published γ-PhysNet size
PRESETS = {
    "paper": NetworkConfig(),
    "small": NetworkConfig(channels=[8, 16, 32], blocks_per_stage=1, pooled_features=32,
                           fusion_features=64, attention_reduction=4),
    "tiny": NetworkConfig(channels=[4, 8, 8], blocks_per_stage=1, pooled_features=8,
                          fusion_features=16, attention_reduction=2),
}


def _downsampled_mask(mask):
    """Cells of a stride-2 grid that see at least one camera cell in their 3×3 neighbourhood."""
    return F.max_pool2d(mask, kernel_size=3, stride=2, padding=1)


def _downsampled_position(position, mask):
    """Mean position ``(1, 2, H, W)`` of the camera cells each stride-2 cell sees."""
    total = F.avg_pool2d(position * mask, kernel_size=3, stride=2, padding=1)
    weight = F.avg_pool2d(mask, kernel_size=3, stride=2, padding=1)
    return total / weight.clamp(min=1e-6)


class ParticleClassHead(nn.Sequential):
    """Gamma/hadron logits from the image summary (the features pooled over the camera, and the
    image parameters where the model has them)."""

    def __init__(self, n_summary, n_hidden, dropout):
        # (GELU in the heads: a ReLU layer on thousands of non-negative inputs can die as a whole
        # early in training, freezing its head at a constant)
        super().__init__(nn.Linear(n_summary, n_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(n_hidden, 2))


class EnergyHead(nn.Sequential):
    """log10(E / TeV) from the image summary."""

    def __init__(self, n_summary, n_hidden):
        super().__init__(nn.Linear(n_summary, n_hidden), nn.GELU(), nn.Linear(n_hidden, 1))

    def forward(self, summary):
        return super().forward(summary).squeeze(1)


class DirectionHead(nn.Module):
    """The source position from the votes of the camera cells.

    Every cell votes for the source position: its own position plus an offset read from its
    features, weighted by a confidence that starts from the cell's brightness and is learned from
    its features. Like the Hillas centroid + disp this moves with the image, so it generalises to
    image positions seen rarely in training (a head on the flattened map memorised them). A linear
    map takes the mean vote from camera coordinates to the TelescopeFrame (focal length and axes
    learned).
    """

    def __init__(self, n_channels, cell_position):
        super().__init__()
        self.votes = nn.Conv2d(n_channels, 3, kernel_size=1)
        self.brightness_weight = nn.Parameter(torch.tensor(INITIAL_BRIGHTNESS_WEIGHT))
        self.to_telescope_frame = nn.Linear(2, 2)
        self.register_buffer("cell_position", cell_position)
        self.reset_parameters()

    def reset_parameters(self):
        # the votes' own logits and offsets start at zero, so the confidence starts from the
        # brightness alone: random logits of the size the convolution init gives would single
        # out arbitrary empty cells, where no gradient helps
        nn.init.zeros_(self.votes.weight)
        nn.init.zeros_(self.votes.bias)
        _reset_telescope_frame_map(self.to_telescope_frame)

    def camera_vote(self, x, feature_cells, brightness, light, summary=None, parameters=None):
        """The cells' mean vote in camera coordinates; ``brightness`` is each last-grid cell's
        mean log(1 + charge), ``light`` (or None) whether it sees a cleaned pixel (``summary`` and
        ``parameters``, which `DispDirectionHead` reads, are not used)."""
        votes = self.votes(x).flatten(2)[:, :, feature_cells]  # (B, 3, n_cells)
        # confidence ∝ (1 + charge)^k at first: the vote starts at the image centroid (as Hillas);
        # cells without cleaned light drop out, so that the empty rest of the camera cannot pull
        # the vote toward its centre
        logits = votes[:, 0] + self.brightness_weight * brightness
        if light is not None:
            logits = logits - EMPTY_CELL_PENALTY * (1 - light)
        confidence = torch.softmax(logits.float(), dim=1).to(votes.dtype)
        return ((self.cell_position + votes[:, 1:]) * confidence[:, None]).sum(dim=2)

    def forward(self, x, feature_cells, brightness, light, summary=None, parameters=None):
        return self.to_telescope_frame(self.camera_vote(x, feature_cells, brightness, light))


def _reset_telescope_frame_map(linear):
    """Start a camera → TelescopeFrame map (fov_lon ∝ y, fov_lat ∝ x) with a typical half field
    of view; training fits the camera's own scale."""
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]) * TYPICAL_FOV_RADIUS_DEG)
        linear.bias.zero_()


class DispDirectionHead(nn.Module):
    """The source position on the image's main axis, as the disp method places it.

    source = centroid + sign × disp × axis, with centroid and axis from the cleaned image's
    moments (``nn.image_parameters``). The distance ``disp`` comes from the image summary (the
    pooled features and the image parameters). The head–tail ``sign`` is tanh of a sum of
    quantities that flip with the axis — the skewness, the time slope and each feature channel's
    light-weighted moment along the axis — with weights set by the summary: it flips exactly
    when the image is mirrored along its axis. The sign starts near 0, so the first vote is about
    the centroid; a linear map takes it to the TelescopeFrame.
    """

    def __init__(self, n_summary, n_hidden, n_channels, n_axial, cell_position):
        super().__init__()
        self.disp = nn.Sequential(nn.Linear(n_summary, n_hidden), nn.GELU(), nn.Linear(n_hidden, 1))
        self.head_tail_weights = nn.Linear(n_summary, n_axial + n_channels)
        self.to_telescope_frame = nn.Linear(2, 2)
        self.register_buffer("cell_position", cell_position)
        self.reset_parameters()

    def reset_parameters(self):
        # the sign starts near 0 (the vote near the centroid), not at 0, where disp has no gradient
        nn.init.normal_(self.head_tail_weights.weight, std=1e-3)
        nn.init.zeros_(self.head_tail_weights.bias)
        with torch.no_grad():  # softplus(b) = INITIAL_DISP
            self.disp[-1].bias.fill_(float(np.log(np.expm1(INITIAL_DISP))))
        _reset_telescope_frame_map(self.to_telescope_frame)

    def camera_vote(self, x, feature_cells, brightness, light, summary, parameters):
        centroid, axis, length = parameters["centroid"], parameters["axis"], parameters["length"]
        cells = x.flatten(2)[:, :, feature_cells]  # (B, C, n_cells)
        # each cell's place along the axis, in image lengths, weighted by the light it sees
        along = ((self.cell_position[None] - centroid[:, :, None]) * axis[:, :, None]).sum(1)
        along = along / length[:, None].clamp(min=1e-3)
        weight = brightness * (1 if light is None else light)
        weight = weight / weight.sum(1, keepdim=True).clamp(min=1e-6)
        channel_moments = (cells * (weight * along)[:, None]).sum(2)  # (B, C)
        flipping = torch.cat([parameters["axial"], channel_moments], dim=1)
        sign = torch.tanh((self.head_tail_weights(summary) * flipping).sum(1))
        disp = F.softplus(self.disp(summary)).squeeze(1)
        return centroid + (sign * disp)[:, None] * axis

    def forward(self, x, feature_cells, brightness, light, summary, parameters):
        return self.to_telescope_frame(
            self.camera_vote(x, feature_cells, brightness, light, summary, parameters))


class ImpactHead(nn.Module):
    """The impact point, a property of the whole image and where it lies: the flattened camera
    cells through one fusion layer."""

    def __init__(self, n_flat, n_fusion, dropout):
        super().__init__()
        self.fusion = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_flat, n_fusion), nn.GELU())
        self.output = nn.Linear(n_fusion, 2)

    def forward(self, cells):
        return self.output(self.fusion(cells.flatten(1)))


class PointingConditioning(nn.Module):
    """Scale and shift of every feature channel set by the telescope pointing (FiLM).

    The pointing enters as the air mass above 1, sec(zenith) − 1: the distance to the shower
    maximum, and with it the image's size, brightness and the source's distance from the image
    (the disp), grow with it. Scale and shift start at zero, so training starts from the network
    without the pointing.
    """

    def __init__(self, n_channels):
        super().__init__()
        self.film = nn.Linear(1, 2 * n_channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x, pointing_zenith):
        air_mass = 1 / torch.cos(pointing_zenith.to(x.dtype) * (torch.pi / 180)) - 1
        scale, shift = self.film(air_mass[:, None]).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


#: parameter names of model files written before the heads were modules of their own
_LEGACY_NAMES = {
    "direction_votes.": "direction_head.votes.",
    "brightness_weight": "direction_head.brightness_weight",
    "direction_head.": "direction_head.to_telescope_frame.",
    "cell_position": "direction_head.cell_position",
    "fusion.": "impact_head.fusion.",
    "impact_head.": "impact_head.output.",
}


def upgrade_state_dict(state):
    """A state dict with the parameter names of earlier files renamed to today's."""
    if "direction_votes.weight" not in state:
        return state
    renamed = {}
    for name, value in state.items():
        old = next((o for o in _LEGACY_NAMES if name.startswith(o)), None)
        renamed[name if old is None else _LEGACY_NAMES[old] + name[len(old):]] = value
    return renamed


class GammaPhysNet(nn.Module):
    """The γ-PhysNet network for one camera.

    Parameters
    ----------
    grid : CameraGrid
        The camera's pixel ↔ grid map.
    config : NetworkConfig
        Architecture.
    """

    def __init__(self, grid: CameraGrid, config: NetworkConfig):
        super().__init__()
        self.grid = grid
        self.config = config
        hexagonal = grid.hexagonal
        self.inputs = make_inputs(grid, config)

        mask = torch.from_numpy(grid.mask).float()[None, None]
        # pixel positions in units of the camera radius, carried down to every grid resolution
        radius = np.hypot(grid.pix_x, grid.pix_y).max()
        position = torch.from_numpy(
            grid.pixels_to_grid(np.stack([grid.pix_x, grid.pix_y]) / radius)).float()[None]
        self.stem = HexConv2d(self.inputs.n_channels, config.channels[0], hexagonal=hexagonal)
        self.register_buffer("input_mask", mask)
        if config.image_parameters and config.inputs != "cleaned":
            raise ValueError("image_parameters needs the 'cleaned' input representation, "
                             f"not {config.inputs!r}")
        self.image_parameters = ImageParameters(grid, position) if config.image_parameters else None

        stages = []
        in_channels = config.channels[0]
        for i, out_channels in enumerate(config.channels):
            stride = 1 if i == 0 else 2
            if stride == 2:
                position = _downsampled_position(position, mask)
                mask = _downsampled_mask(mask)
            stages.append(Stage(in_channels, out_channels, config.blocks_per_stage, stride, mask,
                                hexagonal, config.attention, config.attention_reduction))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.final = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))

        # the heads see only the cells of the last grid that lie on the camera
        self.register_buffer("feature_cells", torch.nonzero(mask.flatten()).flatten())
        n_flat = in_channels * len(self.feature_cells)
        # gammaness and energy from the features pooled over the camera (mean and maximum): an
        # image's shape and brightness do not depend on where it lies, and a few hundred pooled
        # numbers generalise from far fewer showers than the flattened map does
        n_summary = 2 * in_channels
        cell_position = position.flatten(2)[0][:, self.feature_cells]
        if self.image_parameters is not None:
            # the parameters' scales differ by decades: a batch norm puts them beside the features
            self.parameter_norm = nn.BatchNorm1d(self.image_parameters.n_invariant)
            n_summary += self.image_parameters.n_invariant
            self.direction_head = DispDirectionHead(n_summary, config.pooled_features, in_channels,
                                                    self.image_parameters.n_axial, cell_position)
        else:
            self.direction_head = DirectionHead(in_channels, cell_position)
        self.energy_head = EnergyHead(n_summary, config.pooled_features)
        self.class_head = ParticleClassHead(n_summary, config.pooled_features, config.dropout)
        self.impact_head = ImpactHead(n_flat, config.fusion_features, config.dropout)
        self.pointing = PointingConditioning(in_channels) if config.pointing else None
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.direction_head.reset_parameters()

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return super().load_state_dict(upgrade_state_dict(state_dict), strict=strict, assign=assign)

    def prepare_inputs(self, image, peak_time):
        """Charge and peak time ``(B, n_pixels)`` → network input on the grid (``nn.inputs``)."""
        return self.inputs(image, peak_time)

    def _backbone(self, inputs, pointing_zenith):
        x = self.stem(inputs) * self.input_mask
        for stage in self.stages:
            x = stage(x)
        x = self.final(x)
        if self.pointing is not None:
            if pointing_zenith is None:
                raise ValueError("this γ-PhysNet model is pointing-aware: it needs the telescope "
                                 "pointing's zenith angle (deg) of every image")
            x = self.pointing(x, pointing_zenith)
        return x * self.stages[-1].camera_mask

    def features(self, image, peak_time, pointing_zenith=None):
        """Feature map of the last stage (B, C, rows', cols')."""
        return self._backbone(self.prepare_inputs(image, peak_time), pointing_zenith)

    def _light_on_last_grid(self, inputs):
        """Each last-grid cell's mean log(1 + charge) and whether it sees a cleaned pixel (None
        for inputs without a cleaning mask)."""
        brightness = inputs[:, :1]
        light = self.inputs.light_mask(inputs)
        for _ in self.stages[1:]:
            brightness = F.avg_pool2d(brightness, kernel_size=3, stride=2, padding=1)
            if light is not None:
                light = _downsampled_mask(light)
        cells = self.feature_cells
        return brightness.flatten(1)[:, cells], None if light is None else light.flatten(1)[:, cells]

    def _summary(self, inputs, cells):
        """Per image: the features pooled over the camera (mean and maximum), with the image
        parameters when the model has them, and those parameters (or None)."""
        pooled = torch.cat([cells.mean(dim=2), cells.amax(dim=2)], dim=1)
        if self.image_parameters is None:
            return pooled, None
        parameters = self.image_parameters(*self.inputs.cleaned_image(inputs))
        return torch.cat([pooled, self.parameter_norm(parameters["invariant"])], dim=1), parameters

    def camera_vote(self, image, peak_time, pointing_zenith=None):
        """The direction before the map to the TelescopeFrame."""
        inputs = self.prepare_inputs(image, peak_time)
        x = self._backbone(inputs, pointing_zenith)
        summary, parameters = self._summary(inputs, x.flatten(2)[:, :, self.feature_cells])
        return self.direction_head.camera_vote(x, self.feature_cells, *self._light_on_last_grid(inputs),
                                               summary, parameters)

    def forward(self, image, peak_time, pointing_zenith=None):
        inputs = self.prepare_inputs(image, peak_time)
        x = self._backbone(inputs, pointing_zenith)
        cells = x.flatten(2)[:, :, self.feature_cells]  # (B, C, n_cells)
        summary, parameters = self._summary(inputs, cells)
        return {
            "class_logits": self.class_head(summary),
            "log_energy": self.energy_head(summary),
            "direction": self.direction_head(x, self.feature_cells, *self._light_on_last_grid(inputs),
                                             summary, parameters),
            "impact": self.impact_head(cells),
        }

    @staticmethod
    def gammaness(outputs):
        """Probability of the gamma class (index 1) from the network outputs."""
        return torch.softmax(outputs["class_logits"].float(), dim=1)[:, 1]

    def n_flops(self):
        """Multiply-accumulates × 2 of one image's forward pass (convolutions and linear layers)."""
        flops = 0
        hooks = []

        def count(module, inputs, output):
            nonlocal flops
            if isinstance(module, nn.Conv2d):
                taps = module.weight[0, 0].numel()
                if isinstance(module, HexConv2d):
                    taps = int(module.tap_mask.sum())
                per_out = module.in_channels // module.groups * taps
                flops += 2 * per_out * output[0].numel()
            elif isinstance(module, nn.Linear):
                flops += 2 * module.in_features * module.out_features

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                hooks.append(module.register_forward_hook(count))
        was_training = self.training
        self.eval()
        with torch.no_grad():
            n = self.grid.n_pixels
            self(torch.zeros(1, n), torch.zeros(1, n))
        self.train(was_training)
        for hook in hooks:
            hook.remove()
        return flops


def count_parameters(model):
    """Number of trainable parameters."""
    return int(sum(np.prod(p.shape) for p in model.parameters() if p.requires_grad))
