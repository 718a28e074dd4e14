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
