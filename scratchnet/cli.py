"""The `scratchnet` command: the service from a shell.

    scratchnet serve                                     # the service, as python -m service
    scratchnet datasets create moons --samples 200 --noise 0.2
    scratchnet train ds_… --hidden 3 --activation tanh --optimizer sgd --epochs 20000 \\
        --learning-rate 2.0 --l2 0.01
    scratchnet predict mdl_… points.csv
    scratchnet picture mdl_… -o boundary.png

`--url` and `--api-key` (or SCRATCHNET_URL and SCRATCHNET_API_KEY) name the service; `--json`
prints the service's answers as JSON. Exit codes (EXIT_CODES below): 0 done, 1 the job or sweep
failed or was cancelled, 2 a usage error, 3 the service refused the request (a 4xx problem),
4 the service could not be reached or failed (5xx). `--install-completion` installs shell
completion.

`train` and `sweep` take every training option as `--option-name VALUE`, the names of the
fields of Hyperparameters with dashes (`--lr-schedule step`, `--batch-size 32`); values are
read as JSON where they parse as JSON (`3`, `2.0`, `true`, `[64, 64]`) and as text otherwise.
`--hidden 3` or `--hidden 64,64` is short for `--hidden-layers`; `--input-features
identity,square` lists input maps.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from engine.hyperparameters import Hyperparameters
from scratchnet._base import API_KEY_ENV, URL_ENV, succeeded
from scratchnet.client import Client
from scratchnet.errors import (
    APIError,
    ConnectionFailed,
    ScratchnetError,
    ServerError,
    TrainingNotSucceeded,
)
from scratchnet.types import DatasetKind, JobPublic, JobStatusName, SweepPublic

EXIT_OK = 0
EXIT_NOT_SUCCEEDED = 1  # the job or sweep ended failed or cancelled
EXIT_USAGE = 2  # click's own code for a bad command line
EXIT_REFUSED = 3  # the service answered 4xx: the request was wrong
EXIT_UNAVAILABLE = 4  # no answer, or a 5xx: the service is down or failed
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_NOT_SUCCEEDED: "the job or sweep failed or was cancelled",
    EXIT_USAGE: "a usage error (unknown option, bad value)",
    EXIT_REFUSED: "the service refused the request (a 4xx problem)",
    EXIT_UNAVAILABLE: "the service could not be reached, or failed (5xx)",
}
HIDDEN_ALIAS = "hidden"
OPTION_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
F = TypeVar("F", bound=Callable[..., Any])

# Options and arguments several commands take.
NameOption = Annotated[str | None, typer.Option(help="A label for people.")]
SeedOption = Annotated[int | None, typer.Option(help="Seed of the generator and of the split.")]
TestFractionOption = Annotated[
    float | None, typer.Option(help="Share of each class held out for testing (0: none).")
]
StandardizeOption = Annotated[bool | None, typer.Option(help="Standardize features (default on).")]
LimitOption = Annotated[int | None, typer.Option(help="Page size.")]
OffsetOption = Annotated[int, typer.Option(help="Items to skip.")]
BaselineOption = Annotated[bool, typer.Option(help="Also train logistic regression.")]
WaitOption = Annotated[bool, typer.Option(help="Wait until it finishes (else print it queued).")]
ProgressOption = Annotated[
    bool | None, typer.Option(help="Progress bar (default: on in a terminal).")
]
DatasetArgument = Annotated[str, typer.Argument(help="The dataset's id.")]
ModelArgument = Annotated[str, typer.Argument(help="The model's id.")]

app = typer.Typer(
    name="scratchnet",
    help="Train small neural networks on a scratchnet service.",
    epilog="Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Create, list, show and delete datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show, follow and cancel training jobs.", no_args_is_help=True)
models_app = typer.Typer(
    help="List, show, delete and alias models (a model is named by its id or an alias).",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")

# Tables keep whole ids when printed to a file or a pipe (rich would assume 80 columns).
PIPE_WIDTH = 200
out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)


@dataclass
class Options:
    """The options every command shares (set by the main callback)."""

    url: str | None
    api_key: str | None
    json: bool

    def client(self) -> Client:
        return Client(self.url, self.api_key)


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(envvar=URL_ENV, help="The service (default 127.0.0.1:8000).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar=API_KEY_ENV, help="API key for the service.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the service's answers as JSON.")
    ] = False,
) -> None:
    ctx.obj = Options(url=url, api_key=api_key, json=json_output)


def handled(command: F) -> F:
    """Run `command`, turning this package's exceptions into a message on stderr and the
    exit code of EXIT_CODES."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrainingNotSucceeded as exc:
            ctx = kwargs.get("ctx")
            if isinstance(ctx, typer.Context) and isinstance(exc.resource, JobPublic):
                _job_summary(ctx.obj, exc.resource)
            elif isinstance(ctx, typer.Context):
                _show(ctx.obj, exc.resource)
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise typer.Exit(EXIT_NOT_SUCCEEDED) from None
        except ServerError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except APIError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            for issue in exc.errors:
                where = ".".join(str(part) for part in issue.loc)
                err.print(f"  {where}: {issue.msg}", highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None
        except ConnectionFailed as exc:
            err.print(f"[red]error:[/red] cannot reach the service: {exc}", highlight=False)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except ScratchnetError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None
        except OSError as exc:  # a local file that cannot be read or written
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None

    return run  # type: ignore[return-value]


@contextmanager
def _connected(ctx: typer.Context) -> Iterator[tuple[Client, Options]]:
    options: Options = ctx.obj
    with options.client() as client:
        yield client, options


def _print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2)
    sys.stdout.write(text + "\n")


def _show(options: Options, resource: BaseModel) -> None:
    """A resource as `field: value` lines (nested objects as JSON); JSON under --json."""
    if options.json:
        _print_json(resource)
        return
    for name, value in resource.model_dump(mode="json").items():
        if value is None or name in ("points", "labels", "split"):
            continue
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        out.print(f"[bold]{name}[/bold]: {shown}", highlight=False, soft_wrap=True)


def _job_summary(options: Options, job: JobPublic) -> None:
    """A job as its outcome: status, model, and a table of loss and accuracy per split (the
    whole job under --json)."""
    if options.json:
        _print_json(job)
        return
    took = "" if job.elapsed_seconds is None else f" in {job.elapsed_seconds:.2f} s"
    stopped = f", {job.stop_reason}" if job.stop_reason else ""
    out.print(f"{job.id} {job.status}{took} ({job.epoch} epochs{stopped})", highlight=False)
    if job.model_id is not None:
        out.print(f"model {job.model_id}", highlight=False)
    if job.error is not None:
        out.print(f"{job.error.type}: {job.error.detail}", highlight=False)
    metrics = job.metrics
    if metrics is not None:
        table = Table("", "loss", metrics.score_name)
        table.add_row("train", _cell(metrics.train_loss), _cell(metrics.score("train")))
        if metrics.test_loss is not None:
            table.add_row("test", _cell(metrics.test_loss), _cell(metrics.score("test")))
        if job.baseline is not None and job.baseline.train_loss is not None:
            baseline = job.baseline
            table.add_row(
                "baseline train", _cell(baseline.train_loss), _cell(baseline.score("train"))
            )
            if baseline.test_loss is not None:
                table.add_row(
                    "baseline test", _cell(baseline.test_loss), _cell(baseline.score("test"))
                )
        out.print(table)


def _table(options: Options, page: BaseModel, columns: list[str]) -> None:
    """A page of resources as a table of `columns` (the page itself under --json)."""
    if options.json:
        _print_json(page)
        return
    table = Table(*columns)
    for item in getattr(page, "items", []):
        row = item.model_dump(mode="json")
        table.add_row(*(_cell(row.get(column)) for column in columns))
    out.print(table)
    total = getattr(page, "total", 0)
    out.print(f"{len(getattr(page, 'items', []))} of {total}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


# --- training options -------------------------------------------------------------------------


def _value(text: str) -> Any:
    """A command-line value: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _listed(text: str) -> Any:
    """`3`, `64,64` or `[64, 64]` as a list (of units; `identity,square` of input maps);
    `[]` or `none` for none (no hidden layer)."""
    if text.strip().lower() in ("none", "[]", ""):
        return []
    parsed = _value(text)
    if isinstance(parsed, list):
        return parsed
    return [_value(part) for part in text.split(",")]


def training_options(extra: list[str]) -> dict[str, Any]:
    """`--option-name VALUE` pairs (or `--option-name=VALUE`) as Hyperparameters fields;
    a usage error (exit 2) for a name that is not one."""
    fields = Hyperparameters.model_fields
    options: dict[str, Any] = {}
    words = iter(extra)
    for word in words:
        if not word.startswith("--"):
            raise typer.BadParameter(f"unexpected argument {word!r}")
        name, equals, text = word[2:].partition("=")
        if not equals:
            text = next(words, None)  # type: ignore[assignment]
            if text is None:
                raise typer.BadParameter(f"--{name} needs a value")
        field = name.replace("-", "_")
        if field == HIDDEN_ALIAS or field == "hidden_layers":
            options["hidden_layers"] = _listed(text)
        elif field == "input_features":
            options[field] = _listed(text)
        elif field in fields:
            options[field] = _value(text)
        else:
            known = ", ".join("--" + f.replace("_", "-") for f in fields)
            raise typer.BadParameter(f"unknown training option --{name}; the options are {known}")
    return options


TRAINING_HELP = "Training options, each as --name VALUE: " + ", ".join(
    f"--{name.replace('_', '-')} ({field.description or ''})".replace("\n", " ")
    for name, field in Hyperparameters.model_fields.items()
)


# --- commands ---------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the service (the same as `python -m service`)."""
    from service.__main__ import main as serve_main  # the web stack loads only here

    argv = [*(["--host", host] if host else []), *(["--port", str(port)] if port else [])]
    serve_main(argv)


@app.command()
@handled
def info(ctx: typer.Context) -> None:
    """The service's version, workers and limits."""
    with _connected(ctx) as (client, options):
        _show(options, client.info())


@datasets_app.command("create")
@handled
def datasets_create(
    ctx: typer.Context,
    kind: Annotated[DatasetKind, typer.Argument(help="moons, circles, blobs, xor, spiral, …")],
    samples: Annotated[int | None, typer.Option(help="Points to generate.")] = None,
    noise: Annotated[float | None, typer.Option(help="Noise of the generator.")] = None,
    classes: Annotated[int | None, typer.Option(help="Classes (blobs, spiral, gaussian).")] = None,
    seed: SeedOption = None,
    test_fraction: TestFractionOption = None,
    standardize: StandardizeOption = None,
    name: NameOption = None,
) -> None:
    """Generate a dataset, or load one of scikit-learn's bundled sets."""
    with _connected(ctx) as (client, options):
        dataset = client.create_dataset(
            kind,
            name=name,
            n_samples=samples,
            noise=noise,
            n_classes=classes,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
        )
        _show(options, dataset)


@datasets_app.command("upload")
@handled
def datasets_upload(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="A CSV file: header row, label column last."
        ),
    ],
    label_column: Annotated[str | None, typer.Option(help="The label column.")] = None,
    seed: SeedOption = None,
    test_fraction: TestFractionOption = None,
    standardize: StandardizeOption = None,
    name: NameOption = None,
) -> None:
    """Create a dataset from a CSV file."""
    with _connected(ctx) as (client, options):
        dataset = client.dataset_from_csv(
            path,
            label_column=label_column,
            name=name,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
        )
        _show(options, dataset)


@datasets_app.command("list")
@handled
def datasets_list(
    ctx: typer.Context,
    limit: LimitOption = None,
    offset: OffsetOption = 0,
) -> None:
    """List datasets, oldest first."""
    with _connected(ctx) as (client, options):
        page = client.list_datasets(limit=limit, offset=offset)
        _table(options, page, ["id", "name", "kind", "n_samples", "n_features", "n_classes"])


@datasets_app.command("show")
@handled
def datasets_show(ctx: typer.Context, dataset: str) -> None:
    """Show one dataset."""
    with _connected(ctx) as (client, options):
        _show(options, client.get_dataset(dataset))


@datasets_app.command("delete")
@handled
def datasets_delete(ctx: typer.Context, dataset: str) -> None:
    """Delete a dataset (refused while a job or sweep trains on it)."""
    with _connected(ctx) as (client, _options):
        client.delete_dataset(dataset)


@app.command(context_settings=OPTION_CONTEXT, epilog=TRAINING_HELP)
@handled
def train(
    ctx: typer.Context,
    dataset: DatasetArgument,
    name: NameOption = None,
    baseline: BaselineOption = False,
    wait: WaitOption = True,
    progress: ProgressOption = None,
    init_model: Annotated[
        str | None,
        typer.Option(
            help="Continue this model's training (an id or alias); options left out are its."
        ),
    ] = None,
) -> None:
    """Train a network on a dataset: a live progress bar, then the job and its metrics.
    Every training option is taken as --option-name VALUE (see below)."""
    hyperparameters = training_options(ctx.args)
    with _connected(ctx) as (client, options):
        job = client.submit_job(
            dataset, hyperparameters, name=name, baseline=baseline, init_model=init_model
        )
        if wait:
            job = client.wait(job, progress=progress)
        _job_summary(options, job)


@jobs_app.command("list")
@handled
def jobs_list(
    ctx: typer.Context,
    status: Annotated[JobStatusName | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: LimitOption = None,
    offset: OffsetOption = 0,
) -> None:
    """List jobs, oldest first."""
    with _connected(ctx) as (client, options):
        page = client.list_jobs(status=status, limit=limit, offset=offset)
        columns = ["id", "name", "status", "epoch", "epochs", "model_id", "metrics"]
        _table(options, page, columns)


@jobs_app.command("show")
@handled
def jobs_show(ctx: typer.Context, job: str) -> None:
    """Show one job."""
    with _connected(ctx) as (client, options):
        _show(options, client.get_job(job))


@jobs_app.command("follow")
@handled
def jobs_follow(ctx: typer.Context, job: str) -> None:
    """Print a job's progress events as they arrive (JSON lines under --json), then the job;
    the exit code says whether it succeeded."""
    with _connected(ctx) as (client, options):
        final: JobPublic | None = None
        for event in client.follow(job):
            if isinstance(event, JobPublic):
                final = event
            elif options.json:
                sys.stdout.write(event.model_dump_json() + "\n")
            else:
                test = "" if event.test_loss is None else f"  test_loss {event.test_loss:.4f}"
                out.print(
                    f"epoch {event.epoch}  train_loss {event.train_loss:.4f}{test}",
                    highlight=False,
                )
        assert final is not None  # the stream ends with the job's final state
        _show(options, succeeded(final))


@jobs_app.command("cancel")
@handled
def jobs_cancel(ctx: typer.Context, job: str) -> None:
    """Cancel a queued or running job."""
    with _connected(ctx) as (client, options):
        _show(options, client.cancel_job(job))


@models_app.command("list")
@handled
def models_list(
    ctx: typer.Context,
    limit: LimitOption = None,
    offset: OffsetOption = 0,
) -> None:
    """List models, oldest first."""
    with _connected(ctx) as (client, options):
        page = client.list_models(limit=limit, offset=offset)
        _table(options, page, ["id", "name", "architecture", "activation", "metrics"])


@models_app.command("show")
@handled
def models_show(ctx: typer.Context, model: str) -> None:
    """Show one model."""
    with _connected(ctx) as (client, options):
        _show(options, client.get_model(model))


@models_app.command("delete")
@handled
def models_delete(ctx: typer.Context, model: str) -> None:
    """Delete a model."""
    with _connected(ctx) as (client, _options):
        client.delete_model(model)


@models_app.command("alias")
@handled
def models_alias(ctx: typer.Context, model: str, alias: str) -> None:
    """Give a model an alias (moved from whichever model had it); show the model."""
    with _connected(ctx) as (client, options):
        _show(options, client.set_alias(model, alias))


@models_app.command("unalias")
@handled
def models_unalias(ctx: typer.Context, model: str, alias: str) -> None:
    """Remove one of a model's aliases."""
    with _connected(ctx) as (client, _options):
        client.delete_alias(model, alias)


def read_points(text: str) -> list[list[float]]:
    """Rows of numbers from CSV text; a first row that is not numbers is a header."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if rows:
        try:
            [float(cell) for cell in rows[0]]
        except ValueError:
            rows = rows[1:]
    try:
        return [[float(cell) for cell in row] for row in rows]
    except ValueError as exc:
        raise typer.BadParameter(f"the points must be numbers: {exc}") from None


@app.command()
@handled
def predict(
    ctx: typer.Context,
    model: ModelArgument,
    points: Annotated[
        Path, typer.Argument(help="A CSV file of points (a header row is allowed), - for stdin.")
    ],
) -> None:
    """Classify the points of a CSV file: prints CSV (class, then each class's probability),
    or the prediction under --json."""
    text = sys.stdin.read() if str(points) == "-" else points.read_text()
    with _connected(ctx) as (client, options):
        prediction = client.predict(model, read_points(text))
        if options.json:
            _print_json(prediction)
            return
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if prediction.values is not None:  # a regression model: one column per target
            writer.writerow(client.get_model(model).target_names)
            writer.writerows([f"{v:.6g}" for v in row] for row in prediction.values)
            return
        classes = client.get_model(model).classes
        writer.writerow(["class", *(f"p_{label}" for label in classes)])
        assert prediction.classes is not None and prediction.probabilities is not None
        for label, row in zip(prediction.classes, prediction.probabilities, strict=True):
            writer.writerow([label, *(f"{p:.6g}" for p in row)])


@app.command()
@handled
def picture(
    ctx: typer.Context,
    model: ModelArgument,
    output: Annotated[Path, typer.Option("-o", "--output", help="The PNG file to write.")],
    loss: Annotated[bool, typer.Option(help="The loss curve, not the boundary.")] = False,
    width: Annotated[int | None, typer.Option(help="Pixels.")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels.")] = None,
) -> None:
    """Save a model's decision boundary (or, with --loss, its loss curve) as PNG."""
    with _connected(ctx) as (client, _options):
        if loss:
            client.loss_curve(model, output, width=width, height=height)
        else:
            client.decision_boundary(model, output, width=width, height=height)


@app.command("export")
@handled
def export_model(
    ctx: typer.Context,
    model: ModelArgument,
    output: Annotated[Path, typer.Option("-o", "--output", help="The .npz file to write.")],
) -> None:
    """Save a model as a .npz file (`scratchnet import` reads it back)."""
    with _connected(ctx) as (client, _options):
        client.export_model(model, output)


@app.command("import")
@handled
def import_model(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="A .npz file from `scratchnet export`."),
    ],
    name: Annotated[str | None, typer.Option(help="The new model's name.")] = None,
) -> None:
    """Create a model from an exported .npz file."""
    with _connected(ctx) as (client, options):
        _show(options, client.import_model(path, name=name))


@app.command(context_settings=OPTION_CONTEXT, epilog=TRAINING_HELP)
@handled
def sweep(
    ctx: typer.Context,
    dataset: DatasetArgument,
    grid: Annotated[
        list[str],
        typer.Option(help="NAME=JSON-LIST, e.g. hidden_layers='[[1],[3]]'; repeat per key."),
    ],
    name: NameOption = None,
    baseline: BaselineOption = False,
    wait: WaitOption = True,
    progress: ProgressOption = None,
) -> None:
    """Train every combination of the grid's values; the other training options (shared by
    every configuration) as for `train`. Prints the results table."""
    values: dict[str, Any] = {}
    for item in grid:
        key, equals, text = item.partition("=")
        parsed = _value(text)
        if not equals or not isinstance(parsed, list):
            raise typer.BadParameter(f"--grid takes NAME=JSON-LIST, got {item!r}")
        values[key.strip().replace("-", "_")] = parsed
    base = training_options(ctx.args)
    with _connected(ctx) as (client, options):
        created = client.create_sweep(dataset, values, base, name=name, baseline=baseline)
        result = client.wait_sweep(created, progress=progress) if wait else created
        _sweep_results(options, result)


def _sweep_results(options: Options, result: SweepPublic) -> None:
    if options.json:
        _print_json(result)
        return
    regression = any(row.regression for row in result.results)
    score = "test_r2" if regression else "test_accuracy"
    table = Table("index", "varied", "status", "train_loss", "test_loss", score, "best")
    for row in result.results:
        table.add_row(
            str(row.index),
            _cell(row.varied),
            row.status,
            _cell(row.train_loss),
            _cell(row.test_loss),
            _cell(row.score("test")),
            "*" if row.best else "",
        )
    out.print(f"{result.id} {result.status}", highlight=False)
    out.print(table)


def main() -> None:
    """The console script's entry point."""
    app()
