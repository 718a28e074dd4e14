"""Consent filtering: only rows consented for the use, not revoked at their time, reach outputs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthloop.cli import main
from synthloop.errors import ConfigError, ConsentError
from synthloop.ingest import ingest, read_manifest, read_sample
from synthloop.privacy import decide_consent, uses_contain
from tests.test_ingest import (
    FIELDS,
    MAPPING_YAML,
    T0,
    assert_absent,
    make_rows,
    nothing_written,
    write_csv,
    write_jsonl,
    write_mapping,
)


def utc(values: list[str | None]) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype("datetime64[us, UTC]")


# --------------------------------------------------------------------------- the decision
def test_decide_consent_flags_uses_and_reasons() -> None:
    granted = np.array([True, False, True, False])
    unknown = np.array([False, False, False, True])
    d = decide_consent(4, granted=granted, granted_unrecognised=unknown)
    assert d.allowed.tolist() == [True, False, True, False]
    assert d.reasons == {"not_granted": 1, "unrecognised": 1} and d.excluded == 2

    uses = uses_contain(["analytics,synthetic_fit", "analytics", None, ["synthetic_fit"],
                         " Synthetic_Fit ; training", "synthetic_fitness"], "synthetic_fit")
    assert uses.tolist() == [True, False, False, True, True, False]
    both = decide_consent(2, granted=np.array([True, True]), uses_granted=np.array([True, False]))
    assert both.allowed.tolist() == [True, False]  # both sources must grant it
    with pytest.raises(ValueError):
        decide_consent(1)


def test_revocation_applies_at_the_rows_time_and_per_user() -> None:
    times = utc(["2024-01-01T00:00Z", "2024-01-05T00:00Z", "2024-01-10T00:00Z",
                 "2024-01-02T00:00Z", None, "2024-01-03T00:00Z"])
    revoked = utc([None, None, "2024-01-05T00:00Z", None, None, None])
    users = pd.Series(["a", "a", "a", "b", "b", "c"])
    d = decide_consent(6, granted=np.ones(6, dtype=bool), row_time=times, revoked_at=revoked,
                       revoked_at_bad=np.array([False] * 5 + [True]), user_ids=users)
    # a: revoked on Jan 5 (said on a later row only): Jan 1 kept; Jan 5 (at revocation) and
    # Jan 10 dropped. b: never revoked, kept even without a time. c: unparseable -> dropped.
    assert d.allowed.tolist() == [True, False, False, True, True, False]
    assert d.reasons == {"revoked": 2, "undetermined": 1}
    assert d.users_excluded == 2


def test_granted_at_and_missing_times() -> None:
    times = utc(["2024-01-01T00:00Z", "2024-01-09T00:00Z", None])
    granted_at = utc(["2024-01-05T00:00Z", "2024-01-05T00:00Z", "2024-01-05T00:00Z"])
    d = decide_consent(3, granted=np.ones(3, dtype=bool), row_time=times, granted_at=granted_at)
    assert d.allowed.tolist() == [False, True, False]
    assert d.reasons == {"before_granted": 1, "undetermined": 1}


# --------------------------------------------------------------------------- canaries
CANARY_TOPIC = "zz-canary-topic-7f3a"
CANARY_PROMPT = "canary prompt qv93 never to be copied"
CANARY_READ = "987654.25"


def _log_with_canaries(tmp: Path, fmt: str) -> tuple[Path, Path]:
    rows = make_rows(users=40, sessions=2, turns=3, seed=5)  # 240 rows
    refusing = {"user3", "user17", "user29"}
    for r in rows:
        if r["uid"] in refusing:
            r.update(topic=CANARY_TOPIC, prompt=f"{CANARY_PROMPT} {r['sid']}", read_s=CANARY_READ,
                     consent_synth="false")
    # a refusing row that is also invalid: excluded for consent, never quarantined
    bad = next(r for r in rows if r["uid"] == "user17")
    bad.update(ts="not a time", thumb="meh")
    mapping = MAPPING_YAML.replace("format: csv", f"format: {fmt}")
    if fmt == "csv":
        logs = write_csv(tmp / "logs.csv", rows)
    elif fmt == "jsonl":
        logs = write_jsonl(tmp / "logs.jsonl", rows)
    else:
        table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        logs = tmp / "logs.parquet"
        pq.write_table(table, logs)
    return logs, write_mapping(tmp, mapping)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_non_consenting_users_canaries_reach_no_output(tmp_path: Path, fmt: str) -> None:
    logs, mapping = _log_with_canaries(tmp_path, fmt)
    report = ingest(logs, mapping, tmp_path / "out")
    out = tmp_path / "out"
    assert_absent(out, [CANARY_TOPIC, CANARY_PROMPT, "987654", "user17-s0", "not a time", "meh"])
    df = read_sample(out)
    assert df["feedback.read_time_s"].max() < 100
    assert not df["user_id"].isin(["user3", "user17", "user29"]).any()
    c = report.counts
    assert (c.read, c.excluded_consent, c.invalid, c.used) == (240, 18, 0, 222)
    assert c.users_excluded_consent == 3 and c.users_used == 37
    assert report.consent.excluded_reasons == {"not_granted": 18}
    assert (out / "quarantine.jsonl").read_text() == ""


def test_revoked_at_semantics_end_to_end(tmp_path: Path) -> None:
    rows = make_rows(users=4, sessions=1, turns=6)
    fields = [*FIELDS, "revoked"]
    cut = T0 + timedelta(days=1, minutes=3)  # user1's turns 0-2 before, 3-5 at/after
    for r in rows:
        r["revoked"] = ""
    rows[11]["revoked"] = cut.isoformat()  # said on user1's last row only
    rows[11]["prompt"] = "revoked canary zq1"
    logs = write_csv(tmp_path / "logs.csv", rows, fields)
    mapping = MAPPING_YAML + "  consent.revoked_at: revoked\n"
    report = ingest(logs, write_mapping(tmp_path, mapping), tmp_path / "out")
    df = read_sample(tmp_path / "out")
    kept = df[df["user_id"] == "user1"]
    assert list(kept["turn"]) == [0, 1, 2]
    assert (kept["timestamp"] < pd.Timestamp(cut)).all()
    assert report.counts.excluded_consent == 3 and report.consent.excluded_reasons == {"revoked": 3}
    assert report.counts.users_excluded_consent == 1 and report.counts.users_used == 4
    assert_absent(tmp_path / "out", ["revoked canary zq1"])


def test_unrecognised_consent_values_are_no_consent(tmp_path: Path) -> None:
    rows = make_rows(users=5)
    for r in rows[:6]:
        r["consent_synth"] = "maybe"
    for r in rows[6:12]:
        r["consent_synth"] = ""
    for r in rows[12:18]:
        r["consent_synth"] = "YES"
    logs = write_csv(tmp_path / "logs.csv", rows)
    report = ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    assert report.counts.used == 18 and report.counts.excluded_consent == 12
    assert report.consent.excluded_reasons == {"unrecognised": 6, "not_granted": 6}


def test_uses_list_and_another_use(tmp_path: Path) -> None:
    rows = make_rows(users=4)
    for i, r in enumerate(rows):
        r["consent_synth"] = ["training,analytics", "analytics", "synthetic_fit"][i % 3]
    logs = write_csv(tmp_path / "logs.csv", rows)
    text = MAPPING_YAML.replace("consent.synthetic_fit: consent_synth", "consent.uses: consent_synth")
    report = ingest(logs, write_mapping(tmp_path, text), tmp_path / "a")
    assert report.counts.used == 8 and report.consent.basis == "column:consent_synth"
    text2 = text + "consent: {use: training}\n"
    report2 = ingest(logs, write_mapping(tmp_path, text2, "m2.yaml"), tmp_path / "b")
    assert report2.counts.used == 8 and report2.consent.use == "training"
    # a per-use flag column must match the use in force
    text3 = MAPPING_YAML + "consent: {use: training}\n"
    with pytest.raises(ConfigError, match="consent flag for another use"):
        ingest(logs, write_mapping(tmp_path, text3, "m3.yaml"), tmp_path / "c")


def test_policy_versions_and_granted_at(tmp_path: Path) -> None:
    rows = make_rows(users=2, sessions=1, turns=4)
    for r in rows:
        r.update(pv="2024-01", granted="")
    rows[0]["granted"] = (T0 + timedelta(minutes=2)).isoformat()  # user0 granted at turn 2
    logs = write_csv(tmp_path / "logs.csv", rows, [*FIELDS, "pv", "granted"])
    text = MAPPING_YAML + "  consent.policy_version: pv\n  consent.granted_at: granted\n"
    report = ingest(logs, write_mapping(tmp_path, text), tmp_path / "out")
    assert report.consent.policy_versions == ["2024-01"]
    assert report.counts.excluded_consent == 2
    assert report.consent.excluded_reasons == {"before_granted": 2}


# --------------------------------------------------------------------------- assumed / missing
def test_assumed_consent_is_recorded(tmp_path: Path) -> None:
    rows = make_rows(users=3)
    logs = write_csv(tmp_path / "logs.csv", rows)
    text = MAPPING_YAML.replace("  consent.synthetic_fit: consent_synth   # true / false\n", "") + \
        'consent: {assume: true, basis: "internal test logs, DPA 2024-07"}\n'
    report = ingest(logs, write_mapping(tmp_path, text), tmp_path / "out")
    assert report.consent.assumed and report.consent.basis == "assumed: internal test logs, DPA 2024-07"
    assert report.counts.used == 18
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["consent"]["basis"] == "assumed: internal test logs, DPA 2024-07"
    assert read_manifest(tmp_path / "out").consent.assumed
    both = MAPPING_YAML + 'consent: {assume: true, basis: "x"}\n'
    with pytest.raises(ConfigError, match="consent columns are mapped"):
        ingest(logs, write_mapping(tmp_path, both, "m2.yaml"), tmp_path / "b")


def test_log_without_consent_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = write_csv(tmp_path / "logs.csv", make_rows(users=3))
    text = MAPPING_YAML.replace("  consent.synthetic_fit: consent_synth   # true / false\n", "")
    mapping = write_mapping(tmp_path, text)
    with pytest.raises(ConsentError) as e:
        ingest(logs, mapping, tmp_path / "out")
    assert str(e.value).startswith(
        f"{logs} has no consent column for synthetic_fit; map `consent.synthetic_fit` (or "
        f"`consent.uses`) or state `consent: {{assume: true, basis: ...}}` in {mapping}")
    assert "its columns include 'consent_synth'" in str(e.value)
    code = main(["ingest", str(logs), "--mapping", str(mapping), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    nothing_written(tmp_path, tmp_path / "out")


def test_empty_consented_set_writes_nothing(tmp_path: Path) -> None:
    logs = write_csv(tmp_path / "logs.csv", make_rows(users=3, consent="no"))
    with pytest.raises(ConsentError, match=r"all 18 rows lack consent for synthetic_fit \(not_granted 18\)"):
        ingest(logs, write_mapping(tmp_path), tmp_path / "out")
    nothing_written(tmp_path, tmp_path / "out")
