"""PNG pictures: datasets, decision boundaries, loss curves, panel grids of models, hidden-unit
panels; and GIF animations of figures (a decision boundary's evolution).

Each picture has a `*_figure` function building a plain `matplotlib.figure.Figure` (for tests or
other formats) and a `*_png` function returning PNG bytes. pyplot is never imported, so nothing
is registered globally and a figure is freed when it goes out of scope.

Conventions shared by every picture:
- class i has colour CLASS_COLOURS[i % 10] (Okabe-Ito's eight, safe for colour-blind readers,
  then two of Paul Tol's) and, past ten classes, the next marker shape of CLASS_MARKERS;
- training points are filled, test points hollow (white face, class-coloured edge);
- `X_*` are RAW feature values (the model's scaler applies inside `predict_proba`) and `y_*` are
  class indices 0..n_classes-1, as `engine.datasets.Split` and `Dataset.y` hold them;
- a history is a sequence of points with `epoch`, `train_loss` and `test_loss` (None when there
  is no test set), given either as attributes (`engine.training.HistoryPoint`) or as dict keys;
- a PNG of one plot (a dataset, a decision boundary, a loss curve) says where that plot lies in
  a text chunk `plot-area` (see `plot_area`), so a viewer can map a pixel to data coordinates.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, ParamSpec

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.datasets import Dataset
from engine.errors import InvalidInput
from engine.model import Label, Model

P = ParamSpec("P")

DPI = 100
MIN_PIXELS, MAX_PIXELS = 100, 4096
MIN_RESOLUTION, MAX_RESOLUTION = 10, 1000
MAX_PANELS = 100
MAX_SERIES = 50
# zlib level 1: shaded regions encode about twice as fast as at the default 6, ~20% larger
PNG_COMPRESS_LEVEL = 1

# Okabe & Ito (2008), ordered so the first classes are the most distinct.
CLASS_COLOURS = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
    # two more from Paul Tol's muted scheme, so that ten classes never share a colour
    "#332288",  # indigo
    "#882255",  # wine
)
# Lines need contrast with white: the yellow is left out.
LINE_COLOURS = tuple(c for c in CLASS_COLOURS if c != "#F0E442")
CLASS_MARKERS = ("o", "s", "D", "^", "v", "P", "X")

# Region shading: the predicted class's colour blended with white, from REGION_MIN_STRENGTH on
# the boundary (top two probabilities equal) to REGION_MAX_STRENGTH where the model is certain.
REGION_MIN_STRENGTH = 0.08
REGION_MAX_STRENGTH = 0.6

Show = Literal["all", "train", "test", "none"]

# Animations: at most MAX_FRAMES frames of at most MAX_ANIMATION_PIXELS a side (a 100-frame
# 1024x768 GIF of shaded regions is ~10 MB and takes ~10 s to render on one core).
MAX_FRAMES = 100
MAX_ANIMATION_PIXELS = 1024
FRAME_MS = 150  # 100 frames: a 15 s animation
LAST_FRAME_MS = 2000  # the final boundary stays a moment before the loop restarts

# Hidden-unit panels: at most NEURON_COLUMNS a row (a wider layer wraps onto more rows); the
# colour map runs from the second class's colour (low) through white to the first's (high),
# the palette of the decision boundaries.
NEURON_COLUMNS = 10
NEURON_COLOURS = LinearSegmentedColormap.from_list(
    "neurons", [CLASS_COLOURS[1], "#ffffff", CLASS_COLOURS[0]]
)


@dataclass(frozen=True)
class PanelSpec:
    """One decision-boundary panel of `panels_png`; title None builds one from the model."""

    model: Model
    X_train: np.ndarray  # (n_train, 2) raw features
    y_train: np.ndarray  # (n_train,) class indices
    X_test: np.ndarray | None = None  # (n_test, 2)
    y_test: np.ndarray | None = None  # (n_test,)
    title: str | None = None


# --- helpers ---------------------------------------------------------------------------------


def class_colour(index: int) -> str:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def class_marker(index: int) -> str:
    return CLASS_MARKERS[(index // len(CLASS_COLOURS)) % len(CLASS_MARKERS)]


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


_PALETTE_RGB = np.stack([_rgb(c) for c in CLASS_COLOURS])  # (10, 3) in 0..255


def _check_pixels(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InvalidInput(f"{name} must be an integer number of pixels, got {value!r}")
        if not MIN_PIXELS <= value <= MAX_PIXELS:
            raise InvalidInput(
                f"{name} must be between {MIN_PIXELS} and {MAX_PIXELS} pixels, got {value}"
            )


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise InvalidInput(f"resolution must be an integer, got {resolution!r}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InvalidInput(
            f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} grid points "
            f"per axis, got {resolution}"
        )


def _new_figure(width: int, height: int) -> Figure:
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


PLOT_AREA_KEY = "plot-area"


def plot_area(figure: Figure) -> dict[str, object] | None:
    """Where the figure's one plot lies, once drawn: `left`, `top`, `width`, `height` of its axes
    in pixels from the picture's top-left corner, the data ranges `x` and `y` at its edges
    ([left, right] and [bottom, top]) and their scales (`linear` or `log`). None when the figure
    has several plots (a panel grid)."""
    axes = figure.get_axes()
    if len(axes) != 1:
        return None
    ax = axes[0]
    box = ax.get_window_extent()  # display pixels, origin at the bottom-left
    return {
        "left": round(float(box.x0), 2),
        "top": round(float(figure.bbox.height - box.y1), 2),
        "width": round(float(box.width), 2),
        "height": round(float(box.height), 2),
        "x": [float(v) for v in ax.get_xlim()],
        "y": [float(v) for v in ax.get_ylim()],
        "x_scale": ax.get_xscale(),
        "y_scale": ax.get_yscale(),
    }


def _rgb_image(figure: Figure) -> Image.Image:
    """The figure rendered with Agg, as an RGB image (the figure is opaque)."""
    canvas = figure.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[attr-defined]  # (height, width, 4)
    return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))


def _png(figure: Figure) -> bytes:
    """Render with Agg and encode RGB with Pillow: markedly faster than savefig's RGBA
    encoding. No metadata but the plot area (see `plot_area`), so the same picture gives the
    same bytes."""
    image = _rgb_image(figure)
    info = PngInfo()
    if (area := plot_area(figure)) is not None:
        info.add_text(PLOT_AREA_KEY, json.dumps(area, separators=(",", ":")))
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=PNG_COMPRESS_LEVEL, pnginfo=info)
    return buffer.getvalue()


def _as_png(draw: Callable[P, Figure]) -> Callable[P, bytes]:
    """`draw`, a `*_figure` function, returning its figure as PNG bytes (same arguments)."""

    def png(*args: P.args, **kwargs: P.kwargs) -> bytes:
        return _png(draw(*args, **kwargs))

    png.__name__ = png.__qualname__ = draw.__name__.removesuffix("_figure") + "_png"
    png.__doc__ = f"`{draw.__name__}` as PNG bytes."
    return png


PT = DPI / 72  # pixels per typographic point


def _plain(text: object) -> str:
    """User text shown literally: a '$' would otherwise start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


def _fit_margins(
    figure: Figure, ax: Axes, *, legend: Legend | None = None, top: int = 34, bottom: int = 50
) -> None:
    """Room for the y tick labels and label on the left and for a legend placed outside on the
    right, measured with the renderer's text metrics (a fraction of tight_layout's cost)."""
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    low, high = sorted(ax.get_ylim())
    ticks = [v for v in ax.yaxis.get_major_locator()() if low <= v <= high]
    labels = ax.yaxis.get_major_formatter().format_ticks(ticks)
    font = FontProperties(size=matplotlib.rcParams["ytick.labelsize"])
    widest = max(
        (renderer.get_text_width_height_descent(t, font, ismath="$" in t)[0] for t in labels),
        default=0.0,
    )
    # tick length + tick pad + label pad (3.5 + 3.5 + 4 points), the label's line, a gap
    left = widest + 11 * PT + (14 * PT if ax.get_ylabel() else 0) + 6
    right = 14.0
    if legend is not None:
        right += legend.get_window_extent(renderer).width
    width, height = figure.get_size_inches() * DPI
    figure.subplots_adjust(
        left=min(left / width, 0.45),
        right=max(1 - right / width, 0.55),
        bottom=min(bottom / height, 0.4),
        top=max(1 - top / height, 0.6),
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def architecture_label(model: Model) -> str:
    """'2-3-2 tanh', or '4-3 softmax regression' without hidden layers."""
    widths = "-".join(str(w) for w in model.architecture)
    if len(model.weights) == 1:
        return f"{widths} softmax regression"
    return f"{widths} {model.activation}"


def _points(
    model: Model, X: np.ndarray | None, y: np.ndarray | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (n, 2) raw points and (n,) class indices; empty when X is None."""
    if X is None:
        if y is not None:
            raise InvalidInput(f"y_{name} given without X_{name}")
        return np.empty((0, 2)), np.empty(0, dtype=np.int64)
    if y is None:
        raise InvalidInput(f"X_{name} given without y_{name}")
    points = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    if points.ndim != 2 or points.shape[1] != model.n_features:
        raise InvalidInput(f"X_{name} must have shape (n, {model.n_features}), got {points.shape}")
    if labels.shape != (points.shape[0],):
        raise InvalidInput(f"y_{name} must have shape ({points.shape[0]},), got {labels.shape}")
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= model.n_classes
    ):
        raise InvalidInput(f"y_{name} must hold class indices 0..{model.n_classes - 1}")
    if not np.isfinite(points).all():
        raise InvalidInput(f"X_{name} must be finite numbers (no NaN or Infinity)")
    return points, labels.astype(np.int64, copy=False)


def _accuracy(model: Model, X: np.ndarray, y: np.ndarray) -> float | None:
    if X.shape[0] == 0:
        return None
    return float(np.mean(model.predict_proba(X).argmax(axis=1) == y))


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    """The data's extent plus 10% on each side (a unit either side when it is a single value)."""
    if values.size == 0:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = 0.1 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def _view(model: Model, points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y ranges: around the points, or without points where the model's training data
    lay (mean +- 2.5 std from its scaler), or [-1, 1]."""
    if points.shape[0] == 0 and model.scaler is not None:
        low = model.scaler.mean - 2.5 * model.scaler.scale  # (2,)
        high = model.scaler.mean + 2.5 * model.scaler.scale
        return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))
    return _padded_range(points[:, 0]), _padded_range(points[:, 1])


def _scatter_classes(
    ax: Axes,
    X: np.ndarray,
    y: np.ndarray,
    *,
    hollow: bool,
    size: float,
) -> None:
    """Points coloured by class: filled with a dark edge, or hollow with a class-coloured edge.
    One scatter call per marker shape (all classes share one up to ten classes)."""
    if X.shape[0] == 0:
        return
    colours = np.array(CLASS_COLOURS)[y % len(CLASS_COLOURS)]  # (n,)
    shape_of = (y // len(CLASS_COLOURS)) % len(CLASS_MARKERS)  # (n,)
    for shape in np.unique(shape_of):
        members = shape_of == shape
        ax.scatter(
            X[members, 0],
            X[members, 1],
            s=size,
            marker=CLASS_MARKERS[shape],
            c="white" if hollow else colours[members],
            edgecolors=colours[members] if hollow else "#202020",
            linewidths=1.4 if hollow else 0.5,
            zorder=3 if hollow else 2,
        )


def _class_handles(classes: Sequence[Label], size: float) -> list[Line2D]:
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=class_marker(i),
            markersize=size,
            markerfacecolor=class_colour(i),
            markeredgecolor="#202020",
            markeredgewidth=0.5,
            label=_plain(label),
        )
        for i, label in enumerate(classes)
    ]


def _legend_right(ax: Axes, handles: list[Line2D], title: str | None = None) -> Legend:
    """The legend outside the axes, to their right (`_fit_margins` makes room for it)."""
    return ax.legend(
        handles=handles,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )


def _split_handles(size: float, train: bool, test: bool) -> list[Line2D]:
    """Legend entries for the training (filled) and test (hollow) points shown."""
    styles = [
        ("train", "#808080", "#202020", 0.5, train),
        ("test", "white", "#808080", 1.4, test),
    ]
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=size,
            markerfacecolor=face,
            markeredgecolor=edge,
            markeredgewidth=edge_width,
            label=label,
        )
        for label, face, edge, edge_width, shown in styles
        if shown
    ]


# --- datasets --------------------------------------------------------------------------------


def dataset_figure(
    dataset: Dataset, *, title: str | None = None, width: int = 640, height: int = 480
) -> Figure:
    """Scatter plot of a dataset coloured by class: its first two features (a strip plot of
    feature against class when it has only one). A regression dataset's points are coloured by
    their (first) target on a diverging map with a colour bar (one feature: target against
    feature)."""
    _check_pixels(width, height)
    figure = _new_figure(width, height)
    ax = figure.add_subplot()
    if dataset.regression:
        _regression_dataset(figure, ax, dataset, title)
        return figure
    if dataset.n_features >= 2:
        X = np.asarray(dataset.X[:, :2])
        ax.set_ylabel(_plain(dataset.feature_names[1]))
    else:
        # one feature: spread the classes over the vertical axis, jittered deterministically
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=dataset.n_samples)
        X = np.column_stack([dataset.X[:, 0], dataset.y + jitter])
        ax.set_yticks(range(dataset.n_classes), [_plain(c) for c in dataset.classes])
        ax.set_ylabel("class")
    ax.set_xlabel(_plain(dataset.feature_names[0]))
    _scatter_classes(ax, X, dataset.y, hollow=False, size=22)
    ax.set_xlim(*_padded_range(X[:, 0]))
    ax.set_ylim(*_padded_range(X[:, 1]))
    ax.grid(True, color="#e0e0e0", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)

    if title is None:
        title = f"{dataset.n_samples} points, {dataset.n_classes} classes"
    else:
        title = _plain(title)
    if dataset.n_features > 2:
        title += f" (features 1 and 2 of {dataset.n_features})"
    ax.set_title(title, fontsize=11)

    legend = _legend_right(ax, _class_handles(dataset.classes, 7), title="class")
    _fit_margins(figure, ax, legend=legend)
    return figure


dataset_png = _as_png(dataset_figure)


def _regression_dataset(figure: Figure, ax: Axes, dataset: Dataset, title: str | None) -> None:
    target = dataset.y[:, 0]  # (n,) the first target
    target_name = _plain(dataset.target_names[0])
    if dataset.n_features >= 2:
        X = np.asarray(dataset.X[:, :2])
        ax.set_ylabel(_plain(dataset.feature_names[1]))
        norm = _target_norm([target])
        points = ax.scatter(
            X[:, 0], X[:, 1], c=target, cmap=TARGET_CMAP, norm=norm, s=22,
            edgecolors="#202020", linewidths=0.5, zorder=2,
        )  # fmt: skip
        figure.colorbar(points, ax=ax, fraction=0.05, pad=0.02).set_label(target_name)
    else:
        X = np.column_stack([dataset.X[:, 0], target])
        ax.scatter(X[:, 0], X[:, 1], s=22, c=LINE_COLOURS[0], edgecolors="#202020",
                   linewidths=0.5, zorder=2)  # fmt: skip
        ax.set_ylabel(target_name)
    ax.set_xlabel(_plain(dataset.feature_names[0]))
    ax.set_xlim(*_padded_range(X[:, 0]))
    ax.set_ylim(*_padded_range(X[:, 1]))
    ax.grid(True, color="#e0e0e0", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    text = f"{dataset.n_samples} points, target {target_name}" if title is None else _plain(title)
    if dataset.n_features > 2:
        text += f" (features 1 and 2 of {dataset.n_features})"
    ax.set_title(text, fontsize=11)


# --- decision boundaries ---------------------------------------------------------------------


def decision_boundary_grid(
    model: Model,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    resolution: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's class probabilities on a resolution x resolution grid of raw feature values.

    Returns xx, yy (resolution, resolution) and proba (resolution, resolution, n_classes);
    row i of each holds y = yy[i, 0], from y_range[0] up.
    """
    if model.n_features != 2:
        raise InvalidInput(
            f"the model has {model.n_features} features and decision boundaries need 2"
        )
    _check_resolution(resolution)
    for name, (low, high) in (("x_range", x_range), ("y_range", y_range)):
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InvalidInput(f"{name} must be finite with low < high, got ({low}, {high})")
    xs = np.linspace(x_range[0], x_range[1], resolution)
    ys = np.linspace(y_range[0], y_range[1], resolution)
    xx, yy = np.meshgrid(xs, ys)  # (resolution, resolution) each
    grid = np.column_stack([xx.ravel(), yy.ravel()])  # (resolution², 2)
    proba = model.predict_proba(grid).reshape(resolution, resolution, model.n_classes)
    return xx, yy, proba


def region_image(proba: np.ndarray) -> np.ndarray:
    """RGBA image (rows, cols, 4) uint8 of the predicted class, shaded by the margin between the
    two largest probabilities: pale on the boundary, strong where the model is sure."""
    winner = proba.argmax(axis=-1)  # (rows, cols)
    if proba.shape[-1] == 2:
        margin = np.abs(proba[..., 0] - proba[..., 1])
    else:
        top_two = np.partition(proba, -2, axis=-1)[..., -2:]
        margin = top_two[..., 1] - top_two[..., 0]
    strength = REGION_MIN_STRENGTH + (REGION_MAX_STRENGTH - REGION_MIN_STRENGTH) * margin
    strength = strength.astype(np.float32)[..., None]  # (rows, cols, 1)
    colour = _PALETTE_RGB[winner % len(CLASS_COLOURS)]  # (rows, cols, 3)
    image = np.full((*winner.shape, 4), 255, dtype=np.uint8)
    # RGBA uint8 is what Agg draws without converting: markedly faster than RGB or floats
    image[..., :3] = 255.0 - (255.0 - colour) * strength
    return image


def _draw_boundary(
    ax: Axes,
    model: Model,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    resolution: int,
    show: Show,
    marker_size: float,
) -> None:
    x_range, y_range = _view(model, np.concatenate([train[0], test[0]]))
    _, _, proba = decision_boundary_grid(model, x_range, y_range, resolution)
    # pixel centres sit on the grid points
    dx = (x_range[1] - x_range[0]) / (resolution - 1) / 2
    dy = (y_range[1] - y_range[0]) / (resolution - 1) / 2
    ax.imshow(
        region_image(proba),
        origin="lower",
        extent=(x_range[0] - dx, x_range[1] + dx, y_range[0] - dy, y_range[1] + dy),
        aspect="auto",
        interpolation="nearest",  # a smooth 200x200 grid needs no smoothing, and is faster
        zorder=0,
    )
    if show in ("all", "train"):
        _scatter_classes(ax, *train, hollow=False, size=marker_size)
    if show in ("all", "test"):
        _scatter_classes(ax, *test, hollow=True, size=marker_size)
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)


def _boundary_title(model: Model, train_accuracy: float | None, test_accuracy: float | None) -> str:
    parts = [architecture_label(model)]
    if train_accuracy is not None:
        parts.append(f"train {_percent(train_accuracy)}")
    if test_accuracy is not None:
        parts.append(f"test {_percent(test_accuracy)}")
    return " · ".join(parts)


def _check_show(show: str) -> None:
    if show not in ("all", "train", "test", "none"):
        raise InvalidInput(f"show must be one of all, train, test, none; got {show!r}")


def decision_boundary_figure(
    model: Model,
    *,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    width: int = 640,
    height: int = 480,
    resolution: int = 200,
    show: Show = "all",
    title: str | None = None,
) -> Figure:
    """Class regions of a 2-feature model with its training (filled) and test (hollow) points.

    The default title names the architecture and the accuracy on the points given. A
    regression model is drawn as its prediction surface (`_draw_surface`; y_* are raw targets
    then, and the title gives R²).
    """
    if model.n_features != 2:
        raise InvalidInput(
            f"the model has {model.n_features} features and decision boundaries need 2"
        )
    _check_pixels(width, height)
    _check_resolution(resolution)
    _check_show(show)
    if model.regression:
        figure, _, *sides = _regression_canvas(
            model, X_train, y_train, X_test, y_test, width, height
        )
        ax = _draw_surface(figure, model, (sides[0], sides[1]), resolution, show)
        _regression_title(ax, model, sides[0], sides[1], title)
        return figure
    train = _points(model, X_train, y_train, "train")
    test = _points(model, X_test, y_test, "test")

    figure = _new_figure(width, height)
    ax = figure.add_subplot()
    _draw_boundary(ax, model, train, test, resolution=resolution, show=show, marker_size=24)
    names = model.feature_names or ("x1", "x2")
    ax.set_xlabel(_plain(names[0]))
    ax.set_ylabel(_plain(names[1]))
    if title is None:
        title = _boundary_title(model, _accuracy(model, *train), _accuracy(model, *test))
    ax.set_title(_plain(title), fontsize=11)

    handles = _class_handles(model.classes, 7) + _split_handles(
        7,
        train=show in ("all", "train") and train[0].shape[0] > 0,
        test=show in ("all", "test") and test[0].shape[0] > 0,
    )
    legend = _legend_right(ax, handles)
    _fit_margins(figure, ax, legend=legend)
    return figure


decision_boundary_png = _as_png(decision_boundary_figure)


def boundary_animation_gif(
    figure: Figure, frames: Sequence[tuple[Model, str]], *, resolution: int
) -> bytes:
    """An animated GIF (looping) of `figure`, a `decision_boundary_figure` drawn at
    `resolution`, redrawn for each (model, title) of `frames`: the model's class regions over the
    same view and the title, everything else kept (so each frame is what
    decision_boundary_figure draws for that model and title, ~5x faster than drawing it anew).
    The models must have the first's classes and scaler. FRAME_MS a frame, LAST_FRAME_MS on the
    last; at most MAX_FRAMES frames of at most MAX_ANIMATION_PIXELS a side."""
    if not frames:
        raise InvalidInput("an animation needs at least one frame")
    if len(frames) > MAX_FRAMES:
        raise InvalidInput(f"an animation has at most {MAX_FRAMES} frames, got {len(frames)}")
    width, height = (round(float(v)) for v in figure.get_size_inches() * DPI)
    if max(width, height) > MAX_ANIMATION_PIXELS:
        raise InvalidInput(
            f"an animation's frames are at most {MAX_ANIMATION_PIXELS} pixels a side, "
            f"got {width}x{height}"
        )
    ax = figure.axes[0]
    (regions,) = ax.get_images()
    x_range, y_range = ax.get_xlim(), ax.get_ylim()
    images: list[Image.Image] = []
    for model, title in frames:
        _, _, proba = decision_boundary_grid(model, x_range, y_range, resolution)
        regions.set_data(region_image(proba))
        ax.set_title(_plain(title), fontsize=11)
        # fast octree: a few flat colours and antialiased text, ~7x faster than median cut
        images.append(_rgb_image(figure).quantize(method=Image.Quantize.FASTOCTREE))
    durations = [FRAME_MS] * (len(images) - 1) + [LAST_FRAME_MS]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="gif", save_all=True, append_images=images[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


def _neuron_scale(activation: str, values: np.ndarray) -> Normalize:
    """Colour limits of one layer's activations: the activation's own range when it is bounded
    (tanh -1..1, sigmoid 0..1), else symmetric about 0 over the values drawn."""
    if activation == "tanh":
        return Normalize(-1.0, 1.0)
    if activation == "sigmoid":
        return Normalize(0.0, 1.0)
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    largest = largest if math.isfinite(largest) and largest > 0 else 1.0
    return Normalize(-largest, largest)


def neurons_figure(
    model: Model,
    *,
    X: np.ndarray | None = None,
    panel_size: int = 110,
    resolution: int = 60,
) -> Figure:
    """One panel per hidden unit: its activation over the plane of a 2-feature model, a row
    of panels (wrapping after NEURON_COLUMNS) per hidden layer, input side first, each layer
    with its colour bar. The plane is the decision boundary's view of the points `X` (raw
    features; none: where the model's training data lay), which are not drawn."""
    if model.n_features != 2:
        raise InvalidInput(
            f"the model has {model.n_features} features and hidden-unit panels need 2"
        )
    widths = [int(b.shape[0]) for b in model.biases[:-1]]  # units per hidden layer
    if not widths:
        raise InvalidInput("the model has no hidden layer: there are no hidden units to draw")
    if sum(widths) > MAX_PANELS:
        raise InvalidInput(
            f"the model has {sum(widths)} hidden units; at most {MAX_PANELS} panels fit in "
            "one picture"
        )
    _check_resolution(resolution)
    _check_pixels(panel_size, panel_size)
    columns = min(max(widths), NEURON_COLUMNS)
    layer_rows = [math.ceil(units / columns) for units in widths]
    # a colour bar 12 px wide after a 10 px gap, 40 px for its labels
    bar_px, left_px, top_px, title_px, right_px = 12, 34, 36, 16, 40
    width = left_px + columns * panel_size + 10 + bar_px + right_px
    height = top_px + sum(layer_rows) * (panel_size + title_px) + 8
    if width > MAX_PIXELS or height > MAX_PIXELS:
        raise InvalidInput(
            f"{sum(layer_rows)} rows of {columns} panels of {panel_size} pixels make a "
            f"{width}x{height} picture; the limit is {MAX_PIXELS} on each side: use smaller panels"
        )
    points = np.empty((0, 2)) if X is None else _points(model, X, np.zeros(len(X), int), "X")[0]
    x_range, y_range = _view(model, points)
    xs = np.linspace(x_range[0], x_range[1], resolution)
    ys = np.linspace(y_range[0], y_range[1], resolution)
    xx, yy = np.meshgrid(xs, ys)  # (resolution, resolution) each
    layers = model.hidden_activations(np.column_stack([xx.ravel(), yy.ravel()]))

    figure = _new_figure(width, height)
    grid = figure.add_gridspec(
        sum(layer_rows),
        columns + 1,
        width_ratios=[1.0] * columns + [bar_px / panel_size],
        left=left_px / width,
        right=1 - right_px / width,
        top=1 - top_px / height,
        bottom=8 / height,
        hspace=title_px / panel_size,
        wspace=6 / panel_size,
    )
    first_row = 0
    for layer, (activations, rows) in enumerate(zip(layers, layer_rows, strict=True), start=1):
        scale = _neuron_scale(model.activation, activations)  # activations: (resolution², units)
        image = None
        for unit in range(activations.shape[1]):
            row, column = first_row + unit // columns, unit % columns
            ax = figure.add_subplot(grid[row, column])
            image = ax.imshow(
                activations[:, unit].reshape(resolution, resolution),
                origin="lower",
                extent=(*x_range, *y_range),
                aspect="auto",
                interpolation="nearest",
                cmap=NEURON_COLOURS,
                norm=scale,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"unit {unit + 1}", fontsize=7.5, pad=2)
            if column == 0 and row == first_row:
                ax.set_ylabel(f"layer {layer}", fontsize=8.5)
        assert image is not None  # a hidden layer has at least one unit
        bar = figure.add_subplot(grid[first_row : first_row + rows, columns])
        colourbar = figure.colorbar(image, cax=bar)
        colourbar.ax.tick_params(labelsize=7)
        first_row += rows
    figure.suptitle(
        _plain(f"Hidden units of {architecture_label(model)}: activation over the plane"),
        fontsize=10,
        y=1 - 6 / height,
        va="top",
    )
    return figure


neurons_png = _as_png(neurons_figure)


def default_columns(n_panels: int) -> int:
    """One row up to 3 panels; beyond, about square, preferring the wider grid with the fewest
    empty cells (7 panels: 4 + 3, not 3 + 3 + 1)."""
    if n_panels <= 3:
        return n_panels
    square = math.ceil(math.sqrt(n_panels))
    return min((square + 1, square), key=lambda c: c * math.ceil(n_panels / c) - n_panels)


def panels_figure(
    panels: Sequence[PanelSpec],
    *,
    columns: int | None = None,
    panel_size: tuple[int, int] = (320, 280),
    resolution: int = 120,
) -> Figure:
    """A grid of decision-boundary panels, one per model, each titled (by default with its
    architecture and accuracy); one legend below when every model has the same classes."""
    if not panels:
        raise InvalidInput("panels_png needs at least one panel")
    if len(panels) > MAX_PANELS:
        raise InvalidInput(f"at most {MAX_PANELS} panels fit in one picture, got {len(panels)}")
    _check_pixels(*panel_size)
    _check_resolution(resolution)
    n = len(panels)
    if columns is None:
        columns = default_columns(n)
    if isinstance(columns, bool) or not isinstance(columns, int) or not 1 <= columns <= n:
        raise InvalidInput(f"columns must be between 1 and {n} (the panel count), got {columns}")
    rows = math.ceil(n / columns)
    shared_classes = all(p.model.classes == panels[0].model.classes for p in panels)
    legend_px = 34 if shared_classes else 0
    width, height = columns * panel_size[0], rows * panel_size[1] + legend_px
    if width > MAX_PIXELS or height > MAX_PIXELS:
        raise InvalidInput(
            f"{rows} x {columns} panels of {panel_size[0]}x{panel_size[1]} pixels make a "
            f"{width}x{height} picture; the limit is {MAX_PIXELS} on each side: "
            "use smaller panels or fewer"
        )
    for i, panel in enumerate(panels):
        if panel.model.n_features != 2:
            raise InvalidInput(
                f"panel {i}: the model has {panel.model.n_features} features and decision "
                "boundaries need 2"
            )

    figure = _new_figure(width, height)
    grid = figure.add_gridspec(
        rows,
        columns,
        left=6 / width,
        right=1 - 6 / width,
        top=1 - 22 / height,
        bottom=(legend_px + 6) / height,
        hspace=26 / (panel_size[1] - 28),
        wspace=12 / (panel_size[0] - 12),
    )
    any_train = any_test = False
    for i, panel in enumerate(panels):
        train = _points(panel.model, panel.X_train, panel.y_train, "train")
        test = _points(panel.model, panel.X_test, panel.y_test, "test")
        any_train |= train[0].shape[0] > 0
        any_test |= test[0].shape[0] > 0
        ax = figure.add_subplot(grid[i // columns, i % columns])
        _draw_boundary(
            ax, panel.model, train, test, resolution=resolution, show="all", marker_size=10
        )
        ax.set_xticks([])
        ax.set_yticks([])
        title = panel.title
        if title is None:
            title = _boundary_title(
                panel.model, _accuracy(panel.model, *train), _accuracy(panel.model, *test)
            )
        ax.set_title(_plain(title), fontsize=8.5, pad=4)
        if not shared_classes:
            ax.legend(handles=_class_handles(panel.model.classes, 5), fontsize=6, loc="upper right")
    if shared_classes:
        figure.legend(
            handles=_class_handles(panels[0].model.classes, 6)
            + _split_handles(6, train=any_train, test=any_test),
            loc="lower center",
            ncols=min(panels[0].model.n_classes + 2, 12),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )
    return figure


panels_png = _as_png(panels_figure)


# --- loss curves -----------------------------------------------------------------------------


def _history_value(point: object, name: str) -> float | None:
    value = point.get(name) if isinstance(point, Mapping) else getattr(point, name, None)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"history {name} must be a number, got {value!r}") from None


def _history_arrays(
    history: Sequence[object], label: str = "history"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """epochs, train losses, test losses (None without a test set); non-finite losses -> NaN."""
    if len(history) == 0:
        raise InvalidInput(f"{label} is empty: there is no loss curve to draw")
    epochs, train, test = [], [], []
    for point in history:
        epoch = _history_value(point, "epoch")
        train_loss = _history_value(point, "train_loss")
        if epoch is None or train_loss is None:
            raise InvalidInput(f"{label} points need epoch and train_loss, got {point!r}")
        epochs.append(epoch)
        train.append(train_loss)
        test_loss = _history_value(point, "test_loss")
        test.append(math.nan if test_loss is None else test_loss)
    test_array = np.array(test)
    train_array = np.array(train)
    train_array[~np.isfinite(train_array)] = np.nan
    test_array[~np.isfinite(test_array)] = np.nan
    return (
        np.array(epochs),
        train_array,
        None if np.isnan(test_array).all() else test_array,
    )


def _minor_log_label(ax: Axes, value: float) -> str:
    low, high = ax.get_ylim()
    if value <= 0 or low <= 0 or math.log10(high / low) > 2:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return f"{value:g}" if mantissa in (2, 3, 5) else ""


def _loss_axes(ax: Axes, log_scale: bool) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy)" + (", log scale" if log_scale else ""))
    if log_scale:
        ax.set_yscale("log")
        # 0.05 and 0.3 read better than 5x10^-2 and 3x10^-1; minor ticks get labels (2, 3, 5
        # times a power of ten) only while the axis spans less than two decades
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: _minor_log_label(ax, value)))
    ax.grid(True, which="major", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)


def loss_curve_figure(
    history: Sequence[object],
    *,
    log_scale: bool = False,
    width: int = 640,
    height: int = 480,
    title: str | None = None,
) -> Figure:
    """Training loss (solid) and test loss (dashed, when recorded) by epoch; the lowest test
    loss is marked."""
    _check_pixels(width, height)
    epochs, train, test = _history_arrays(history)
    figure = _new_figure(width, height)
    ax = figure.add_subplot()
    _loss_axes(ax, log_scale)
    ax.plot(epochs, train, color=CLASS_COLOURS[0], linewidth=1.8, label="train")
    parts = []
    if np.isfinite(train).any():
        parts.append(f"final train loss {train[np.isfinite(train)][-1]:.4g}")
    if test is not None:
        ax.plot(epochs, test, color=CLASS_COLOURS[1], linewidth=1.8, linestyle="--", label="test")
        best = int(np.nanargmin(test))
        ax.plot(
            [epochs[best]],
            [test[best]],
            marker="o",
            markersize=6,
            color=CLASS_COLOURS[1],
            linestyle="none",
            label=f"lowest test loss {test[best]:.4g} (epoch {epochs[best]:g})",
        )
        parts.append(f"test {test[np.isfinite(test)][-1]:.4g}")
    if not log_scale:
        ax.set_ylim(bottom=0.0)  # cross-entropy is never negative: show how far from zero
    ax.legend(fontsize=9, loc="best")
    ax.set_title(
        _plain(title) if title is not None else "Loss by epoch: " + ", ".join(parts), fontsize=11
    )
    _fit_margins(figure, ax)
    return figure


loss_curve_png = _as_png(loss_curve_figure)


def curves_figure(
    series: Sequence[tuple[str, Sequence[object]]],
    *,
    log_scale: bool = False,
    width: int = 800,
    height: int = 500,
    title: str | None = None,
) -> Figure:
    """Loss curves of several configurations on one chart: one colour each, train solid and test
    dashed, with a legend of configurations."""
    _check_pixels(width, height)
    if not series:
        raise InvalidInput("curves_png needs at least one (label, history) series")
    if len(series) > MAX_SERIES:
        raise InvalidInput(f"at most {MAX_SERIES} series fit on one chart, got {len(series)}")
    figure = _new_figure(width, height)
    ax = figure.add_subplot()
    _loss_axes(ax, log_scale)
    handles: list[Line2D] = []
    any_test = False
    styles = ("-", "-.", ":")
    for i, (label, history) in enumerate(series):
        epochs, train, test = _history_arrays(history, f"series {label!r}")
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        # once the colours run out they repeat: the train line style changes instead
        train_style = styles[(i // len(LINE_COLOURS)) % len(styles)]
        (line,) = ax.plot(
            epochs, train, color=colour, linewidth=1.6, linestyle=train_style, label=_plain(label)
        )
        handles.append(line)
        if test is not None:
            any_test = True
            ax.plot(epochs, test, color=colour, linewidth=1.3, linestyle="--", alpha=0.9)
    if any_test:
        handles.append(Line2D([], [], color="#404040", linestyle="-", label="train"))
        handles.append(Line2D([], [], color="#404040", linestyle="--", label="test"))
    legend = _legend_right(ax, handles)
    ax.set_title(_plain(title) if title is not None else "Loss by epoch", fontsize=11)
    _fit_margins(figure, ax, legend=legend)
    return figure


curves_png = _as_png(curves_figure)


# --- regression --------------------------------------------------------------------------------

# Targets are drawn on a diverging map, its neutral middle at the middle of the values shown:
# red above, blue below (ColorBrewer's RdBu, reversed), as the Playground shades its outputs.
TARGET_CMAP = "RdBu_r"
TRAIN_MARKER, TEST_MARKER = "o", "D"  # regression points carry their colour: shapes tell sides


def _targets(
    model: Model, X: np.ndarray | None, y: np.ndarray | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (n, n_features) raw points and (n, n_targets) raw targets; empty when X is
    None. A 1-D y is one target."""
    if not model.regression:
        raise InvalidInput("the model is a classifier; regression pictures need a regression one")
    width = model.n_outputs
    if X is None:
        if y is not None:
            raise InvalidInput(f"y_{name} given without X_{name}")
        return np.empty((0, model.n_features)), np.empty((0, width))
    if y is None:
        raise InvalidInput(f"X_{name} given without y_{name}")
    points = np.asarray(X, dtype=np.float64)
    targets = np.asarray(y, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets.reshape(-1, 1)
    if points.shape[0] == 0 and targets.size == 0:  # no points to draw
        return np.empty((0, model.n_features)), np.empty((0, width))
    if points.ndim != 2 or points.shape[1] != model.n_features:
        raise InvalidInput(f"X_{name} must have shape (n, {model.n_features}), got {points.shape}")
    if targets.shape != (points.shape[0], width):
        raise InvalidInput(
            f"y_{name} must have shape ({points.shape[0]}, {width}), got {targets.shape}"
        )
    if not (np.isfinite(points).all() and np.isfinite(targets).all()):
        raise InvalidInput(f"X_{name} and y_{name} must be finite numbers (no NaN or Infinity)")
    return points, targets


def _r2(model: Model, X: np.ndarray, y: np.ndarray) -> float | None:
    """The mean over targets of 1 - SSE/SST (scikit-learn's r2_score), None without points or
    with a constant target."""
    if X.shape[0] < 2:
        return None
    residual = ((model.predict_values(X) - y) ** 2).sum(axis=0)  # (K,)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if (total == 0).any():
        return None
    return float(np.mean(1.0 - residual / total))


Sides = tuple[np.ndarray, np.ndarray]  # (points (n, n_features), targets (n, n_targets))


def _regression_canvas(
    model: Model,
    X_train: np.ndarray | None,
    y_train: np.ndarray | None,
    X_test: np.ndarray | None,
    y_test: np.ndarray | None,
    width: int,
    height: int,
) -> tuple[Figure, Axes, Sides, Sides]:
    """A regression picture's figure, its axes and its validated training and test points."""
    _check_pixels(width, height)
    train = _targets(model, X_train, y_train, "train")
    test = _targets(model, X_test, y_test, "test")
    figure = _new_figure(width, height)
    return figure, figure.add_subplot(), train, test


def _regression_title(ax: Axes, model: Model, train: Sides, test: Sides, title: str | None) -> None:
    """`title`, or by default the architecture and R² on the points given."""
    if title is None:
        widths = "-".join(str(w) for w in model.architecture)
        kind = "linear regression" if len(model.weights) == 1 else model.activation
        parts = [f"{widths} {kind}"]
        for name, (X, y) in (("train", train), ("test", test)):
            r2 = _r2(model, X, y)
            if r2 is not None:
                parts.append(f"{name} R² {r2:.3f}")
        title = " · ".join(parts)
    ax.set_title(_plain(title), fontsize=11)


def _target_norm(values: Sequence[np.ndarray]) -> matplotlib.colors.Normalize:
    """A colour scale over every value shown, its middle at their range's middle."""
    finite = np.concatenate([np.ravel(v) for v in values])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if high <= low:
        low, high = low - 1.0, high + 1.0
    return matplotlib.colors.Normalize(vmin=low, vmax=high)


def _scatter_targets(
    ax: Axes,
    X: np.ndarray,
    values: np.ndarray,
    norm: matplotlib.colors.Normalize,
    *,
    test: bool,
    size: float,
) -> None:
    """Points coloured by their target on the diverging map: training points round with a dark
    edge, test points diamonds with a thick black one."""
    if X.shape[0] == 0:
        return
    ax.scatter(
        X[:, 0],
        X[:, 1],
        c=values,
        cmap=TARGET_CMAP,
        norm=norm,
        s=size * (1.3 if test else 1.0),
        marker=TEST_MARKER if test else TRAIN_MARKER,
        edgecolors="black" if test else "#202020",
        linewidths=1.3 if test else 0.5,
        zorder=3 if test else 2,
    )


def _side_handles(size: float, train: bool, test: bool) -> list[Line2D]:
    """Legend entries for the sides shown: training circles, test diamonds."""
    styles = [("train", TRAIN_MARKER, 0.5, train), ("test", TEST_MARKER, 1.3, test)]
    return [
        Line2D([], [], linestyle="none", marker=marker, markersize=size, markerfacecolor="#c0c0c0",
               markeredgecolor="#202020", markeredgewidth=edge, label=label)
        for label, marker, edge, shown in styles
        if shown
    ]  # fmt: skip


def surface_grid(
    model: Model,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    resolution: int,
) -> np.ndarray:
    """A 2-feature regression model's first target on a resolution x resolution grid of raw
    feature values, (resolution, resolution), row i at y = y_range[0] + i * step."""
    if model.n_features != 2:
        raise InvalidInput(f"the model has {model.n_features} features and surfaces need 2")
    _check_resolution(resolution)
    xs = np.linspace(x_range[0], x_range[1], resolution)
    ys = np.linspace(y_range[0], y_range[1], resolution)
    xx, yy = np.meshgrid(xs, ys)  # (resolution, resolution) each
    grid = np.column_stack([xx.ravel(), yy.ravel()])  # (resolution², 2)
    return model.predict_values(grid)[:, 0].reshape(resolution, resolution)


def _draw_surface(
    figure: Figure, model: Model, sides: tuple[Sides, Sides], resolution: int, show: Show
) -> Axes:
    """A 2-feature regression model's prediction surface (its first target) as a heatmap on a
    diverging colour map, with the points coloured by their target on the same scale (training
    circles, test diamonds), a colour bar and a legend of the sides; returns the axes."""
    ax = figure.axes[0]
    train, test = sides
    x_range, y_range = _view(model, np.concatenate([train[0], test[0]]))
    surface = surface_grid(model, x_range, y_range, resolution)
    shown_train = show in ("all", "train") and train[0].shape[0] > 0
    shown_test = show in ("all", "test") and test[0].shape[0] > 0
    nothing = np.empty(0)
    norm = _target_norm(
        [
            surface,
            train[1][:, 0] if shown_train else nothing,
            test[1][:, 0] if shown_test else nothing,
        ]
    )
    dx = (x_range[1] - x_range[0]) / (resolution - 1) / 2
    dy = (y_range[1] - y_range[0]) / (resolution - 1) / 2
    image = ax.imshow(
        surface,
        origin="lower",
        extent=(x_range[0] - dx, x_range[1] + dx, y_range[0] - dy, y_range[1] + dy),
        aspect="auto",
        interpolation="nearest",
        cmap=TARGET_CMAP,
        norm=norm,
        alpha=0.75,
        zorder=0,
    )
    if shown_train:
        _scatter_targets(ax, train[0], train[1][:, 0], norm, test=False, size=24)
    if shown_test:
        _scatter_targets(ax, test[0], test[1][:, 0], norm, test=True, size=24)
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    names = model.feature_names or ("x1", "x2")
    ax.set_xlabel(_plain(names[0]))
    ax.set_ylabel(_plain(names[1]))
    target = model.target_names[0] if model.target_names else "target"
    colour_bar = figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    colour_bar.set_label(_plain(target))
    handles = _side_handles(7, shown_train, shown_test)
    legend = ax.legend(handles=handles, loc="upper right", fontsize=9) if handles else None
    if legend is not None:
        legend.set_zorder(5)
    return ax


def predicted_vs_actual_figure(
    model: Model,
    train: Sides | None = None,
    test: Sides | None = None,
    *,
    width: int = 640,
    height: int = 480,
    title: str | None = None,
) -> Figure:
    """A regression model's predictions against the actual targets, any number of features:
    one colour per target, training points filled, test points hollow, and the diagonal where
    a perfect model's points would lie. `train` and `test` are (raw points, raw targets)."""
    X_train, y_train = train or (None, None)
    X_test, y_test = test or (None, None)
    figure, ax, train, test = _regression_canvas(
        model, X_train, y_train, X_test, y_test, width, height
    )
    drawn: list[np.ndarray] = []
    for (X, y), hollow in ((train, False), (test, True)):
        if X.shape[0] == 0:
            continue
        predicted = model.predict_values(X)  # (n, K)
        for k in range(y.shape[1]):
            colour = LINE_COLOURS[k % len(LINE_COLOURS)]
            ax.scatter(
                y[:, k],
                predicted[:, k],
                s=22,
                c="white" if hollow else colour,
                edgecolors=colour if hollow else "#202020",
                linewidths=1.4 if hollow else 0.5,
                zorder=3 if hollow else 2,
            )
        drawn += [y.ravel(), predicted.ravel()]
    low, high = _padded_range(np.concatenate(drawn) if drawn else np.empty(0))
    ax.plot([low, high], [low, high], color="#606060", linewidth=1, linestyle="--", zorder=1)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.grid(True, color="#e0e0e0", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    _regression_title(ax, model, train, test, title)
    handles = _split_handles(7, train=train[0].shape[0] > 0, test=test[0].shape[0] > 0)
    if model.n_outputs > 1:
        handles += [
            Line2D([], [], linestyle="none", marker="o", markersize=7,
                   markerfacecolor=LINE_COLOURS[k % len(LINE_COLOURS)], markeredgecolor="#202020",
                   label=_plain(name))
            for k, name in enumerate(model.target_names)
        ]  # fmt: skip
    legend = _legend_right(ax, handles) if handles else None
    _fit_margins(figure, ax, legend=legend)
    return figure


predicted_vs_actual_png = _as_png(predicted_vs_actual_figure)
