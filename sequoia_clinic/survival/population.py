"""A risk model's intended population and development data, and checking one patient against it.

:class:`Population` is stored in the risk-model file (``population``): who the model was developed on (ER
and HER2 status, the largest number of positive nodes, the age range, menopausal status, the specimen
types, treatments, eligibility) and the TRIPOD+AI data items the tool cannot measure itself (data source,
accrual dates, end of follow-up). ``calibrate --population FILE.json`` sets it; every key is optional.
:func:`population_flags` compares the patient's given values with it: each value outside is one
:class:`~sequoia_clinic.qc.QCWarning` in plain words (``outside-population``); a specimen type the model
was not developed on is ``specimen-not-developed``. Values not given are not checked (and said so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequoia_clinic.clinical_choices import Menopause, ReceptorStatus, SpecimenType
from sequoia_clinic.errors import InputPathError
from sequoia_clinic.qc import QCCode, QCWarning
from sequoia_clinic.survival.clinical import ClinicalInputs
from sequoia_clinic.survival.records import (
    MalformedRecord,
    read_optional_float,
    read_optional_str,
    read_strs,
    section,
)

TEXT_KEYS = ("description", "treatment", "eligibility", "data_source", "accrual", "follow_up_end")


@dataclass(frozen=True)
class Population:
    """Who a risk model applies to (empty tuple / None: not restricted or not stated)."""

    description: str | None = None  # one line, e.g. "node-negative, untreated, age < 61"
    er: tuple[str, ...] = ()  # allowed ER status values
    her2: tuple[str, ...] = ()
    menopause: tuple[str, ...] = ()
    max_nodes: float | None = None  # 0: node-negative only
    age_min: float | None = None
    age_max: float | None = None
    specimen_types: tuple[str, ...] = (SpecimenType.RESECTION.value,)
    treatment: str | None = None  # e.g. "no adjuvant systemic therapy"
    eligibility: str | None = None
    data_source: str | None = None  # TRIPOD+AI 5a
    accrual: str | None = None  # TRIPOD+AI 5b: dates of accrual
    follow_up_end: str | None = None  # TRIPOD+AI 5b: end of follow-up

    def to_dict(self) -> dict[str, Any]:
        return {
            "er": list(self.er),
            "her2": list(self.her2),
            "menopause": list(self.menopause),
            "max_nodes": self.max_nodes,
            "age_min": self.age_min,
            "age_max": self.age_max,
            "specimen_types": list(self.specimen_types),
            **{key: getattr(self, key) for key in TEXT_KEYS},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "population") -> Population:
        data = section(data, where)
        unknown = set(data) - {
            *TEXT_KEYS,
            "er",
            "her2",
            "menopause",
            "max_nodes",
            "age_min",
            "age_max",
            "specimen_types",
        }
        if unknown:
            raise MalformedRecord(f"{where}.{sorted(unknown)[0]}", "is not a population key")

        def choices(key: str, allowed: type[ReceptorStatus | Menopause | SpecimenType]) -> tuple[str, ...]:
            values = read_strs(data, key, where) if key in data else ()
            names = {v.value for v in allowed}
            bad = [v for v in values if v not in names]
            if bad:
                raise MalformedRecord(f"{where}.{key}", f"must hold only {', '.join(sorted(names))}")
            return values

        def number(key: str) -> float | None:
            return read_optional_float(data, key, where) if key in data else None

        return cls(
            er=choices("er", ReceptorStatus),
            her2=choices("her2", ReceptorStatus),
            menopause=choices("menopause", Menopause),
            max_nodes=number("max_nodes"),
            age_min=number("age_min"),
            age_max=number("age_max"),
            specimen_types=choices("specimen_types", SpecimenType)
            if "specimen_types" in data
            else (SpecimenType.RESECTION.value,),
            **{key: read_optional_str(data, key, where) for key in TEXT_KEYS},
        )

    def eligibility_lines(self) -> tuple[str, ...]:
        """The population in plain words, one criterion a line."""
        lines = []
        if self.er:
            lines.append(f"ER {' or '.join(self.er)}")
        if self.her2:
            lines.append(f"HER2 {' or '.join(self.her2)}")
        if self.max_nodes is not None:
            lines.append(
                "node-negative" if self.max_nodes == 0 else f"at most {self.max_nodes:g} positive nodes"
            )
        if self.age_min is not None or self.age_max is not None:
            lines.append(f"age {_range(self.age_min, self.age_max)} years")
        if self.menopause:
            lines.append(f"{' or '.join(self.menopause)}menopausal")
        lines.append(f"specimens: {', '.join(self.specimen_types)}")
        if self.treatment:
            lines.append(f"treatment: {self.treatment}")
        return tuple(lines)


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return f"up to {high:g}"
    if high is None:
        return f"{low:g} or more"
    return f"{low:g}-{high:g}"


def load_population(path: Path) -> Population:
    """A population JSON file (keys of :class:`Population`), checked."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputPathError("population file not found", path, "Pass a JSON file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputPathError(f"not a JSON file ({type(exc).__name__})", path, "Pass a JSON object.") from None
    try:
        return Population.from_dict(data)
    except MalformedRecord as exc:
        raise InputPathError(f"'{exc.where}' {exc.expected}", path, "Fix the population file.") from None


def population_from_model(data: Mapping[str, Any]) -> Population | None:
    """The ``population`` section of a model file, or None in files written before populations existed."""
    return None if data.get("population") is None else Population.from_dict(data["population"])


def population_flags(
    population: Population | None, inputs: ClinicalInputs, specimen: SpecimenType | None
) -> tuple[QCWarning, ...]:
    """One plain-words warning per given value outside the model's population (nothing when it fits)."""
    if population is None:
        return ()
    outside: list[str] = []
    if population.er and inputs.er is not None and inputs.er not in population.er:
        outside.append(f"ER {inputs.er} (model: ER {' or '.join(population.er)})")
    if population.her2 and inputs.her2 is not None and inputs.her2 not in population.her2:
        outside.append(f"HER2 {inputs.her2} (model: HER2 {' or '.join(population.her2)})")
    if population.max_nodes is not None and inputs.nodes is not None and inputs.nodes > population.max_nodes:
        allowed = "node-negative" if population.max_nodes == 0 else f"at most {population.max_nodes:g}"
        outside.append(f"{inputs.nodes} positive node(s) (model: {allowed})")
    if inputs.age is not None and (
        (population.age_min is not None and inputs.age < population.age_min)
        or (population.age_max is not None and inputs.age > population.age_max)
    ):
        outside.append(f"age {inputs.age:g} (model: {_range(population.age_min, population.age_max)})")
    if population.menopause and inputs.menopause is not None and inputs.menopause not in population.menopause:
        outside.append(f"{inputs.menopause}menopausal (model: {' or '.join(population.menopause)}menopausal)")
    flags = []
    if outside:
        flags.append(
            QCWarning(
                QCCode.OUTSIDE_POPULATION,
                "This patient is outside the population the risk model was developed on: "
                + "; ".join(outside)
                + ". The risk shown may not apply to her.",
            )
        )
    if specimen is not None and specimen.value not in population.specimen_types:
        flags.append(
            QCWarning(
                QCCode.SPECIMEN_NOT_DEVELOPED,
                f"The specimen is a {specimen.value} specimen; the model was developed on "
                f"{', '.join(population.specimen_types)} specimens only, so its result may not apply.",
            )
        )
    return tuple(flags)
