"""Pixel-size (mpp, micrometres per pixel) resolution in the documented order.

1. an explicit user value; 2. vendor metadata (Aperio MPP, DICOM PixelSpacing); 3. TIFF resolution tags;
4. objective power (mpp = 10 / power, an estimate). If none is known the slide is refused: we never assume
20x silently (the SEQUOIA scripts do, and get the tile scale wrong on 40x scans without AppMag).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sequoia_clinic.errors import MissingMetadataError, OptionError

PLAUSIBLE_MPP = (0.05, 20.0)  # um/px; anything outside is a default such as 72 dpi, not a microscope scan
_UM_PER_UNIT = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}  # TIFF ResolutionUnit: inch, cm, mm, um


@dataclass(frozen=True)
class MppCandidates:
    """What a backend found in the file; each entry is (x, y) um/px or None."""

    vendor: tuple[float, float] | None = None
    tiff_resolution: tuple[float, float] | None = None
    objective_power: float | None = None


def plausible(mpp: tuple[float, float] | None) -> bool:
    return mpp is not None and all(PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1] for value in mpp)


def validate_user_mpp(mpp: float | None) -> float | None:
    """Check a user-supplied --mpp value (None passes through)."""
    if mpp is None:
        return None
    if not PLAUSIBLE_MPP[0] <= float(mpp) <= PLAUSIBLE_MPP[1]:
        raise OptionError(
            f"--mpp {mpp} is not a plausible pixel size",
            fix=f"Give micrometres per pixel at full resolution, between {PLAUSIBLE_MPP[0]} and "
            f"{PLAUSIBLE_MPP[1]} (0.25 for a 40x scan, 0.5 for 20x).",
        )
    return float(mpp)


def mpp_from_tiff_resolution(
    x_resolution: tuple[int, int] | float | None,
    y_resolution: tuple[int, int] | float | None,
    unit: int | None,
) -> tuple[float, float] | None:
    """um/px from TIFF XResolution/YResolution (pixels per unit) and ResolutionUnit.

    Hand-written because tiffslide folds this into ``tiffslide.mpp-x`` without saying where the value came
    from and without rejecting defaults such as 72 dpi; we need both the source and the sanity check.
    """
    if unit not in _UM_PER_UNIT or x_resolution is None or y_resolution is None:
        return None
    values = []
    for resolution in (x_resolution, y_resolution):
        if isinstance(resolution, tuple):
            if not resolution[1]:  # a 0 denominator: the tag is broken, not a pixel size
                return None
            pixels_per_unit = resolution[0] / resolution[1]
        else:
            pixels_per_unit = float(resolution)
        if not pixels_per_unit > 0:  # also rejects NaN
            return None
        values.append(_UM_PER_UNIT[unit] / pixels_per_unit)
    mpp = (values[0], values[1])
    return mpp if plausible(mpp) else None


def resolve_mpp(path: Path, user_mpp: float | None, found: MppCandidates) -> tuple[tuple[float, float], str]:
    """Pick the pixel size and name its source, or refuse with a message that names ``--mpp``."""
    if user_mpp is not None:
        return (user_mpp, user_mpp), "user"
    if plausible(found.vendor):
        assert found.vendor is not None
        return found.vendor, "vendor"
    if plausible(found.tiff_resolution):
        assert found.tiff_resolution is not None
        return found.tiff_resolution, "tiff-resolution"
    if found.objective_power and found.objective_power > 0:
        estimate = 10.0 / found.objective_power
        if plausible((estimate, estimate)):
            return (estimate, estimate), "objective-power"
    raise MissingMetadataError(
        "the pixel size (mpp) is not recorded in the slide (no vendor MPP, pixel spacing, resolution tags "
        "or objective power)",
        path,
        "Pass --mpp with the micrometres per pixel of the full-resolution scan (0.25 for 40x, 0.5 for 20x).",
    )
