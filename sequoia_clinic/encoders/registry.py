"""The registry of tile encoders: named, frozen specs that say how to build each network with timm.

Each entry names the timm architecture and its arguments, the output width, and the preprocessing the
network expects (input size, normalisation). The registry is plain data: its keys are the encoder names
used in bundle manifests and on the command line. No entry ever downloads weights (``pretrained=False``
always); weights come only from local files named by a bundle (see ``sequoia_clinic/weightio.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one tile encoder and prepare its input."""

    name: str
    timm_name: str
    timm_kwargs: tuple[tuple[str, Any], ...]  # keyword arguments of timm.create_model, as frozen pairs
    out_dim: int
    input_px: int  # tiles (256 px) are resized to this square size; equal to the tile size = no resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    drop_key_prefixes: tuple[str, ...] = ()  # checkpoint keys of removed parts (e.g. a classifier)
    # A Conv2d without padding that sees the pixels first (a ViT's patch embedding). The input
    # normalisation is folded into its weights (see encoders/model.py); None: normalise the pixels.
    input_conv: str | None = None
    batch_size: int = 32  # tiles per forward pass unless --batch-size says otherwise
    description: str = ""

    def kwargs(self) -> dict[str, Any]:
        return dict(self.timm_kwargs)


ENCODERS: Mapping[str, EncoderSpec] = MappingProxyType(
    {
        # UNI (Chen et al., Nat Med 2024) exactly as SEQUOIA and the UNI README build it.
        "uni": EncoderSpec(
            name="uni",
            timm_name="vit_large_patch16_224",
            timm_kwargs=(
                ("img_size", 224),
                ("patch_size", 16),
                ("init_values", 1e-5),
                ("num_classes", 0),
                ("dynamic_img_size", True),
            ),
            out_dim=1024,
            input_px=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_conv="patch_embed.proj",
            # A batch of 32 holds 340 MB of ViT-L activations on top of 1.2 GB of weights; 16 halves that
            # at the same CPU speed (compute-bound either way). On a GPU pass --batch-size 256.
            batch_size=16,
            description="UNI ViT-L/16 (1024-d class token); weights: the user's own pytorch_model.bin",
        ),
        # ImageNet ResNet-50 truncated after global average pooling (2048-d), the HE2RNA-style baseline.
        # SEQUOIA feeds the 256 px tile without resizing; a torchvision/timm checkpoint's fc.* is dropped.
        "resnet50": EncoderSpec(
            name="resnet50",
            timm_name="resnet50",
            timm_kwargs=(("num_classes", 0),),
            out_dim=2048,
            input_px=256,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            drop_key_prefixes=("fc.",),
            description="ResNet-50 up to global pooling (2048-d); weights: an ImageNet checkpoint file",
        ),
        # A small ViT with UNI's structure (LayerScale, class token) for the demo bundle and the tests.
        "demo-vit": EncoderSpec(
            name="demo-vit",
            timm_name="vit_tiny_patch16_224",
            timm_kwargs=(
                ("img_size", 224),
                ("patch_size", 16),
                ("embed_dim", 64),
                ("depth", 4),
                ("num_heads", 4),
                ("init_values", 1e-5),
                ("num_classes", 0),
                ("dynamic_img_size", True),
            ),
            out_dim=64,
            input_px=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            input_conv="patch_embed.proj",
            description="small demo ViT/16 (64-d, 4 blocks); untrained, deterministic weights",
        ),
    }
)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registered spec called ``name``; unknown names raise OptionError listing the choices."""
    from sequoia_clinic.errors import OptionError

    try:
        return ENCODERS[name]
    except KeyError:
        choices = ", ".join(sorted(ENCODERS))
        raise OptionError(f"unknown encoder '{name}'", fix=f"Choose one of: {choices}.") from None
