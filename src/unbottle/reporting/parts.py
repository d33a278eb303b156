"""What a report is made of, whatever renders it: headline ``Stat``s, ``TableData`` of display strings,
and the ``Report`` that ``summary.build_report`` fills (the per-kind wording: ``kinds``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from unbottle.core.measurement import Measurement
from unbottle.reporting.reproduce import Reproduction

Tone = Literal["good", "bad", "neutral", ""]


@dataclasses.dataclass(frozen=True)
class Stat:
    """One headline number: ``value`` carries its unit, ``ci`` is the 95% interval or empty."""

    label: str
    value: str
    ci: str = ""
    tone: Tone = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class TableData:
    """A table of display strings; the first column names the row."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclasses.dataclass
class Report:
    """Everything a rendered report shows about one run.

    Attributes:
        run: the stored run (a ``RunRecord``).
        status: its effective status (a dead ``running`` run reads ``interrupted``).
        document: the run's JSON document (``unbottle.reporting.documents.run_document``).
        measurements: its raw measurements.
        trials: an optimisation's recorded trials by key (empty for other kinds).
        related: for a ``compare`` run, the measurements of the two runs it compared, by run id.
        verdict: one plain sentence: what the run found.
        status_note: why the report may be incomplete, or empty for a complete run.
        headline: the numbers a reader looks at first.
        tables: the details, in reading order.
        notes: remarks the run recorded or the report adds.
        reproduce: the command lines that make the run again.
        machine: the host the numbers belong to: CPU model, cores, last-level cache and, when this
            store measured it there, the one-thread read bandwidth.
    """

    run: Any
    status: str
    document: dict[str, Any]
    measurements: list[Measurement]
    trials: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    related: dict[int, list[Measurement]] = dataclasses.field(default_factory=dict)
    verdict: str = ""
    status_note: str = ""
    headline: list[Stat] = dataclasses.field(default_factory=list)
    tables: list[TableData] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    reproduce: Reproduction | None = None
    machine: str = ""

    @property
    def result(self) -> dict[str, Any]:
        """The run's stored result, ``{}`` when it has none (a failed or interrupted run)."""
        return self.run.result or {}

    @property
    def title(self) -> str:
        return f"unbottle {self.run.kind} report — run {self.run.id}: {self.run.model}"
