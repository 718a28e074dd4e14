"""Ingest real logs: map columns, validate rows, filter by consent, scrub PII.

    from synthloop.ingest import ingest, read_sample

    report = ingest("logs.csv", "mapping.yaml", "ingested/")   # writes the directory
    df = read_sample("ingested/")                                # the consented, scrubbed rows

An ingest output directory holds `sample.parquet`, `report.json` (counts, consent basis, PII
counts), `quarantine.jsonl` (invalid rows with line numbers and messages, scrubbed) and
`manifest.json`. See docs/ingest-and-privacy.md.
"""

from __future__ import annotations

from synthloop.ingest._ingest import (
    MANIFEST,
    QUARANTINE,
    REPORT,
    SAMPLE,
    SAMPLE_SCHEMA,
    ConsentSummary,
    IngestCounts,
    IngestManifest,
    IngestReport,
    SourceInfo,
    ingest,
    read_manifest,
    read_report,
    read_sample,
)
from synthloop.ingest._mapping import (
    FIELDS,
    BoolValues,
    ConsentOptions,
    LogMapping,
    PiiOptions,
    ThumbValues,
)

__all__ = [
    "FIELDS",
    "MANIFEST",
    "QUARANTINE",
    "REPORT",
    "SAMPLE",
    "SAMPLE_SCHEMA",
    "BoolValues",
    "ConsentOptions",
    "ConsentSummary",
    "IngestCounts",
    "IngestManifest",
    "IngestReport",
    "LogMapping",
    "PiiOptions",
    "SourceInfo",
    "ThumbValues",
    "ingest",
    "read_manifest",
    "read_report",
    "read_sample",
]
