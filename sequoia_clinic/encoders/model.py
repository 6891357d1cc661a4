"""A tile encoder ready to run: the timm network, its preprocessing and the device/precision policy.

``TileEncoder.embed`` takes a batch of uint8 RGB tiles (n, H, W, 3), exactly as the slide reader yields
them, and returns float32 features (n, D). Preprocessing mirrors the reference transform
``Resize(224) → ToTensor → Normalize(ImageNet)`` but runs batched on the chosen device: the resize is done
on uint8 tensors (torchvision's antialiased bilinear, which matches PIL to within 1 grey level on <1 % of
pixels), then scaling and normalisation in float32.

Precision policy (``precision``): ``"auto"`` computes the network in bfloat16 autocast where the device
has native bfloat16 arithmetic (CUDA GPUs from Ampere on; x86 CPUs with AVX512-BF16 or AMX) and in float32
elsewhere; ``"fp32"`` always uses float32, the reference's arithmetic; ``"bf16"`` insists on bfloat16 and
refuses a device without native support (emulated bf16 is slower than float32). Either way the result is
deterministic for a fixed input on the CPU. What bfloat16 changes in features and predictions is measured
by ``benches/bench_precision.py`` and recorded in the README. Preprocessing and the output are float32 in
every mode. Channels-last memory format is used for the convolutional parts.

Folded normalisation: for networks whose first layer is a convolution without padding (a ViT's patch
embedding, ``EncoderSpec.input_conv``), ``x * scale - shift`` is folded into that layer's weights, which
are passed to the network for each call (``torch.func.functional_call``; the module itself is never
changed, so its ``state_dict`` stays the checkpoint's). The network then takes the resized pixels minus
128, which needs no float32 pass over the batch: ~12 % faster for demo-vit on the CPU
(``benches/bench_encoder.py``). Equal in real arithmetic; in float32 the features differ by rounding only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sequoia_clinic.encoders.registry import EncoderSpec
from sequoia_clinic.errors import OptionError
from sequoia_clinic.settings import Precision
from sequoia_clinic.weightio import drop_prefixes, load_strict, read_state_dict, verify_sha256

# The folded network's input: pixels - 128, integers in -128..127, exact in bfloat16 as in float32.
PIXEL_OFFSET = 128


def create_network(spec: EncoderSpec, meta: bool = False) -> torch.nn.Module:
    """The timm network of ``spec`` in eval mode; never pretrained (no download).

    With ``meta=True`` the parameters live on the meta device (no memory, no random init) and must be
    filled by :func:`~sequoia_clinic.weightio.load_strict`.
    """
    import timm  # ~1 s with torchvision: only when a network is made (a feature-cache hit makes none)

    if meta:
        with torch.device("meta"):
            net = timm.create_model(spec.timm_name, pretrained=False, **spec.kwargs())
    else:
        net = timm.create_model(spec.timm_name, pretrained=False, **spec.kwargs())
    return net.eval()


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, refusing CUDA when no GPU is visible (a user error, not a crash)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device '{name}'", fix="Use cpu or cuda.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("CUDA was requested but no GPU is available", fix="Use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device '{name}'", fix="Use cpu or cuda.")
    return device


def reads_ahead(device: torch.device) -> bool:
    """Whether tiles should be decoded while the encoder computes on ``device``.

    Yes on a GPU: the CPU is free meanwhile. No on the CPU: torch's threads already use every core, and a
    decode thread that preempts one of them stalls the other at the next barrier. Reading and computing
    in turn was 15-18 % faster than overlapping them for demo-vit on 2 cores (``benches/bench_encoder.py``).
    """
    return device.type != "cpu"


PRECISIONS = tuple(p.value for p in Precision)  # auto, fp32, bf16 (settings.Precision)


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware.

    CUDA: compute capability 8.0 or later (Ampere on), via ``torch.cuda.is_bf16_supported`` without its
    default "emulation counts" (a V100 or T4 would run bf16 slower than fp32). x86 CPU: the AVX512-BF16 or AMX instructions, read from
    ``torch.cpu``'s capability checks (not oneDNN's "bf16 supported", which is also true on AVX512 CPUs
    that only emulate bf16, slower than fp32). torch has no public API for this, so a missing function
    counts as "no": float32, never a crash. Other CPUs (e.g. ARM) stay in float32.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


def computes_in_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether a :class:`TileEncoder` on ``device`` with ``precision`` computes in bfloat16.

    Known before the weights are loaded, so a feature-cache key can record the precision up front.
    """
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision '{precision}'", fix="Use auto, fp32 or bf16.")
    if precision == "fp32":
        return False
    native = has_native_bf16(device)
    if precision == "bf16" and not native:
        raise OptionError(
            f"bf16 was requested but this {device.type.upper()} has no native bfloat16 arithmetic",
            fix="Use --precision auto or fp32.",
        )
    return native


def fold_normalisation(
    network: torch.nn.Module, conv_name: str, scale: torch.Tensor, shift: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Weight and bias of the convolution ``conv_name`` such that, on raw pixels ``x``,
    ``conv'(x - 128) == conv(x * scale - shift)`` (``scale`` and ``shift`` per input channel).

    Exact in real arithmetic because the convolution is linear and has no padding (every output sees only
    pixels, never padded zeros): ``W' = W * scale_c`` and ``b' = b + sum W * (128 * scale_c - shift_c)``,
    computed in float64. Centring on 128 keeps ``W'(x - 128)`` as small as ``W x_norm``: folding without it
    made the bf16 features' error 1.6x larger in our measurement, from the cancellation with the bias.
    """
    conv = network.get_submodule(conv_name)
    if not isinstance(conv, torch.nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"'{conv_name}' is not a plain Conv2d: its input normalisation cannot be folded")
    if conv.padding == "same" or any(int(p) != 0 for p in conv.padding):
        raise ValueError(f"'{conv_name}' pads its input: folding the normalisation would change the borders")
    if conv.bias is None:
        raise ValueError(f"'{conv_name}' has no bias to take the normalisation's shift")
    weight = conv.weight.detach().double()
    per_channel = (1, -1, 1, 1)
    folded_weight = weight * scale.double().view(per_channel)
    offset = (PIXEL_OFFSET * scale.double() - shift.double()).view(per_channel)
    folded_bias = conv.bias.detach().double() + (weight * offset).sum(dim=(1, 2, 3))
    return {
        f"{conv_name}.weight": folded_weight.to(conv.weight.dtype).contiguous(
            memory_format=torch.channels_last
        ),
        f"{conv_name}.bias": folded_bias.to(conv.bias.dtype),
    }


@dataclass
class TileEncoder:
    """A network plus what it needs to turn uint8 tiles into features."""

    spec: EncoderSpec
    network: torch.nn.Module
    device: torch.device
    weights_sha256: str | None = None  # None = random weights (tests and benchmarks only)
    precision: str = "auto"  # one of PRECISIONS; see the module docstring

    def __post_init__(self) -> None:
        self._bf16 = computes_in_bf16(self.device, self.precision)  # validates ``precision`` up front
        self.network = self.network.to(self.device).eval()
        self.network = self.network.to(memory_format=torch.channels_last)
        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self.spec.std, dtype=torch.float32, device=self.device)
        self._scale = 1.0 / (255.0 * std)  # (x/255 - mean)/std == x * scale - mean/std
        self._shift = mean / std
        self._folded: dict[str, torch.Tensor] | None = None  # see the module docstring
        if self.spec.input_conv is not None:
            self._folded = fold_normalisation(self.network, self.spec.input_conv, self._scale, self._shift)

    @property
    def out_dim(self) -> int:
        return self.spec.out_dim

    @property
    def uses_bf16(self) -> bool:
        return self._bf16

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, H, W, 3) → uint8 (n, 3, S, S), channels-last: the reference's ``Resize(S)``."""
        x = pixels.permute(0, 3, 1, 2)
        size = self.spec.input_px
        if x.shape[-2:] != (size, size):
            from torchvision.transforms import InterpolationMode  # loaded with timm by create_network
            from torchvision.transforms.v2 import functional as tvf

            x = tvf.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, S, S) → float32 ``(x / 255 - mean) / std``, channels-last: ``ToTensor → Normalize``."""
        # Normalise in (n, S, S, 3) layout: broadcasting over the last, contiguous axis is ~2x faster than
        # over dim 1 of a channels-last NCHW tensor; permuting back gives a channels-last NCHW view.
        x = x.permute(0, 2, 3, 1).to(torch.float32)
        x = x.mul_(self._scale).sub_(self._shift).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=torch.channels_last)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, H, W, 3) on the device → the network input (n, 3, S, S), channels-last.

        With the normalisation folded into the first convolution: the resized pixels minus 128 in the
        compute dtype (bfloat16 or float32); otherwise the normalised float32 pixels.
        """
        x = self.resize(pixels)
        if self._folded is None:
            return self.normalise(x)
        dtype = torch.bfloat16 if self._bf16 else torch.float32
        return x.to(dtype).sub_(PIXEL_OFFSET).contiguous(memory_format=torch.channels_last)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self._folded is None:
            return self.network(x)
        return torch.func.functional_call(self.network, self._folded, (x,))

    def prepare(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The host-side half of :meth:`embed`, run by the loader thread: checks, and pins for CUDA.

        Resizing and normalising run in :meth:`forward`, on the compute thread and device: on the CPU that
        keeps all torch work in one OpenMP thread team (a second team in the loader thread competed with
        the network for the cores: 8-15 % slower end to end on 2 cores), and on CUDA it copies uint8
        (4x less than floats) and resizes on the GPU. Decoding still overlaps with compute.
        """
        batch = torch.as_tensor(pixels)
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 tiles (n, H, W, 3), got {batch.dtype} {tuple(batch.shape)}")
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def forward(self, prepared: torch.Tensor) -> torch.Tensor:
        """Features (n, D) float32 on the CPU from the output of :meth:`prepare`."""
        with torch.inference_mode():
            x = self.preprocess(prepared.to(self.device, non_blocking=True))
            if self._bf16:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    out = self._network(x)
            else:
                out = self._network(x)
            return out.float().cpu()

    def embed(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Features (n, D) float32 on the CPU for a batch of uint8 RGB tiles (n, H, W, 3)."""
        return self.forward(self.prepare(pixels))


def load_encoder(
    spec: EncoderSpec,
    weights: Path,
    sha256: str | None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> TileEncoder:
    """Build ``spec`` and load ``weights`` strictly, after checking the file's sha256 (when given)."""
    weights = Path(weights)
    if sha256 is not None:
        verify_sha256(weights, sha256, what=f"{spec.name} encoder weights")
    state = drop_prefixes(read_state_dict(weights), spec.drop_key_prefixes)
    network = create_network(spec, meta=True)
    load_strict(network, state, weights, what=f"'{spec.name}' encoder ({spec.timm_name})")
    network = network.float()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return TileEncoder(spec=spec, network=network, device=dev, weights_sha256=sha256, precision=precision)


def random_encoder(
    spec: EncoderSpec, seed: int = 0, device: str | torch.device = "cpu", precision: str = "fp32"
) -> TileEncoder:
    """``spec`` with timm's random initialisation (seeded): for tests and benchmarks only.

    LayerScale factors are set to 1 (timm starts them at ``init_values`` = 1e-5, which would make every
    tile's features almost identical), so that features depend on the tile as a trained network's do.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        network = create_network(spec)
    finally:
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith(".gamma"):
                parameter.fill_(1.0)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return TileEncoder(spec=spec, network=network, device=dev, weights_sha256=None, precision=precision)
