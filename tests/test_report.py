"""synthloop.report: Markdown, JUnit XML, JSON and the self-contained HTML report (loaded in
headless Chromium where it is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from synthloop.gate import Policy, Rule, Verdict, evaluate, read_verdict
from synthloop.report import render_html, render_junit, render_markdown, write_reports
from synthloop.stats import Comparison, compare_runs
from synthloop.stats.fixtures import write_run_pair

EVIL = '</script><script>window.__pwned = 1</script><img src="https://example.com/x.png">|pipe'


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[Comparison, Verdict]:
    """A comparison where cluster `billing` regresses badly and outputs hold hostile text."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    n = 1200
    cell = rng.choice(4, size=n, p=[0.6, 0.1, 0.1, 0.2])
    b = np.isin(cell, (0, 1)).astype(float)
    c = np.isin(cell, (0, 2)).astype(float)
    clusters = np.array(["billing", "login", "refunds", "shipping"])[np.arange(n) % 4]
    c[(clusters == "billing") & (b == 1) & (rng.random(n) < 0.5)] = 0.0
    sim_b = rng.random(n)
    outputs_cand = [EVIL + f" {i}" if i % 4 == 0 else f"cand {i}" for i in range(n)]
    es, base, cand = write_run_pair(
        root, base={"correct": b, "similarity": sim_b},
        cand={"correct": c, "similarity": np.clip(sim_b + rng.normal(0, 0.05, n), 0, 1)},
        kinds={"correct": "binary"}, tags={"cluster": clusters},
        latency_base=rng.lognormal(5, 0.4, n), latency_cand=rng.lognormal(5.1, 0.4, n),
        outputs_base=[f"base {i}" for i in range(n)], outputs_cand=outputs_cand,
        inputs=[f"question {i} \x01 <b>bold?</b>" for i in range(n)])
    cmp = compare_runs(base, cand, seed=0)
    policy = Policy(rules=[
        Rule(metric="correct", max_drop=0.1, segments=["cluster"]),
        Rule.model_validate("similarity >= 0.3"),
        Rule(latency="p95", max_ratio=1.5),
        Rule(metric="similarity", max_drop=0.0001, min_cases=5000),
    ])
    return cmp, evaluate(cmp, policy)


def test_markdown_verdict_first_and_failing_segment_named(regression: tuple[Comparison, Verdict]) -> None:
    cmp, verdict = regression
    assert verdict.status == "fail"
    md = render_markdown(cmp, verdict, html_path="out/report.html")
    lines = md.splitlines()
    assert lines[0] == "## ❌ synthloop gate: regression found"
    assert "**Failing segments:** `cluster=billing`" in md
    # one table row per check, then the reasons for the ones that did not pass
    rows = [ln for ln in lines if ln.startswith("| ❌") or ln.startswith("| ✅") or ln.startswith("| ⚠️")]
    assert len(rows) == len(verdict.results)
    assert any("correct drop <= 0.1 [cluster=billing]" in ln for ln in rows)
    assert "**Why:**" in md and "fewer than 5000" in md
    assert "**Power:**" in md and "smallest detectable worsening" in md
    assert "`out/report.html`" in md
    assert "**Latency:**" in md


def test_markdown_shows_a_lower_is_better_rise_as_a_rise() -> None:
    # latency per case rises by about 0.05 s: the checks table must show +0.05 and the upper
    # bound, like the metrics table below it, not the improvement (-0.05) the verdict stores
    from synthloop.stats import compare_arrays

    rng = np.random.default_rng(3)
    b = rng.normal(1.0, 0.2, 400)
    c = b + rng.normal(0.05, 0.05, 400)
    seg = np.array(["a", "b"])[np.arange(400) % 2]
    cmp = compare_arrays({"latency_s": b}, {"latency_s": c}, higher_is_better={"latency_s": False},
                         segments={"k": seg}, seed=0)
    verdict = evaluate(cmp, Policy(rules=[Rule(metric="latency_s", max_drop=0.01, segments=["k"])]))
    assert verdict.status == "fail"
    md = render_markdown(cmp, verdict)
    overall = cmp.metrics["latency_s"].overall
    row = next(ln for ln in md.splitlines() if ln.startswith("| ❌ | latency_s drop <= 0.01 |"))
    assert f"| +{overall.delta:.3g} | ≤ +{overall.bounds['0.95'][1]:.3g} |" in row
    assert re.search(r"\*\*Failing segments:\*\* `k=a` \(latency_s \+0\.0", md)
    assert "change -0.0" not in md
    # JUnit carries the verdict's raw fields (improvement units) and says so
    failure = ET.fromstring(render_junit(verdict, cmp)).find(".//testcase/failure")
    assert failure is not None and failure.text is not None
    assert "minus the change" in failure.text
    assert f"estimate: {-overall.delta}" in failure.text


def test_markdown_escapes_table_cells() -> None:
    from synthloop.report._markdown import _cell

    assert _cell("a|b\nc") == "a\\|b c"


def test_markdown_shows_html_in_user_text_as_text() -> None:
    # GitHub renders raw HTML in PR comments: a tag value holding `<img ...>` or `</details>`
    # must not become an image or close the report's collapsed sections
    from synthloop.stats import compare_arrays

    rng = np.random.default_rng(1)
    n = 300
    b = (rng.random(n) < 0.7).astype(float)
    evil = '<img src="https://example.com/t.png"></details> &amp; co'
    seg = np.array([evil, "plain"])[np.arange(n) % 2]
    c = np.where((seg == evil) & (rng.random(n) < 0.5), 0.0, b)
    cmp = compare_arrays({"correct": b}, {"correct": c}, kinds={"correct": "binary"},
                         segments={"k": seg}, seed=0)
    cmp.notes.append(f"note about {evil}")
    policy = Policy(rules=[Rule(metric="correct", max_drop=0.02, segments=["k"], name=f"r {evil}")])
    md = render_markdown(cmp, evaluate(cmp, policy))
    prose = re.sub(r"`[^`]*`", "", md)  # code spans show their content literally
    assert "<img" not in prose and "</details> &" not in prose
    assert prose.count("</details>") == prose.count("<details>")
    assert '&lt;img src="https://example.com/t.png">&lt;/details> &amp;amp; co' in prose
    assert "| r &lt;img" in prose  # the rule's name in the checks table
    from synthloop.report._markdown import _cell

    assert _cell("drop <= 0.02 (p=<1e-6 < 0.05) & more") == "drop <= 0.02 (p=<1e-6 < 0.05) & more"
    assert f"`k={evil}`" in md  # inside a code span: verbatim


def test_markdown_without_verdict_is_a_comparison_summary(regression: tuple[Comparison, Verdict]) -> None:
    cmp, _ = regression
    md = render_markdown(cmp)
    assert md.startswith("## synthloop comparison")
    assert "| `correct` ↑ |" in md and "| `similarity` ↑ |" in md


def test_junit_one_case_per_check_and_failing_segment(regression: tuple[Comparison, Verdict]) -> None:
    cmp, verdict = regression
    root = ET.fromstring(render_junit(verdict, cmp))
    cases = root.findall(".//testcase")
    assert len(cases) == len(verdict.results)
    names = [c.get("name") for c in cases]
    assert "correct drop <= 0.1 [cluster=billing]" in names
    seg = cases[names.index("correct drop <= 0.1 [cluster=billing]")]
    failure = seg.find("failure")
    assert failure is not None and "cluster=billing" in (failure.get("message") or "")
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("failures") or 0) == sum(r.counts_as == "fail" for r in verdict.results)
    errors = [c for c in cases if c.find("error") is not None]
    assert len(errors) == sum(r.counts_as == "inconclusive" for r in verdict.results) == 1
    passed = [c for c in cases if c.find("system-out") is not None]
    assert passed and all(c.find("failure") is None for c in passed)
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["status"] == "fail" and props["exit_code"] == "1"


def test_junit_is_valid_xml_with_control_characters(regression: tuple[Comparison, Verdict]) -> None:
    cmp, verdict = regression
    failing = verdict.failing[0]
    bad = verdict.model_copy(update={"results": [
        failing.model_copy(update={"reason": "bad \x00\x07 chars <&> here"})]})
    text = render_junit(bad, cmp)
    root = ET.fromstring(text)
    assert root.find(".//failure") is not None
    assert "\x00" not in text and "&lt;&amp;&gt;" in text


class _Resources(HTMLParser):
    """Collects every attribute that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[str] = []
        self.tags: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        for k, v in attrs:
            fetching = k in ("src", "href", "srcset", "action", "poster", "data", "xlink:href")
            if fetching and v and not v.startswith("#"):
                self.fetches.append(f"{tag}.{k}={v}")


def test_html_is_self_contained_and_escapes_everything(regression: tuple[Comparison, Verdict]) -> None:
    cmp, verdict = regression
    html = render_html(cmp, verdict)
    parser = _Resources()
    parser.feed(html)
    assert parser.fetches == []  # nothing loaded from anywhere (the hostile <img> is text)
    assert parser.scripts == 1  # only the report's own script
    assert "link" not in parser.tags and "iframe" not in parser.tags
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned" in html
    assert "window.__pwned = 1</script>" not in html
    # plots: a forest plot per metric, a segment heat map, the latency histogram
    assert html.count("<svg") >= 4
    assert "correct: candidate − baseline" in html and "change by cluster" in html
    assert "latency per case" in html
    # the regression browser: a tab per metric with worst cases, cards with both outputs
    assert 'data-tab="correct"' in html
    cards = re.findall(r'<article class="case" data-metric="correct"', html)
    assert len(cards) == len(cmp.metrics["correct"].worst) > 0
    assert "cluster=billing" in html and "Failing segments" in html


def test_write_reports_and_step_summary(regression: tuple[Comparison, Verdict], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cmp, verdict = regression
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = write_reports(cmp, verdict, markdown=tmp_path / "r" / "report.md",
                        junit=tmp_path / "r" / "junit.xml", html=tmp_path / "r" / "report.html",
                        json=tmp_path / "r" / "verdict.json")
    assert set(out) == {"markdown", "junit", "html", "json", "step_summary"}
    text = summary.read_text()
    assert text.startswith("earlier step\n## ❌ synthloop gate")
    assert read_verdict(tmp_path / "r" / "verdict.json") == verdict
    assert not list((tmp_path / "r").glob(".*tmp*"))  # atomic writes leave no temporaries
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert "step_summary" not in write_reports(cmp, verdict, markdown=tmp_path / "x.md")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _load_in_chromium(browser: str, html_file: Path, profile: Path) -> tuple[str, list[str]]:
    """Load a file headless; return (DOM after scripts ran, console lines)."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
         html_file.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    console = [ln for ln in proc.stderr.splitlines()
               if ":CONSOLE" in ln or "Uncaught" in ln or "Refused to" in ln]
    return proc.stdout, console


@pytest.mark.slow
def test_html_report_loads_in_headless_chromium(regression: tuple[Comparison, Verdict],
                                                tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    cmp, verdict = regression
    report = tmp_path / "report.html"
    write_reports(cmp, verdict, html=report, step_summary=False)
    dom, console = _load_in_chromium(browser, report, tmp_path / "profile")
    assert console == [], console
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None and 'data-ready="1"' in body.group(0)  # the script ran to the end
    # the first tab is selected and only its cases are shown
    assert 'data-tab="correct" aria-selected="true"' in dom
    assert re.search(r'<article class="case" data-metric="similarity"[^>]* hidden', dom) or \
        "similarity" not in [m.name for m in cmp.metrics.values() if m.worst]
    assert "__pwned" not in dom.split("</main>")[-1]  # no injected script executed or added
    # the harness does catch errors: a report with a throwing script is reported
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("</body>", "<script>throw new Error('boom')</script></body>"))
    _, errors = _load_in_chromium(browser, broken, tmp_path / "profile2")
    assert any("boom" in ln for ln in errors)


def test_power_line_does_not_call_identical_runs_too_few() -> None:
    # baseline == candidate (e.g. `synthloop demo --candidate v1`): no case differs, so no
    # n needed can be computed; the power line must not claim there are "too few" cases
    from synthloop.stats import compare_arrays

    vals = np.arange(300) % 2 == 0
    cmp = compare_arrays({"correct": vals.astype(float)}, {"correct": vals.astype(float)},
                         kinds={"correct": "binary"})
    verdict = evaluate(cmp, Policy(rules=[Rule(metric="correct", max_drop=0.02)]))
    md = render_markdown(cmp, verdict)
    line = next(ln for ln in md.splitlines() if ln.startswith("- correct: at n=300"))
    assert "n/a (no case differed) paired cases" in line
    assert "too few" not in line


@pytest.mark.slow
def test_html_report_long_unbroken_strings_do_not_widen_the_page(tmp_path: Path) -> None:
    """A target name, metric, tag, note or gate reason without spaces wraps inside the page
    instead of pushing it thousands of pixels wide."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    rng = np.random.default_rng(1)
    n = 200
    metric = "metric_" + "m" * 400
    b = rng.random(n)
    _, base, cand = write_run_pair(
        tmp_path / "runs", base={metric: b}, cand={metric: np.clip(b - 0.2 * rng.random(n), 0, 1)},
        tags={"k" * 300: np.array([f"{'v' * 1500}{i % 3}" for i in range(n)])},
        outputs_base=["W" * 3000] * n, outputs_cand=["W" * 3000] * n, inputs=["Q" * 3000] * n)
    cmp = compare_runs(base, cand, seed=0, n_boot=200)
    cmp.candidate.target_name = "T" * 2000
    cmp.notes.append("N" * 3000)
    verdict = evaluate(cmp, Policy(rules=[Rule(metric=metric, max_drop=0.01, segments=["k" * 300])]))
    assert verdict.failing_segments
    probe = ("<script>document.body.setAttribute('data-width', document.documentElement.scrollWidth"
             " + '/' + document.documentElement.clientWidth);</script></body>")
    report = tmp_path / "report.html"
    report.write_text(render_html(cmp, verdict).replace("</body>", probe))
    dom, console = _load_in_chromium(browser, report, tmp_path / "profile")
    assert console == [], console
    width = re.search(r'data-width="(\d+)/(\d+)"', dom)
    assert width is not None
    assert int(width.group(1)) <= int(width.group(2)), width.group(0)


def test_html_bidi_controls_in_user_text_cannot_reverse_the_report(
        regression: tuple[Comparison, Verdict]) -> None:
    cmp, verdict = regression
    cmp = cmp.model_copy(deep=True)
    cmp.notes.append("segment \u202egnp.exe\u2067 and \u202aend")
    html = render_html(cmp, verdict)
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", html)
    assert "segment &lt;U+202E&gt;gnp.exe&lt;U+2067&gt; and &lt;U+202A&gt;end" in html
    assert "\u200f" in render_html(cmp.model_copy(update={"notes": ["rtl mark \u200f stays"]}))
    # the same in the Markdown (a PR comment)
    md = render_markdown(cmp, verdict)
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", md)
    assert "segment &lt;U+202E>gnp.exe&lt;U+2067> and &lt;U+202A>end" in md
    bad = verdict.model_copy(deep=True)
    bad.results[0].reason = "reason \u202eesrever"
    junit = render_junit(bad, cmp)
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", junit)
    assert "reason &lt;U+202E&gt;esrever" in junit
