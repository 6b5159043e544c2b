"""CDFI: compressed AdaCoF plus multi-scale feature warping and a GridNet synthesis (CVPR 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.adacof import WarpingModel, spatial_regulariser
from models.arch import Spec
from models.gridnet import GridNet


class CDFIAdaCoF(WarpingModel):
    """The final CDFI model: both frames and five feature maps warped with each kernel set, fused by
    a GridNet, and blended with the AdaCoF output by the Blend head."""

    model_name = "cdfi_adacof"

    def __init__(
        self,
        kernel_size: int,
        dilation: int,
        spec: Spec,
        sampling: str = "trunc",
        legacy_grad: bool = False,
    ) -> None:
        super().__init__(kernel_size, dilation, spec, sampling, legacy_grad)
        in_ch = 2 * (3 + sum(spec["features"]))
        self.context_synthesis = GridNet(in_ch, 3, spec["gridnet"])

    def synthesize_parts(
        self, frame0: torch.Tensor, frame2: torch.Tensor, k: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(frame, warp0, warp2)``: the Blend of GridNet's synthesis with the AdaCoF output, and the
        two warped frames."""
        out = self.training_outputs(frame0, frame2, k)
        return out["frame1"], out["warp0"], out["warp2"]

    def training_outputs(
        self, frame0: torch.Tensor, frame2: torch.Tensor, k: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``frame1``, ``warp0``/``warp2`` and ``context``, the GridNet's own synthesis before the Blend
        (for the ``Context`` loss term, which keeps the GridNet learning while the Blend head ignores it)."""
        p0, p2 = self.pad_frame(frame0), self.pad_frame(frame2)
        size = p0.shape[-2:]
        feats = [F.interpolate(k[f"feature{i}"], size=size, mode="bilinear", align_corners=False) for i in range(1, 6)]
        warp0, *feats1 = self.warp_many([p0, *feats], k["Weight1"], k["Alpha1"], k["Beta1"])
        warp2, *feats2 = self.warp_many([p2, *feats], k["Weight2"], k["Alpha2"], k["Beta2"])
        stack = [warp0, warp2]
        for a, b in zip(feats1, feats2, strict=True):
            stack += [a, b]
        context = self.context_synthesis(torch.cat(stack, 1))
        occ, blend = k["Occlusion"], k["Blend"]
        frame = blend * context + (1 - blend) * (occ * warp0 + (1 - occ) * warp2)
        return {"frame1": frame, "warp0": warp0, "warp2": warp2, "context": context}

    def regularisers(self, k: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"g_Spatial": spatial_regulariser(k)}
