"""HDF5 reports: many runs per file, crash-safe writing, resumable runs, plain-h5py-readable layout.

See ``docs/report-format.md`` for the schema and guarantees; :mod:`advkit.report.store` has a full
write-and-read example.

    >>> from advkit.report import Report
    >>> Report("no-such-dir/report.h5").exists()  # nothing touches the disk until a run starts
    False
"""

from __future__ import annotations

from advkit.report.schema import SCHEMA_VERSION
from advkit.report.store import Report, RunData, RunInfo, RunWriter
from advkit.report.summary import attack_summary

__all__ = ["Report", "RunWriter", "RunInfo", "RunData", "attack_summary", "SCHEMA_VERSION"]
