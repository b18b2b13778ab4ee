"""The README's two commands work from a fresh clone, and the docs name every command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from veille.cli import main

from .corpus import STORIES, page, rss

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no fenced code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_first_code_block_is_the_main_job_then_the_tests():
    commands = readme_commands()
    assert commands == ["python3 bootstrap.py run", "python3 bootstrap.py test"]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_command_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    def walk(group, prefix):
        for name, command in group.commands.items():
            full = f"{prefix} {name}".strip()
            if hasattr(command, "commands"):
                yield from walk(command, full)
            else:
                yield full

    missing = [c for c in walk(main, "") if f"veille {c}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


@pytest.mark.slow
def test_readme_commands_from_a_fresh_clone(tmp_path, http_server):
    """Clone the repository, run the main job (bootstrapping a new .venv) against loopback sources only,
    then the test command up to collecting the suite (running it would run this test again, recursively)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("the fresh-clone test needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for story in STORIES:
        http_server.serve(f"/articles/{story.slug}", page(story, http_server.base))
    http_server.serve("/feed.xml", rss([(s, http_server.url(f"/articles/{s.slug}")) for s in STORIES]),
                      content_type="application/rss+xml")
    local_sources = tmp_path / "sources.yaml"
    local_sources.write_text(
        "sources:\n  - id: local\n    name: Flux local\n    type: feed\n"
        f"    url: {http_server.url('/feed.xml')}\n    allow_private: true\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VEILLE_", "VIRTUAL_ENV", "PYTHON"))}
    env["VEILLE_SOURCES"] = str(local_sources)  # the shipped file lists real sources: never fetched in tests
    command = readme_commands()[0].split()
    command[0] = sys.executable if command[0] == "python3" else command[0]
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / ".venv").is_dir() and (clone / "veille.db").exists()
    weeks = [p for p in (clone / "digests").iterdir() if p.is_dir()]
    assert len(weeks) == 1 and (weeks[0] / "index.html").exists()
    assert "4 new" in result.stdout, result.stdout
    test_command = [*readme_commands()[1].split(), "--collect-only", "-q", "-p", "no:cacheprovider"]
    test_command[0] = sys.executable if test_command[0] == "python3" else test_command[0]
    collected = subprocess.run(test_command, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert re.search(r"^(\d+) tests? collected", collected.stdout, re.M), collected.stdout[-1000:]
    assert int(re.search(r"^(\d+) tests? collected", collected.stdout, re.M).group(1)) > 800
