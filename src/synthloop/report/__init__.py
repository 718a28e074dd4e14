"""Reports of a comparison and (optionally) a gate verdict.

* `render_markdown` — a PR comment / `$GITHUB_STEP_SUMMARY`: verdict first, checks table,
  failing segments, power, all metrics.
* `render_junit` — JUnit XML, one test case per check and per failing segment.
* `render_html` — one self-contained HTML file: forest plots, per-segment changes, latency
  distributions and a browser of the worst regressions side by side.
* JSON — `Verdict.model_dump_json()` / `Comparison.model_dump_json()`.

`write_reports(...)` writes whichever are asked for, atomically, and appends the Markdown to
`$GITHUB_STEP_SUMMARY` when that variable is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from synthloop.gate import Verdict
from synthloop.report._html import render_html
from synthloop.report._junit import render_junit
from synthloop.report._markdown import power_lines, render_markdown
from synthloop.runs import write_atomic
from synthloop.stats import Comparison

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def write_reports(
    comparison: Comparison,
    verdict: Verdict | None = None,
    *,
    markdown: str | Path | None = None,
    junit: str | Path | None = None,
    html: str | Path | None = None,
    json: str | Path | None = None,
    step_summary: bool = True,
) -> dict[str, Path]:
    """Write the requested reports; returns {kind: path} of what was written.

    `json` writes the verdict (or, without one, the comparison). With `step_summary` and
    `$GITHUB_STEP_SUMMARY` set, the Markdown report is appended to that file too.
    """
    written: dict[str, Path] = {}
    html_ref = str(html) if html is not None else None
    md_text: str | None = None
    if markdown is not None or (step_summary and os.environ.get(STEP_SUMMARY_ENV)):
        md_text = render_markdown(comparison, verdict, html_path=html_ref)
    if html is not None:
        written["html"] = _write(Path(html), render_html(comparison, verdict))
    if markdown is not None and md_text is not None:
        written["markdown"] = _write(Path(markdown), md_text)
    if junit is not None:
        if verdict is None:
            raise ValueError("a JUnit report needs a verdict (run the gate)")
        written["junit"] = _write(Path(junit), render_junit(verdict, comparison))
    if json is not None:
        doc = verdict if verdict is not None else comparison
        written["json"] = _write(Path(json), doc.model_dump_json(indent=1) + "\n")
    summary = os.environ.get(STEP_SUMMARY_ENV)
    if step_summary and summary and md_text is not None:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(md_text + "\n")
        written["step_summary"] = Path(summary)
    return written


__all__ = [
    "STEP_SUMMARY_ENV",
    "power_lines",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_reports",
]
