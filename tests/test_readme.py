"""README's examples run against a real `python -m service`, so they cannot rot: every fenced
Python block, and the shell blocks of the command-line section (the other shell blocks show
curl calls with elided ids)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_support import REPO, LiveServer

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"
RUNNABLE_SHELL_SECTION = "### Command line"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str, section: str | None = None) -> list[str]:
    """The fenced blocks of `language`, only those under the heading `section` if given."""
    text = README.read_text()
    if section is not None:
        body = text.index(section + "\n") + len(section) + 1
        depth = len(section.split(" ")[0])
        end = re.compile(rf"^#{{1,{depth}}} ", re.MULTILINE).search(text, body)
        text = text[body : end.start() if end else len(text)]
    return [body for lang, body in FENCE.findall(text) if lang == language]


def test_the_readme_has_the_examples_this_test_runs() -> None:
    assert len(blocks("python")) >= 5
    assert len(blocks("sh", RUNNABLE_SHELL_SECTION)) == 1


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example(
    index: int, live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = blocks("python")[index].replace(DOCUMENTED_URL, live_server.url)
    script = tmp_path / f"example_{index}.py"
    script.write_text(source)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")


def test_command_line_example(live_server: LiveServer, tmp_path: Path) -> None:
    (source,) = blocks("sh", RUNNABLE_SHELL_SECTION)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", source.replace(DOCUMENTED_URL, live_server.url)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "boundary.png").exists() and (tmp_path / "model.npz").exists()
    assert "class,p_0,p_1" in result.stdout and "succeeded" in result.stdout
