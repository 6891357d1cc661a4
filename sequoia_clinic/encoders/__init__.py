"""Tile encoders: a registry of timm networks (UNI, ResNet-50, a demo ViT) loaded strictly from local weights
(:mod:`sequoia_clinic.weightio`), and batched streaming feature extraction with a background tile loader."""

from sequoia_clinic.encoders.extract import ArrayBatch, ExtractionStats, array_batches, extract_features
from sequoia_clinic.encoders.model import (
    PRECISIONS,
    TileEncoder,
    computes_in_bf16,
    create_network,
    has_native_bf16,
    load_encoder,
    random_encoder,
    resolve_device,
)
from sequoia_clinic.encoders.registry import ENCODERS, EncoderSpec, get_encoder_spec

__all__ = [
    "ENCODERS",
    "ArrayBatch",
    "EncoderSpec",
    "ExtractionStats",
    "PRECISIONS",
    "TileEncoder",
    "array_batches",
    "computes_in_bf16",
    "create_network",
    "extract_features",
    "get_encoder_spec",
    "has_native_bf16",
    "load_encoder",
    "random_encoder",
    "resolve_device",
]
