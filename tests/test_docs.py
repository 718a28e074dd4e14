"""The README and generated docs stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_links_point_at_existing_files() -> None:
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|configs|generators|benchmarks)/[^)#]+)\)", text)
    assert links, "README links to no docs"
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_paths_used_in_commands_exist() -> None:
    text = (REPO / "README.md").read_text()
    paths = set(re.findall(r"\b((?:configs|generators|benchmarks)/[\w./-]+\.(?:ya?ml|py))", text))
    assert paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"README mentions missing files: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = next(line.strip() for line in readme.splitlines()
                    if line.strip().startswith("python3.11 -m venv") and "pytest" in line)
    assert test_cmd in ci


def test_shipped_evalset_is_what_its_command_generates(tmp_path: Path) -> None:
    from synthloop.evalsets import open_evalset
    from synthloop.generate import GenerateOptions, generate

    shipped = open_evalset(REPO / "evalsets" / "support" / "v1")
    made = generate(REPO / "generators" / "support_assistant.yaml", tmp_path / "support" / "v1",
                    GenerateOptions(seed=7, sessions=1000))
    assert made is not None
    assert made.content_hash == shipped.content_hash


def _doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every `synthloop ...` line of README.md and docs/*.md,
    with backslash continuations joined."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for line in text.splitlines():
            m = re.search(r"(?:^|\$ |^\s+)(synthloop \S.*)", line)
            if m:
                out.append((path.name, m.group(1)))
    return out


def test_documented_writes_do_not_target_shipped_evalset_versions() -> None:
    # An evalset version is never overwritten: a documented `generate`/`import --out` into a
    # version folder that ships with the repository fails (exit 2) on a fresh clone.
    commands = _doc_commands()
    assert any(cmd.startswith("synthloop generate") for _, cmd in commands)
    clashes = []
    for name, cmd in commands:
        if not re.match(r"synthloop (generate|evalset import)\b", cmd):
            continue
        m = re.search(r"--out\s+(\S+)", cmd)
        if m and (REPO / m.group(1)).is_dir() and any((REPO / m.group(1)).iterdir()):
            clashes.append(f"{name}: {cmd}")
    assert not clashes, "documented commands write into shipped evalset versions:\n" + "\n".join(clashes)
