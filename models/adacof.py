"""AdaCoF and compressed AdaCoF: a U-Net that predicts per-pixel warp kernels, then two AdaCoF warps.

Both published families share this file: compressed AdaCoF is AdaCoF with the narrower channel widths
found by pruning, so the difference is only the architecture spec (see ``models/arch.py``). Module and
parameter names follow the published code so that its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cupy_module import SAMPLING_RULES, adacof_warp, adacof_warp_many, cpu
from cupy_module.build import BuildError, cpu_library
from models.arch import Spec, validate_arch

# Mean RGB that the published kernel-estimation network subtracts from its inputs.
RGB_MEAN = (0.4631, 0.4352, 0.3990)


def _conv_relu_stack(widths: list[int], in_ch: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for out_ch in widths:
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=False)]
        in_ch = out_ch
    return layers


def _upsample() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


class Float32Softmax(nn.Softmax):
    """Softmax computed in fp32, so that kernel weights from bf16/fp16 logits (autocast) keep fp32
    resolution; the same as ``nn.Softmax`` in fp32.

    A channels_last input (N, C, H, W) over dim 1 is taken as the contiguous (N, H, W, C) view and
    reduced over its last dim, upcast inside the kernel: one pass, where a softmax over dim 1 of a
    channels_last tensor costs an upcast copy and a strided reduction (about 6x slower for CDFI's 121
    taps at 640x480). Same values up to float rounding; the output stays channels_last.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.dim == 1 and input.dim() == 4 and _is_channels_last(input):
            fused = input.dtype == torch.bfloat16 and input.device.type == "cpu" and input.requires_grad
            if fused and torch.is_grad_enabled() and _cpu_library_available():
                return _Bf16SoftmaxCPU.apply(input)
            return _softmax_last(input)
        return super().forward(input.float())


def _softmax_last(input: torch.Tensor) -> torch.Tensor:
    """Float32 softmax over dim 1 of a channels_last tensor, reduced over the last dim of its (N, H, W, C) view."""
    return torch.softmax(input.permute(0, 2, 3, 1), -1, dtype=torch.float32).permute(0, 3, 1, 2)


class _Bf16SoftmaxCPU(torch.autograd.Function):
    """``_softmax_last`` of a bf16 channels_last CPU input (a channels_last model's logits under
    autocast), whose backward writes the bf16 input gradient in the same pass as the float32 softmax
    gradient (``cupy_module.cpu.softmax_backward_bf16``) instead of a float32 gradient and a converting
    copy. Same forward values; gradients equal torch's up to float rounding."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        y = _softmax_last(input)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        if grad.dtype == torch.float32 and _is_channels_last(grad):
            return cpu.softmax_backward_bf16(y, grad)
        grad = grad.float()
        return (y * (grad - (grad * y).sum(1, keepdim=True))).to(torch.bfloat16)


def _is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is in channels_last memory format and not also plain contiguous."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class Float32Sigmoid(nn.Sigmoid):
    """Sigmoid computed in fp32 (see ``Float32Softmax``): blending maps near 0.5 would otherwise be
    quantised to bf16 steps of 0.002."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.float())


def _head(in_ch: int, hidden: list[int], out_ch: int, activation: nn.Module | None) -> nn.Sequential:
    """conv+ReLU x3, bilinear x2, conv (indices 0, 2, 4, 7 carry parameters), optional activation."""
    layers = [*_conv_relu_stack(hidden, in_ch), _upsample(), nn.Conv2d(hidden[-1], out_ch, 3, padding=1)]
    if activation is not None:
        layers.append(activation)
    return nn.Sequential(*layers)


class KernelEstimation(nn.Module):
    """Encoder-decoder predicting Weight/Alpha/Beta for both frames plus blending maps.

    ``forward`` returns a dict of head outputs at the input resolution; with ``features=True``
    (CDFI) it also returns the five 1x1-projected encoder feature maps.
    """

    def __init__(self, spec: Spec, kernel_size: int) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        enc, dec, heads = spec["encoder"], spec["decoder"], spec["heads"]
        self.head_names = tuple(heads)
        self.with_features = "features" in spec
        if self.with_features:
            for i, out_ch in enumerate(spec["features"], start=1):
                # padding=1 on a 1x1 conv grows the map by 2 px; published checkpoints depend on it.
                setattr(self, f"module1by1_{i}", nn.Conv2d(enc[i - 1][-1], out_ch, 1, padding=1))
        in_ch = 6
        for i, widths in enumerate(enc, start=1):
            setattr(self, f"moduleConv{i}", nn.Sequential(*_conv_relu_stack(widths, in_ch)))
            in_ch = widths[-1]
        for level, widths in zip((5, 4, 3, 2), dec, strict=True):
            skip_ch = enc[level - 1][-1]
            setattr(self, f"moduleDeconv{level}", nn.Sequential(*_conv_relu_stack(widths, in_ch)))
            setattr(
                self,
                f"moduleUpsample{level}",
                nn.Sequential(_upsample(), nn.Conv2d(widths[-1], skip_ch, 3, padding=1), nn.ReLU(inplace=False)),
            )
            in_ch = skip_ch
        for name in self.head_names:
            if name.startswith("Weight"):
                out_ch, act = taps, Float32Softmax(dim=1)
            elif name.startswith(("Alpha", "Beta")):
                out_ch, act = taps, None
            else:
                out_ch, act = 1, Float32Sigmoid()
            setattr(self, f"module{name}", _head(in_ch, heads[name], out_ch, act))
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.cat([frame0 - self.rgb_mean, frame2 - self.rgb_mean], 1)
        skips = []
        for i in range(1, 6):
            x = getattr(self, f"moduleConv{i}")(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        for level in (5, 4, 3, 2):
            x = getattr(self, f"moduleDeconv{level}")(x)
            x = getattr(self, f"moduleUpsample{level}")(x) + skips[level - 1]
        out = {name: getattr(self, f"module{name}")(x) for name in self.head_names}
        if self.with_features:
            for i in range(1, 6):
                out[f"feature{i}"] = getattr(self, f"module1by1_{i}")(skips[i - 1])
        return out


MIN_FRAME_SIZE = 17
"""The smallest height and width the models take: reflect padding to a multiple of 32 needs over 16 px."""


def pad_to_multiple(frame: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Reflect-pad bottom and right up to a multiple of ``multiple``, as the published models do."""
    h, w = frame.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph >= h or pw >= w:
        raise ValueError(
            f"frames of {w}x{h} are too small: reflect padding to a multiple of {multiple} needs at least "
            f"{multiple // 2 + 1} pixels on each side"
        )
    if ph == 0 and pw == 0:
        return frame
    return F.pad(frame, (0, pw, 0, ph), mode="reflect")


def check_frames(frame0: torch.Tensor, frame2: torch.Tensor) -> None:
    """Raise a clear error unless the two frames are (N, 3, H, W) tensors of one shape."""
    for name, t in (("frame0", frame0), ("frame2", frame2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be an (N, 3, H, W) tensor, got {shape}")
    if frame0.shape != frame2.shape:
        raise ValueError(f"frames differ in size: {tuple(frame0.shape)} vs {tuple(frame2.shape)}")


def charbonnier_mean(d: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mean(sqrt(d^2 + eps)), the smoothness penalty of the published models."""
    return torch.sqrt(d * d + eps).mean()


def smoothness(m: torch.Tensor) -> torch.Tensor:
    """Charbonnier of horizontal plus vertical differences of a map (N, 1, H, W), computed in fp32
    (under autocast the head outputs are bf16/fp16; the loss term is not)."""
    m = m.float()
    return charbonnier_mean(m[..., :, 1:] - m[..., :, :-1]) + charbonnier_mean(m[..., 1:, :] - m[..., :-1, :])


def spatial_regulariser(k: dict[str, torch.Tensor]) -> torch.Tensor:
    """g_Spatial: smoothness of the channel mean of Weight*offset for the four (Weight, offset) pairs."""
    total = k["Weight1"].new_zeros((), dtype=torch.float32)
    for w, a, b in (("Weight1", "Alpha1", "Beta1"), ("Weight2", "Alpha2", "Beta2")):
        mean_a, mean_b = _weighted_offset_means(k[w], k[a], k[b])
        total = total + smoothness(mean_a)
        total = total + smoothness(mean_b)
    return total


def _weighted_offset_means(
    weight: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_channel_mean_of_product(weight, alpha)`` and ``(weight, beta)``.

    Channels_last CPU tensors (a channels_last model; bf16 offsets under autocast) go through one
    compiled pass that reads each tensor once and, backward, writes the three gradients in their
    arguments' dtypes and layouts in one more pass (``_ChannelMeansCPU``), where torch makes the
    mixed-dtype products, their gradients and the casts back to bf16 in separate passes (g_Spatial of
    a bf16 CDFI training step at 256x256, batch 4, 1 thread: about 0.24 s of 6.9 s in torch, 0.14 s
    fused). Same values up to float rounding (float32 accumulation); float32 weights get bitwise the
    same gradients. Anything else, the fp32 model's planar tensors included, takes the torch formula.
    """
    if cpu.channel_means_supported(weight, alpha, beta) and _cpu_library_available():
        if torch.is_grad_enabled() and any(t.requires_grad for t in (weight, alpha, beta)):
            return _ChannelMeansCPU.apply(weight, alpha, beta)
        return cpu.channel_means(weight, alpha, beta)
    return _channel_mean_of_product(weight, alpha), _channel_mean_of_product(weight, beta)


def _cpu_library_available() -> bool:
    try:
        cpu_library()
    except BuildError:
        return False
    return True


class _ChannelMeansCPU(torch.autograd.Function):
    """(weight * alpha).mean(1), (weight * beta).mean(1) in float32 for channels_last CPU tensors, with
    the compiled forward and backward of ``cupy_module.cpu.channel_means``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
        ctx.save_for_backward(weight, alpha, beta)
        ctx.set_materialize_grads(False)
        return cpu.channel_means(weight, alpha, beta)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_a: torch.Tensor | None, grad_b: torch.Tensor | None):
        weight, alpha, beta = ctx.saved_tensors
        return cpu.channel_means_backward(weight, alpha, beta, grad_a, grad_b)


def _channel_mean_of_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a.float() * b.float()).mean(1, keepdim=True)``.

    For channels_last tensors (a channels_last model) the product and mean are taken over the last
    dim of the contiguous (N, H, W, C) views: over dim 1 of channels_last tensors, the backward's
    broadcast of the mean's gradient against a channels_last factor ran a slow strided loop (for CDFI
    at 256x256, batch 4, 12 such multiplications cost 12% of a bf16 training step). A bf16 factor is
    promoted to float32 inside the multiplication (exact, as ``.float()``), so no upcast copy is made.
    """
    if a.dim() == 4 and _is_channels_last(a) and _is_channels_last(b):
        bv = b.permute(0, 2, 3, 1)
        bv = bv if bv.dtype in (torch.float16, torch.bfloat16, torch.float32) else bv.float()
        return (a.permute(0, 2, 3, 1).float() * bv).mean(-1).unsqueeze(1)
    return (a.float() * b.float()).mean(1, keepdim=True)


class WarpingModel(nn.Module):
    """What every variant shares: padding, kernel estimation, the two AdaCoF warps, cropping."""

    model_name = "adacof"

    def __init__(
        self,
        kernel_size: int,
        dilation: int,
        spec: Spec,
        sampling: str = "trunc",
        legacy_grad: bool = False,
    ) -> None:
        super().__init__()
        validate_arch(spec)
        if sampling not in SAMPLING_RULES:
            raise ValueError(f"unknown sampling rule {sampling!r}; expected one of {SAMPLING_RULES}")
        if kernel_size < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be positive, got {kernel_size}, {dilation}")
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.sampling = sampling
        self.legacy_grad = legacy_grad
        self.arch = spec
        self.kernel_pad = (self.kernel_size - 1) * self.dilation // 2
        self.get_kernel = KernelEstimation(spec, self.kernel_size)

    def pad_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Replication padding by (F-1)*D/2 so that every tap of every output pixel lands inside."""
        p = self.kernel_pad
        return F.pad(frame, (p, p, p, p), mode="replicate")

    def warp(self, x: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """AdaCoF warp of an already padded tensor with this model's dilation and sampling rule."""
        return adacof_warp(x, weight, alpha, beta, self.dilation, sampling=self.sampling, legacy_grad=self.legacy_grad)

    def warp_many(
        self, tensors: list[torch.Tensor], weight: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
    ) -> list[torch.Tensor]:
        """Warp several padded tensors with one kernel set.

        The warp treats channels independently, so the tensors go through one pass that shares the
        kernels' index work. The published backward pass depends on channel position, so
        ``legacy_grad`` keeps one call per tensor, as the published code does.
        """
        if self.legacy_grad:
            return [self.warp(t, weight, alpha, beta) for t in tensors]
        return adacof_warp_many(tensors, weight, alpha, beta, self.dilation, sampling=self.sampling)

    def synthesize(self, frame0: torch.Tensor, frame2: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
        """The interpolated frame from padded frames and their kernels."""
        return self.synthesize_parts(frame0, frame2, k)[0]

    def training_outputs(
        self, frame0: torch.Tensor, frame2: torch.Tensor, k: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The images a training loss can use: ``frame1`` (the output), ``warp0``/``warp2``."""
        frame, warp0, warp2 = self.synthesize_parts(frame0, frame2, k)
        return {"frame1": frame, "warp0": warp0, "warp2": warp2}

    def synthesize_parts(
        self, frame0: torch.Tensor, frame2: torch.Tensor, k: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(frame, warp0, warp2)``: the AdaCoF family's output, the occlusion-weighted sum of the two
        warped frames, and the warped frames themselves (for the ``Warp`` loss term)."""
        warp0 = self.warp(self.pad_frame(frame0), k["Weight1"], k["Alpha1"], k["Beta1"])
        warp2 = self.warp(self.pad_frame(frame2), k["Weight2"], k["Alpha2"], k["Beta2"])
        occ = k["Occlusion"]
        return occ * warp0 + (1 - occ) * warp2, warp0, warp2

    def regularisers(self, k: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"g_Spatial": spatial_regulariser(k), "g_Occlusion": smoothness(k["Occlusion"])}

    def forward(self, frame0: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Middle frame in eval mode; in train mode a dict with ``frame1``, the two warped input frames
        ``warp0``/``warp2`` (CDFI: also its GridNet synthesis ``context``) and the regularisers ``g_*``."""
        check_frames(frame0, frame2)
        h, w = frame0.shape[-2:]
        frame0, frame2 = pad_to_multiple(frame0), pad_to_multiple(frame2)
        k = self.get_kernel(frame0, frame2)
        if not self.training:
            return self.synthesize(frame0, frame2, k)[..., :h, :w]
        images = {name: t[..., :h, :w] for name, t in self.training_outputs(frame0, frame2, k).items()}
        return {**images, **self.regularisers(k)}


class AdaCoF(WarpingModel):
    """AdaCoF (Lee et al., CVPR 2020) with the published widths, or any spec of the same topology."""


class CompressedAdaCoF(WarpingModel):
    """AdaCoF rebuilt with the channel widths that OBProxSG pruning left (CDFI, Sec. 3)."""

    model_name = "compressed_adacof"
