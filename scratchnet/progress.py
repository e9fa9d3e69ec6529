"""Progress bars for `train` and `run_sweep`: shown in terminals and notebooks, never when
output goes to a file or a pipe (a log would fill with redraws). A notebook draws them with
ipywidgets (`pip install 'scratchnet[notebook]'`); without it, no bar rather than a warning at
every redraw."""

from __future__ import annotations

import importlib.util
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scratchnet.types import HistoryPointPublic


def interactive(console: Console) -> bool:
    """Whether `console` can show a live bar: a terminal, or a Jupyter notebook with
    ipywidgets (rich tells them apart)."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return console.is_terminal


class ProgressBar:
    """One bar: epochs done of epochs asked for, and a line of metrics beside it.

    `show=None` decides by the console (see `interactive`); True and False force it.
    """

    def __init__(self, description: str, total: int, *, show: bool | None = None) -> None:
        console = Console(stderr=True)
        self.enabled = interactive(console) if show is None else show
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            disable=not self.enabled,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, metrics="")

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, completed: int, metrics: str | None = None) -> None:
        """Move the bar to `completed` epochs (and replace the metrics text, when given)."""
        if metrics is None:
            self._progress.update(self._task, completed=completed)
        else:
            self._progress.update(self._task, completed=completed, metrics=metrics)


def job_metrics(point: HistoryPointPublic) -> str:
    """The text beside a job's bar: `loss 0.0712  acc 0.970  test 0.950` (r2 instead of acc
    for regression)."""
    name = "r2" if point.regression else "acc"
    train, test = point.score("train"), point.score("test")
    text = f"loss {point.train_loss:.4f}"
    if train is not None:
        text += f"  {name} {train:.3f}"
    return text if test is None else f"{text}  test {test:.3f}"
