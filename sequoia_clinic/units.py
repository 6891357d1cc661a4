"""Units of follow-up time in cohort tables: the ``--time-unit`` choices and their length in years.

All survival models keep time in years; a table's times are divided by :attr:`TimeUnit.per_year`.
"""

from __future__ import annotations

from enum import StrEnum


class TimeUnit(StrEnum):
    """The unit a cohort table records follow-up time in; the value is the ``--time-unit`` choice."""

    DAYS = "days"
    MONTHS = "months"
    YEARS = "years"

    @property
    def per_year(self) -> float:
        """How many of this unit make one year (days: 365.25, months: 12, years: 1)."""
        return {"days": 365.25, "months": 12.0, "years": 1.0}[self.value]
