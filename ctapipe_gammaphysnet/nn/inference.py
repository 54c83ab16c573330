"""γ-PhysNet prepared for fast inference: same inputs, same outputs (to float rounding), less work.

``optimize_for_inference`` returns an eval-mode copy of a trained network in which

- the hexagonal tap mask of every ``HexConv2d`` is baked into a plain ``nn.Conv2d`` weight
  (no weight × mask product on every call),
- the batch normalisation that directly follows a convolution (``bn2`` after ``conv1`` in each
  residual block) is folded into that convolution's weight and bias; the other batch norms follow a
  sum or an attention product, not a convolution, and stay (they are a cheap per-channel affine),
- the weights are in channels-last memory order when asked (oneDNN's preferred layout on CPU).

The copy is a ``GammaPhysNet`` still, so its ``forward(image, peak_time)`` and outputs are those of
the network; it is meant for inference only (``torch.inference_mode``). The original is untouched.
With ``backend="onnxruntime"`` that copy is exported in memory and run by ONNX Runtime, whose
fused, blocked-layout CPU kernels avoid most of the memory passes of the element-wise operations
(masks, pre-activation batch norms, attention products) that dominate eager PyTorch here.
``to_onnx`` exports that copy (what ``ctapipe-export-gammaphysnet`` writes).
"""
import copy
import io
import warnings

import torch
from torch import nn

from .layers import HexConv2d, PreActBlock
from .network import GammaPhysNet
from .onnx_runtime import DEFAULT_OPSET, INPUT_NAMES, OUTPUT_NAMES, POINTING_INPUT, OnnxGammaPhysNet

__all__ = ["BACKENDS", "optimize_for_inference", "to_onnx", "fold_batch_norm", "bake_tap_mask",
           "set_cpu_threads"]

BACKENDS = ("torch", "onnxruntime", "auto")


def bake_tap_mask(conv: HexConv2d) -> nn.Conv2d:
    """A plain convolution with the hexagonal tap mask multiplied into its weight."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(conv.weight * conv.tap_mask)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain


def fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """``norm(conv(x))`` (norm in eval mode) as one convolution with a bias."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, groups=conv.groups, bias=True)
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        folded.weight.copy_(conv.weight * scale[:, None, None, None])
        folded.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return folded


def _plain(conv):
    return bake_tap_mask(conv) if isinstance(conv, HexConv2d) else conv


def optimize_for_inference(network: GammaPhysNet, backend="torch", channels_last=True,
                           n_threads=0):
    """A copy of ``network`` for fast inference, called as the network is.

    backend : "torch", "onnxruntime" or "auto"
        torch: an eval-mode ``GammaPhysNet`` with masks baked in and batch norms folded (see the
        module doc), on the network's device. onnxruntime: an ``OnnxGammaPhysNet`` of that copy,
        exported in memory (CPU; needs onnxruntime); on 2 CPU cores it is several times faster
        than torch (docs/performance.rst). auto: onnxruntime for a network on the CPU when
        onnxruntime is installed, else torch.
    n_threads : int
        ONNX Runtime intra-op threads (0: one per physical core).

    Outputs equal the original's to float32 rounding (≲ 1e-5 relative).
    """
    on_cpu = next(network.parameters()).device.type == "cpu"
    if backend == "auto":
        backend = "onnxruntime" if on_cpu and _has_onnxruntime() else "torch"
    if backend == "onnxruntime":
        exported = to_onnx(copy.deepcopy(network).cpu()).SerializeToString()
        return OnnxGammaPhysNet(exported, network.grid, n_threads=n_threads)
    if backend != "torch":
        raise ValueError(f"unknown inference backend {backend!r}: torch, onnxruntime or auto")
    optimized = copy.deepcopy(network).eval()
    optimized.stem = _plain(optimized.stem)
    for block in optimized.modules():
        if isinstance(block, PreActBlock):
            block.conv1 = fold_batch_norm(_plain(block.conv1), block.bn2)
            block.bn2 = nn.Identity()
            block.conv2 = _plain(block.conv2)
    if channels_last:
        optimized = optimized.to(memory_format=torch.channels_last)
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    return optimized


def to_onnx(network, opset=DEFAULT_OPSET):
    """The network as an ONNX model (``onnx.ModelProto``) with a dynamic batch axis.

    Exported from ``optimize_for_inference(network)``: masks baked in, batch norms folded.
    """
    import onnx

    optimized = optimize_for_inference(network, channels_last=False)
    n_pixels = network.grid.n_pixels
    example = (torch.zeros(2, n_pixels), torch.zeros(2, n_pixels))
    input_names = list(INPUT_NAMES)
    if network.config.pointing:
        example += (torch.full((2,), 20.0),)
        input_names.append(POINTING_INPUT)
    buffer = io.BytesIO()
    # the TorchScript exporter: needs no onnxscript and gives a plain, portable graph
    # (torch ≥ 2.9 warns that it is no longer the default)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(optimized, example, buffer, input_names=input_names,
                          output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in [*input_names, *OUTPUT_NAMES]})
    return onnx.load_model_from_string(buffer.getvalue())


def _has_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def set_cpu_threads(n_threads):
    """Use ``n_threads`` intra-op threads (one per physical core is best for convolutions)."""
    if n_threads and n_threads > 0:
        torch.set_num_threads(n_threads)
    return torch.get_num_threads()
