"""`synthloop evalset list | show | diff | export | import | gc`: versioned evalsets on disk.

Every subcommand is a thin shell over `synthloop.evalsets` / `synthloop.evalset_import`.
Evalsets are named by a directory or by `name@version` / `name@latest` under `--root`
(default `$SYNTHLOOP_EVALSETS`, else `./evalsets`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from synthloop.errors import DataError
from synthloop.evalsets import (
    DEFAULT_ROOT,
    EXPORT_FORMATS,
    Evalset,
    diff_versions,
    export_evalset,
    list_evalsets,
    open_evalset,
    remove_stale_temp_dirs,
    stale_temp_dirs,
)
from synthloop.progress import progress_bar


def _root(args: argparse.Namespace) -> Path:
    if args.root is not None:
        return Path(args.root)
    return Path(os.environ.get("SYNTHLOOP_EVALSETS", str(DEFAULT_ROOT)))


def _open(ref: str, args: argparse.Namespace) -> Evalset:
    p = Path(ref)
    if not p.exists() and "@" not in ref:
        raise DataError(f"{ref}: no such evalset directory",
                        hint="pass a version directory or NAME@VERSION / NAME@latest")
    return open_evalset(ref, _root(args))


def register(sub: Any) -> None:
    p = sub.add_parser("evalset", help="list, show, diff, export and import evalset versions",
                       description="Versioned evalsets: each version is a directory with "
                       "Hugging Face Arrow data and manifest.json. Refer to one by its directory "
                       "or by NAME@VERSION / NAME@latest under --root.")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    es = p.add_subparsers(dest="evalset_command", metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--root", type=Path, default=None,
                       help="folder holding NAME/VERSION directories (default: $SYNTHLOOP_EVALSETS "
                       "or ./evalsets)")

    q = es.add_parser("list", help="list every complete version under --root")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON (a list of manifests + paths)")
    q.set_defaults(func=run_list)

    q = es.add_parser("show", help="show one version's manifest")
    q.add_argument("ref", help="version directory or NAME@VERSION / NAME@latest")
    common(q)
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.add_argument("--head", type=int, default=0, metavar="N",
                   help="also print the first N cases as JSON lines")
    q.set_defaults(func=run_show)

    q = es.add_parser("diff", help="cases added, removed and changed between two versions")
    q.add_argument("a", help="old version (directory or NAME@VERSION)")
    q.add_argument("b", help="new version (directory or NAME@VERSION)")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--limit", type=int, default=20, metavar="N",
                   help="list at most N ids per kind (0 = all; default 20)")
    q.set_defaults(func=run_diff)

    q = es.add_parser("export", help="write a version's cases to one JSONL, Parquet or CSV file")
    q.add_argument("ref", help="version directory or NAME@VERSION / NAME@latest")
    common(q)
    q.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="output format (default: from --out's extension)")
    q.add_argument("--out", type=Path, required=True, help="output file")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    q.set_defaults(func=run_export)

    q = es.add_parser("import", help="turn a JSONL/CSV file of prompts or interactions into a version",
                      description="Each row becomes a case. Field names may be dotted paths "
                      "into nested JSON (e.g. turns.0.content). Bad rows stop the import with "
                      "the line number; nothing is written.")
    q.add_argument("file", type=Path, help="JSONL (.jsonl, .ndjson, .gz) or CSV/TSV file")
    q.add_argument("--input-field", required=True, help="field holding the user's input")
    q.add_argument("--id-field", help="field holding a unique case id (default: row-NNNNNN)")
    q.add_argument("--tag-field", action="append", default=[], metavar="FIELD",
                   help="copy FIELD into the tags as FIELD=value (repeatable)")
    q.add_argument("--reference-field", help="field holding good reference answer(s)")
    q.add_argument("--bad-reference-field", help="field holding bad reference answer(s)")
    q.add_argument("--session-field", help="field holding a session id (turns follow file order)")
    q.add_argument("--history-field", help="field holding prior turns (list of messages)")
    q.add_argument("--format", choices=("jsonl", "csv"), default=None,
                   help="input format (default: from the file name)")
    q.add_argument("--out", type=Path, required=True, help="new evalset version directory")
    q.add_argument("--name", help="evalset name in the manifest (default: --out's parent folder)")
    q.set_defaults(func=run_import)

    q = es.add_parser("gc", help="remove temporary folders left by interrupted writes")
    common(q)
    q.add_argument("--dry-run", action="store_true", help="only list them")
    q.set_defaults(func=run_gc)


# --------------------------------------------------------------------------- list
def _short_hash(h: str) -> str:
    return h.split(":")[-1][:12]


def run_list(args: argparse.Namespace) -> int:
    root = _root(args)
    found = list_evalsets(root)
    if args.json:
        print(json.dumps([{"path": str(e.path), **e.manifest.model_dump(mode="json")}
                          for e in found], indent=2))
        return 0
    if not found:
        print(f"no evalsets under {root}")
        return 0
    head = ("NAME", "VERSION", "CASES", "SESSIONS", "CREATED", "GENERATOR", "HASH")
    rows = [head] + [
        (e.manifest.name, e.manifest.version, f"{e.manifest.counts.cases:,}",
         f"{e.manifest.counts.sessions:,}", e.manifest.created_at.strftime("%Y-%m-%d %H:%M"),
         e.manifest.provenance.generator, _short_hash(e.content_hash))
        for e in sorted(found, key=lambda e: (e.manifest.name, e.manifest.created_at))
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) if i not in (2, 3) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    print(f"{len(found)} version{'s' if len(found) != 1 else ''} under {root}")
    return 0


# --------------------------------------------------------------------------- show
def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def run_show(args: argparse.Namespace) -> int:
    ev = _open(args.ref, args)
    m = ev.manifest
    if args.json:
        print(m.model_dump_json(indent=2))
    else:
        pv = m.provenance
        print(f"{m.name}@{m.version}  {ev.path}")
        print(f"  created   {m.created_at.isoformat()}  synthloop {m.package_version}")
        print(f"  hash      {m.content_hash}")
        print(f"  counts    {m.counts.sessions:,} sessions, {m.counts.cases:,} cases, "
              f"{m.counts.interactions:,} interactions")
        src = [f"generator {pv.generator}"]
        if pv.seed is not None:
            src.append(f"seed {pv.seed}")
        if pv.spec_path:
            src.append(f"spec {pv.spec_path}")
        if pv.details.get("source"):
            src.append(f"source {pv.details['source']}")
        print("  " + "  ".join(src))
        fb = m.feedback_summary
        if fb.get("cases_with_feedback"):
            print(f"  feedback  explicit {_pct(fb.get('explicit_share'))}  thumb-up rate "
                  f"{_pct(fb.get('thumb_up_rate'))}  ({fb.get('thumbs_up', 0):,} up, "
                  f"{fb.get('thumbs_down', 0):,} down)")
        cs = m.consent_summary
        if cs.get("uses"):
            uses = ", ".join(f"{k} {v:,}" for k, v in cs["uses"].items())
            print(f"  consent   {cs.get('users', 0):,} users: {uses}")
        if m.partial:
            print("  PARTIAL   generation stopped early: " + "; ".join(m.notes))
    if args.head > 0:
        from synthloop.evalsets import row_to_json

        shown = 0
        for b in ev.iter_batches():
            for row in b.slice(0, args.head - shown).to_pylist():
                print(json.dumps(row_to_json(row), ensure_ascii=False))
                shown += 1
            if shown >= args.head:
                break
    return 0


# --------------------------------------------------------------------------- diff
def run_diff(args: argparse.Namespace) -> int:
    a, b = _open(args.a, args), _open(args.b, args)
    d = diff_versions(a, b, limit=None if args.limit == 0 else args.limit)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    print(f"a: {d['a']['name']}@{d['a']['version']}  {d['a']['cases']:,} cases  "
          f"{_short_hash(d['a']['content_hash'])}")
    print(f"b: {d['b']['name']}@{d['b']['version']}  {d['b']['cases']:,} cases  "
          f"{_short_hash(d['b']['content_hash'])}")
    if d["identical"]:
        print("identical content (same content_hash)")
    else:
        print(f"added {d['added']:,}  removed {d['removed']:,}  changed {d['changed']:,}  "
              f"unchanged {d['unchanged']:,}")
        for kind in ("added", "removed", "changed"):
            ids = d[f"{kind}_ids"]
            if ids:
                more = d[kind] - len(ids)
                print(f"  {kind}: {', '.join(ids)}" + (f" ... (+{more:,} more)" if more else ""))
    for k, v in d["manifest_changes"].items():
        print(f"  {k}: {v['a']} -> {v['b']}")
    return 0


# --------------------------------------------------------------------------- export
def run_export(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = args.out.suffix.lower().lstrip(".")
        fmt = {"jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet", "csv": "csv"}.get(suffix)
        if fmt is None:
            raise DataError(f"{args.out}: cannot tell the format from the extension",
                            hint="pass --format jsonl, parquet or csv")
    ev = _open(args.ref, args)
    with progress_bar(len(ev), "export") as bar:
        rows = export_evalset(ev, args.out, fmt, overwrite=args.force,
                              on_batch=lambda n: bar.advance(n))
    print(f"exported {rows:,} cases of {ev.manifest.name}@{ev.manifest.version} to {args.out} "
          f"({fmt})")
    return 0


# --------------------------------------------------------------------------- import
def run_import(args: argparse.Namespace) -> int:
    from synthloop.evalset_import import FieldMapping, import_file

    mapping = FieldMapping(
        input=args.input_field, id=args.id_field, tags=list(args.tag_field),
        reference=args.reference_field, bad_reference=args.bad_reference_field,
        session=args.session_field, history=args.history_field,
    )
    with progress_bar(None, "import") as bar:
        m = import_file(args.file, args.out, mapping, fmt=args.format, name=args.name,
                        on_rows=lambda n: bar.advance(n))
    refs = "with references" if args.reference_field else "no references"
    print(f"imported {m.counts.cases:,} cases ({m.counts.sessions:,} sessions, {refs}) from "
          f"{args.file} into {m.name}@{m.version} at {args.out}")
    print(f"  content_hash {m.content_hash}")
    return 0


# --------------------------------------------------------------------------- gc
def run_gc(args: argparse.Namespace) -> int:
    root = _root(args)
    found = stale_temp_dirs(root) if args.dry_run else remove_stale_temp_dirs(root)
    verb = "would remove" if args.dry_run else "removed"
    for d in found:
        print(f"{verb} {d}")
    print(f"{verb} {len(found)} stale temporary folder{'s' if len(found) != 1 else ''} under {root}")
    return 0
