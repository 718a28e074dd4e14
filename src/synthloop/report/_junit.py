"""JUnit XML: one test case per check (each rule, each rule's segment family) and one per
failing segment. A failed check is a `<failure>`, an inconclusive one an `<error>` (it could
not be decided), a passing one carries its reason in `<system-out>`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from synthloop.gate import Verdict
from synthloop.report._text import show_bidi_controls
from synthloop.stats import Comparison

_BAD_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: object) -> str:
    """Text that is valid in XML 1.0 (control characters dropped), bidi controls written out
    as `<U+202E>` (a CI page showing the reason would otherwise reverse it)."""
    return _BAD_XML.sub("", show_bidi_controls(str(text)))


def render_junit(verdict: Verdict, cmp: Comparison | None = None) -> str:
    results = verdict.results
    failures = sum(1 for r in results if r.counts_as == "fail")
    errors = sum(1 for r in results if r.counts_as == "inconclusive")
    suite_name = f"synthloop gate: {verdict.candidate} vs {verdict.baseline}"
    root = ET.Element("testsuites", name="synthloop gate", tests=str(len(results)),
                      failures=str(failures), errors=str(errors), time="0")
    suite = ET.SubElement(root, "testsuite", name=_x(suite_name), tests=str(len(results)),
                          failures=str(failures), errors=str(errors), skipped="0", time="0",
                          timestamp=verdict.created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    meta = {"status": verdict.status, "exit_code": str(verdict.exit_code),
            "baseline": verdict.baseline, "candidate": verdict.candidate,
            "evalset": verdict.evalset}
    if cmp is not None:
        meta["evalset_hash"] = cmp.evalset.content_hash
        meta["seed"] = str(cmp.seed)
    for k, v in meta.items():
        ET.SubElement(props, "property", name=k, value=_x(v))
    for r in results:
        classname = f"synthloop.gate.{r.metric}"
        case = ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(r.name), time="0")
        details = [r.reason]
        if r.kind in ("non_inferiority", "segment") and r.higher_is_better is False:
            # the fields below are the verdict's: the improvement, + = better
            details.append("(lower is better: estimate, lower, upper and threshold are the "
                           "improvement, i.e. minus the change)")
        for label, value in (("estimate", r.estimate), ("lower", r.lower), ("upper", r.upper),
                             ("threshold", r.threshold), ("p", r.p_value),
                             ("p_adjusted", r.p_adjusted), ("n", r.n), ("mde", r.mde),
                             ("n_needed", r.n_needed)):
            if value is not None:
                details.append(f"{label}: {value}")
        body = _x("\n".join(details))
        if r.counts_as == "fail":
            el = ET.SubElement(case, "failure", message=_x(r.reason),
                               type="regression" if r.status == "fail" else "inconclusive")
            el.text = body
        elif r.counts_as == "inconclusive":
            el = ET.SubElement(case, "error", message=_x(f"inconclusive: {r.reason}"),
                               type="inconclusive")
            el.text = body
        else:
            out = ET.SubElement(case, "system-out")
            out.text = body
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
