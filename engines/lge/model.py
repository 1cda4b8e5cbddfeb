"""LGE segmentation network: a 2D nnU-Net-style U-Net (MONAI DynUNet) applied slice by slice to a short-axis
stack, and the ensemble of cross-validation fold models that ships.

Input (N, 1, D, H, W) float32, output logits (N, 6, D, H, W) with H and W divisible by 16: the stack's slices are
folded into the batch, so depth is free and the ONNX signature stays that of a stack model. With 12-23 mm between
slices (MyoPS) a 2D network is what nnU-Net itself chooses for such anisotropy. A 2.5-D variant (`context` = 1)
sees each slice with its previous and next slice of the stack as two more input channels (the slice itself at
either end), built inside `forward`, so the stack signature is unchanged.
"""
from __future__ import annotations

import torch
from monai.networks.nets import DynUNet
from torch import nn

CLASS_NAMES = ("background", "lv_blood_pool", "healthy_myocardium", "scar", "mvo", "rv_blood_pool")
DEFAULT_FILTERS = (16, 32, 64, 128, 256)


class LGESliceUNet(nn.Module):
    """2D DynUNet (instance norm, leaky ReLU, strided-conv down-sampling) on every slice of a stack.

    In training mode with `deep_supervision` the forward of `forward_slices` returns (N, 1 + heads, C, H, W) as
    DynUNet does (lower-resolution heads up-sampled to full size); `forward` (stack layout) always returns the
    main head only.
    """

    def __init__(self, filters: tuple[int, ...] = DEFAULT_FILTERS, classes: int = len(CLASS_NAMES),
                 deep_supervision_heads: int = 2, context: int = 0):
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if len(filters) < 3 or classes < 2 or deep_supervision_heads < 0 or context not in (0, 1):
            raise ValueError(f"need >= 3 levels, >= 2 classes, heads >= 0, context 0 or 1; got {filters}, {classes}, "
                             f"{deep_supervision_heads}, {context}")
        self.config = {"filters": list(filters), "classes": classes, "deep_supervision_heads": deep_supervision_heads}
        if context:
            self.config["context"] = context
        self.context = context
        strides = [[1, 1]] + [[2, 2]] * (len(filters) - 1)
        self.net = DynUNet(
            spatial_dims=2, in_channels=1 + 2 * context, out_channels=classes, kernel_size=[[3, 3]] * len(filters),
            strides=strides, upsample_kernel_size=strides[1:], filters=list(filters), norm_name="instance",
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=deep_supervision_heads > 0, deep_supr_num=max(1, deep_supervision_heads),
            res_block=False,
        )

    @property
    def spatial_multiple(self) -> int:
        return 2 ** (len(self.config["filters"]) - 1)

    def forward_slices(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 + 2 context, H, W) -> logits (N, C, H, W), or (N, 1 + heads, C, H, W) in training with deep
        supervision; with context the channels are (slice, previous slice, next slice)."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        if self.context:
            x = with_neighbours(x)
            c = x.shape[1]
        slices = x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
        logits = self.net(slices)
        if logits.dim() == 5:  # training mode with deep supervision: main head
            logits = logits[:, 0]
        classes = logits.shape[1]
        return logits.reshape(n, d, classes, h, w).permute(0, 2, 1, 3, 4)


def with_neighbours(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, D, H, W) stack -> (N, 3, D, H, W): each slice, its previous and its next slice (the slice itself at
    either end of the stack), as engines.lge.train's 2.5-D sampler gives them."""
    previous = torch.cat([x[:, :, :1], x[:, :, :-1]], dim=2)
    following = torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)
    return torch.cat([x, previous, following], dim=1)


class LGEEnsemble(nn.Module):
    """The mean of the members' softmax probabilities, returned as log-probabilities ("logits" whose softmax is
    that mean), optionally with a left-right flip as test-time augmentation. (N,1,D,H,W) -> (N,C,D,H,W)."""

    def __init__(self, members: int, filters: tuple[int, ...] = DEFAULT_FILTERS, classes: int = len(CLASS_NAMES),
                 flip_tta: bool = False, deep_supervision_heads: int = 2, context: int = 0):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.config = {"members": members, "filters": list(filters), "classes": classes, "flip_tta": flip_tta,
                       "deep_supervision_heads": deep_supervision_heads}
        if context:
            self.config["context"] = context
        # members keep their (unused in eval) deep-supervision heads so fold checkpoints load strictly
        self.members = nn.ModuleList(LGESliceUNet(filters, classes, deep_supervision_heads, context)
                                     for _ in range(members))
        self.flip_tta = flip_tta

    @property
    def spatial_multiple(self) -> int:
        return self.members[0].spatial_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        views = [x, torch.flip(x, dims=[4])] if self.flip_tta else [x]
        for member in self.members:
            for index, view in enumerate(views):
                probabilities = torch.softmax(member(view), dim=1)
                if index == 1:
                    probabilities = torch.flip(probabilities, dims=[4])
                total = probabilities if total is None else total + probabilities
        mean = total / (len(self.members) * len(views))
        return torch.log(mean.clamp(min=1e-6))

    @classmethod
    def from_members(cls, members: list[LGESliceUNet], flip_tta: bool = False) -> "LGEEnsemble":
        config = members[0].config
        ensemble = cls(len(members), tuple(config["filters"]), config["classes"], flip_tta,
                       config["deep_supervision_heads"], int(config.get("context", 0)))
        for target, source in zip(ensemble.members, members):
            target.load_state_dict(source.state_dict(), strict=True)
        return ensemble.eval()
