"""Pictures: what they show (read back from the figures and the PNG pixels), validation, memory."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from engine import plotting
from engine.datasets import from_points, generate
from engine.errors import InvalidInput
from engine.hyperparameters import Hyperparameters
from engine.model import Model, Scaler
from engine.training import HistoryPoint

REPO = Path(__file__).resolve().parent.parent

# --- models built by hand --------------------------------------------------------------------


def _softmax_regression(W: list[list[float]], classes: tuple[object, ...] = (0, 1)) -> Model:
    """One linear layer: logits = X @ W."""
    weights = np.array(W, dtype=np.float64)
    return Model(
        weights=[weights],
        biases=[np.zeros(weights.shape[1])],
        activation="tanh",
        classes=classes,  # type: ignore[arg-type]
        hyperparameters=Hyperparameters(hidden_layers=[]),
        feature_names=tuple(f"f{i}" for i in range(weights.shape[0])),
    )


def _x_model() -> Model:
    """Class 1 where x > 0, class 0 where x < 0; sure a unit away from the boundary."""
    return _softmax_regression([[-5.0, 5.0], [0.0, 0.0]])


def _y_model() -> Model:
    """Class 1 where y > 0."""
    return _softmax_regression([[0.0, 0.0], [-5.0, 5.0]])


def _hidden_model() -> Model:
    rng = np.random.default_rng(0)
    return Model(
        weights=[rng.normal(size=(2, 3)), rng.normal(size=(3, 2))],
        biases=[np.zeros(3), np.zeros(2)],
        activation="relu",
        classes=("no", "yes"),
        hyperparameters=Hyperparameters(hidden_layers=[3], activation="relu"),
        feature_names=("width", "height"),
    )


SQUARE = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])  # (4, 2)


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))  # (height, width, 3)


def _legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def _region_colour(class_index: int, margin: float) -> np.ndarray:
    strength = np.float32(
        plotting.REGION_MIN_STRENGTH
        + (plotting.REGION_MAX_STRENGTH - plotting.REGION_MIN_STRENGTH) * margin
    )
    colour = plotting._PALETTE_RGB[class_index]
    return (255.0 - (255.0 - colour) * strength).astype(np.uint8)


# --- region colours ----------------------------------------------------------------------------


def test_region_image_shades_the_winner_by_its_margin() -> None:
    proba = np.array([[[1.0, 0.0], [0.5, 0.5], [0.1, 0.9]]])  # (1, 3, 2)
    image = plotting.region_image(proba)
    assert image.shape == (1, 3, 4) and image.dtype == np.uint8
    assert (image[..., 3] == 255).all()
    assert image[0, 0, :3].tolist() == _region_colour(0, 1.0).tolist()
    assert image[0, 1, :3].tolist() == _region_colour(0, 0.0).tolist()  # a tie: palest
    assert image[0, 2, :3].tolist() == _region_colour(1, 0.8).tolist()
    assert image[0, 1, :3].min() > image[0, 0, :3].max() - 1  # paler than a sure pixel


def test_region_image_uses_the_top_two_of_many_classes() -> None:
    proba = np.array([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]])
    image = plotting.region_image(proba)
    assert image[0, 0, :3].tolist() == _region_colour(1, 0.2).tolist()
    assert image[0, 1, :3].tolist() == _region_colour(2, 0.7).tolist()


def test_classes_past_the_palette_change_marker() -> None:
    n = len(plotting.CLASS_COLOURS)
    assert len(set(plotting.CLASS_COLOURS)) == n == 10
    assert plotting.class_colour(n) == plotting.class_colour(0)
    assert plotting.class_marker(n) != plotting.class_marker(0)
    assert plotting.class_marker(n - 1) == plotting.class_marker(0)


# --- decision boundaries -----------------------------------------------------------------------


def test_grid_evaluates_the_model_at_each_grid_point() -> None:
    model = _hidden_model()
    xx, yy, proba = plotting.decision_boundary_grid(model, (-2.0, 3.0), (0.0, 1.0), 11)
    assert xx.shape == yy.shape == (11, 11) and proba.shape == (11, 11, 2)
    assert xx[0].tolist() == np.linspace(-2, 3, 11).tolist()
    assert yy[:, 0].tolist() == np.linspace(0, 1, 11).tolist()
    np.testing.assert_array_equal(proba[3, 7], model.predict_proba([[xx[3, 7], yy[3, 7]]])[0])


def _pixel_at(figure: Figure, pixels: np.ndarray, x: float, y: float) -> np.ndarray:
    """The RGB pixel drawn at data point (x, y) of the figure's first axes."""
    column, row_from_bottom = figure.axes[0].transData.transform((x, y))
    return pixels[int(pixels.shape[0] - row_from_bottom), int(column)].astype(int)


@pytest.mark.parametrize(
    ("model", "class_0_at", "class_1_at"),
    [(_x_model(), (-0.8, 0.0), (0.8, 0.0)), (_y_model(), (0.0, -0.8), (0.0, 0.8))],
)
def test_regions_are_drawn_the_right_way_round(
    model: Model, class_0_at: tuple[float, float], class_1_at: tuple[float, float]
) -> None:
    """Left/right and bottom/top of the picture match the model's regions, in their colours."""
    figure = plotting.decision_boundary_figure(
        model, X_train=SQUARE, y_train=np.array([0, 0, 1, 1]), show="none"
    )
    pixels = _decode(plotting._png(figure))
    for label, point in ((0, class_0_at), (1, class_1_at)):
        proba = model.predict_proba([point])[0]
        expected = _region_colour(label, abs(proba[0] - proba[1]))
        assert np.abs(_pixel_at(figure, pixels, *point) - expected).max() <= 3
    assert _pixel_at(figure, pixels, *class_0_at)[2] > 150  # blue
    assert _pixel_at(figure, pixels, *class_1_at)[2] < 150  # orange


def test_boundary_title_legend_and_labels() -> None:
    model = _x_model()
    figure = plotting.decision_boundary_figure(
        model,
        X_train=SQUARE,
        y_train=np.array([0, 0, 1, 0]),  # the last point is on the wrong side: 3 of 4
        X_test=np.array([[-0.5, 0.0], [-0.5, 0.5]]),
        y_test=np.array([0, 1]),  # 1 of 2
    )
    ax = figure.axes[0]
    assert ax.get_title() == "2-2 softmax regression · train 75.0% · test 50.0%"
    assert _legend_labels(ax) == ["0", "1", "train", "test"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("f0", "f1")
    # ±10% of the points' extent
    np.testing.assert_allclose(ax.get_xlim(), (-1.2, 1.2))
    np.testing.assert_allclose(ax.get_ylim(), (-1.2, 1.2))


def test_boundary_title_names_hidden_layers_and_activation() -> None:
    model = _hidden_model()
    figure = plotting.decision_boundary_figure(model, X_train=SQUARE, y_train=np.array([0] * 4))
    title = figure.axes[0].get_title()
    assert title.startswith("2-3-2 relu · train ")
    assert "test" not in title
    assert _legend_labels(figure.axes[0]) == ["no", "yes", "train"]
    assert figure.axes[0].get_xlabel() == "width"


def test_boundary_custom_title() -> None:
    figure = plotting.decision_boundary_figure(
        _x_model(), X_train=SQUARE, y_train=np.zeros(4, dtype=int), title="moons, 3 units"
    )
    assert figure.axes[0].get_title() == "moons, 3 units"


def _collections(figure: Figure) -> list[PathCollection]:
    return [c for c in figure.axes[0].collections if isinstance(c, PathCollection)]


@pytest.mark.parametrize(
    ("show", "filled", "hollow", "legend"),
    [
        ("all", 1, 1, ["0", "1", "train", "test"]),
        ("train", 1, 0, ["0", "1", "train"]),
        ("test", 0, 1, ["0", "1", "test"]),
        ("none", 0, 0, ["0", "1"]),
    ],
)
def test_show_selects_the_points(show: str, filled: int, hollow: int, legend: list[str]) -> None:
    figure = plotting.decision_boundary_figure(
        _x_model(),
        X_train=SQUARE,
        y_train=np.array([0, 0, 1, 1]),
        X_test=SQUARE[:2] / 2,
        y_test=np.array([0, 1]),
        show=show,  # type: ignore[arg-type]
    )
    # (white face?, number of points) of each scatter: filled = the 4 training points
    drawn = sorted(
        (
            bool(np.allclose(np.asarray(c.get_facecolor())[0, :3], 1.0)),
            len(np.asarray(c.get_offsets())),
        )
        for c in _collections(figure)
    )
    assert drawn == [(False, 4)] * filled + [(True, 2)] * hollow
    assert _legend_labels(figure.axes[0]) == legend


def test_boundary_without_points_frames_the_scaler_range() -> None:
    model = _x_model()
    model.scaler = Scaler(mean=np.array([10.0, -5.0]), scale=np.array([2.0, 1.0]))
    no_points = np.empty((0, 2))
    figure = plotting.decision_boundary_figure(
        model, X_train=no_points, y_train=np.empty(0, dtype=np.int64)
    )
    ax = figure.axes[0]
    np.testing.assert_allclose(ax.get_xlim(), (5.0, 15.0))
    np.testing.assert_allclose(ax.get_ylim(), (-7.5, -2.5))
    assert ax.get_title() == "2-2 softmax regression"


def test_boundary_png_size_and_determinism() -> None:
    kwargs = {"X_train": SQUARE, "y_train": np.array([0, 0, 1, 1]), "width": 300, "height": 200}
    first = plotting.decision_boundary_png(_hidden_model(), **kwargs)  # type: ignore[arg-type]
    second = plotting.decision_boundary_png(_hidden_model(), **kwargs)  # type: ignore[arg-type]
    assert first == second
    assert _decode(first).shape == (200, 300, 3)


def test_the_png_says_where_its_plot_lies() -> None:
    X = np.array([[-2.0, -1.0], [3.0, 4.0]])
    picture = plotting.decision_boundary_png(
        _x_model(), X_train=X, y_train=np.array([0, 1]), width=400, height=300, show="none"
    )
    area = json.loads(Image.open(io.BytesIO(picture)).info[plotting.PLOT_AREA_KEY])
    # the data's extent plus 10% on each side: x -2..3, y -1..4
    assert area["x"] == pytest.approx([-2.5, 3.5])
    assert area["y"] == pytest.approx([-1.5, 4.5])
    assert (area["x_scale"], area["y_scale"]) == ("linear", "linear")
    pixels = np.asarray(Image.open(io.BytesIO(picture)).convert("RGB")).astype(int)
    left, top = round(area["left"]), round(area["top"])
    right, bottom = left + round(area["width"]), top + round(area["height"])
    assert 0 < left < right < 400 and 0 < top < bottom < 300
    # inside the box every pixel is shaded (no white), the class by x: class 0 left of x = 0
    inside = pixels[top + 2 : bottom - 2, left + 2 : right - 2]
    assert (inside.min(axis=2) < 250).all()
    zero = left + (0 - area["x"][0]) / (area["x"][1] - area["x"][0]) * area["width"]
    blue, orange = (plotting._rgb(colour) for colour in plotting.CLASS_COLOURS[:2])

    def nearer(pixel: np.ndarray) -> np.ndarray:
        strength = 255 - pixel  # distance from white, towards the class colour
        return np.array([np.dot(strength, 255 - blue), np.dot(strength, 255 - orange)])

    middle = (top + bottom) // 2
    assert nearer(pixels[middle, round(zero) - 6]).argmax() == 0
    assert nearer(pixels[middle, round(zero) + 6]).argmax() == 1
    # just outside, right of the frame and under the title: white
    assert (pixels[middle, right + 3] == 255).all()
    assert (pixels[top - 3, left + 3] == 255).all()


def test_panel_grids_have_no_single_plot_area() -> None:
    figure = plotting.panels_figure(
        [plotting.PanelSpec(_x_model(), np.zeros((1, 2)), np.array([0]))] * 2
    )
    assert plotting.plot_area(figure) is None


def test_user_text_is_never_parsed_as_mathtext() -> None:
    # unescaped, r"$\frac{$" makes matplotlib's mathtext parser raise while drawing
    model = _softmax_regression([[1.0, -1.0], [0.0, 0.0]], classes=(r"$\frac{$", "a$b"))
    model.feature_names = ("price $", r"$\sqrt{$")
    png = plotting.decision_boundary_png(
        model, X_train=SQUARE, y_train=np.array([0, 1, 0, 1]), title=r"cost in $ \$"
    )
    assert _decode(png).shape == (480, 640, 3)
    data = from_points(SQUARE, [r"$\frac{$", "x", "y", "z"], feature_names=["$a", "b$"])
    assert _decode(plotting.dataset_png(data)).shape == (480, 640, 3)


def test_boundary_needs_two_features() -> None:
    model = _softmax_regression([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(
        InvalidInput, match="the model has 3 features and decision boundaries need 2"
    ):
        plotting.decision_boundary_png(model, X_train=np.zeros((2, 3)), y_train=np.array([0, 1]))
    with pytest.raises(InvalidInput, match="the model has 3 features"):
        plotting.decision_boundary_grid(model, (0, 1), (0, 1), 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 99}, "width must be between 100 and 4096 pixels, got 99"),
        ({"height": 4097}, "height must be between 100 and 4096 pixels, got 4097"),
        ({"width": 640.0}, "width must be an integer number of pixels"),
        ({"resolution": 9}, "resolution must be between 10 and 1000 grid points per axis, got 9"),
        ({"resolution": 1001}, "got 1001"),
        ({"show": "some"}, "show must be one of all, train, test, none; got 'some'"),
        ({"X_train": np.zeros((4, 3))}, "X_train must have shape (n, 2), got (4, 3)"),
        ({"y_train": np.array([0, 1])}, "y_train must have shape (4,), got (2,)"),
        ({"y_train": np.array([0, 1, 2, 0])}, "y_train must hold class indices 0..1"),
        ({"y_train": np.array([0.0, 1.0, 0.0, 1.0])}, "y_train must hold class indices"),
        ({"X_train": np.array([[0, 0], [0, np.nan], [1, 1], [2, 2]])}, "X_train must be finite"),
        ({"y_test": np.array([0])}, "y_test given without X_test"),
    ],
)
def test_boundary_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"X_train": SQUARE, "y_train": np.array([0, 0, 1, 1])}
    arguments.update(kwargs)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        plotting.decision_boundary_png(_x_model(), **arguments)  # type: ignore[arg-type]


def test_grid_rejects_bad_ranges() -> None:
    with pytest.raises(InvalidInput, match=r"x_range must be finite with low < high, got \(1, 1\)"):
        plotting.decision_boundary_grid(_x_model(), (1, 1), (0, 1), 10)
    with pytest.raises(InvalidInput, match="y_range must be finite"):
        plotting.decision_boundary_grid(_x_model(), (0, 1), (0, float("inf")), 10)


# --- panels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "columns"),
    [(1, 1), (2, 2), (3, 3), (4, 2), (5, 3), (6, 3), (7, 4), (8, 4), (9, 3), (10, 5), (50, 9)],
)
def test_default_columns(n: int, columns: int) -> None:
    assert plotting.default_columns(n) == columns


def test_seven_panels_in_a_four_by_two_grid() -> None:
    y = np.array([0, 0, 1, 1])
    panels = [
        plotting.PanelSpec(_x_model(), SQUARE, y, title=f"hidden {h}") for h in (1, 2, 3, 4, 5, 20)
    ]
    panels.append(plotting.PanelSpec(_x_model(), SQUARE, y))
    figure = plotting.panels_figure(panels, panel_size=(200, 150), resolution=20)
    assert len(figure.axes) == 7
    assert [ax.get_title() for ax in figure.axes[:2]] == ["hidden 1", "hidden 2"]
    assert figure.axes[6].get_title() == "2-2 softmax regression · train 100.0%"
    # one shared legend below the grid
    assert len(figure.legends) == 1
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["0", "1", "train"]
    assert all(ax.get_legend() is None for ax in figure.axes)
    pixels = _decode(plotting._png(figure))
    assert pixels.shape == (2 * 150 + 34, 4 * 200, 3)


def test_panels_with_different_classes_get_their_own_legends() -> None:
    other = _softmax_regression([[-5.0, 5.0], [0.0, 0.0]], classes=("a", "b"))
    figure = plotting.panels_figure(
        [
            plotting.PanelSpec(_x_model(), SQUARE, np.array([0, 0, 1, 1])),
            plotting.PanelSpec(other, SQUARE, np.array([0, 0, 1, 1])),
        ],
        columns=1,
        panel_size=(200, 150),
        resolution=20,
    )
    assert not figure.legends
    assert _legend_labels(figure.axes[1]) == ["a", "b"]
    assert figure.get_size_inches().tolist() == [2.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": 0}, "columns must be between 1 and 2 (the panel count), got 0"),
        ({"columns": 3}, "got 3"),
        ({"panel_size": (99, 200)}, "width must be between 100 and 4096"),
        ({"panel_size": (4000, 200)}, "make a 8000x234 picture; the limit is 4096"),
        ({"resolution": 5}, "resolution must be between 10"),
    ],
)
def test_panels_reject_bad_layouts(kwargs: dict[str, object], message: str) -> None:
    panels = [plotting.PanelSpec(_x_model(), SQUARE, np.array([0, 0, 1, 1]))] * 2
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        plotting.panels_png(panels, **kwargs)  # type: ignore[arg-type]


def test_panels_check_each_panels_points() -> None:
    panel = plotting.PanelSpec(_x_model(), SQUARE, np.array([0, 0, 1, 1]), SQUARE / 2, None)
    with pytest.raises(InvalidInput, match="X_test given without y_test"):
        plotting.panels_png([panel])


def test_panels_name_the_panel_that_cannot_be_drawn() -> None:
    flat = _softmax_regression([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    panels = [
        plotting.PanelSpec(_x_model(), SQUARE, np.array([0, 0, 1, 1])),
        plotting.PanelSpec(flat, np.zeros((2, 3)), np.array([0, 1])),
    ]
    with pytest.raises(InvalidInput, match="panel 1: the model has 3 features"):
        plotting.panels_png(panels)
    with pytest.raises(InvalidInput, match="at least one panel"):
        plotting.panels_png([])


# --- datasets ----------------------------------------------------------------------------------


def test_dataset_picture_shows_the_first_two_features() -> None:
    data = from_points(
        [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]], ["b", "a", "b"], ["w", "x", "y", "z"]
    )
    figure = plotting.dataset_figure(data, title="mine")
    ax = figure.axes[0]
    assert ax.get_title() == "mine (features 1 and 2 of 4)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("w", "x")
    assert _legend_labels(ax) == ["a", "b"]
    points = np.concatenate([c.get_offsets() for c in _collections(figure)])
    assert sorted(map(tuple, points.tolist())) == [(0, 1), (1, 2), (2, 3)]


def test_dataset_picture_default_title_and_one_feature() -> None:
    spiral = generate("spiral", n_samples=40, n_classes=4)
    assert plotting.dataset_figure(spiral).axes[0].get_title() == "40 points, 4 classes"
    line = from_points([[0.0], [1.0], [2.0]], [0, 1, 1])
    ax = plotting.dataset_figure(line).axes[0]
    assert ax.get_ylabel() == "class"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    assert _decode(plotting.dataset_png(spiral, width=320, height=240)).shape == (240, 320, 3)


# --- loss curves -------------------------------------------------------------------------------

HISTORY = [
    HistoryPoint(
        epoch=e,
        train_loss=1 / e,
        train_accuracy=0.5,
        test_loss=loss,
        test_accuracy=0.5,
        learning_rate=0.1,
    )
    for e, loss in ((10, 0.9), (20, 0.4), (30, 0.6))
]


def test_loss_curve_lines_and_best_test_epoch() -> None:
    figure = plotting.loss_curve_figure(HISTORY)
    ax = figure.axes[0]
    train, test, best = ax.get_lines()
    assert train.get_xdata().tolist() == [10, 20, 30]  # type: ignore[union-attr]
    np.testing.assert_allclose(train.get_ydata(), [0.1, 0.05, 1 / 30])  # type: ignore[arg-type]
    assert test.get_linestyle() == "--"
    assert best.get_xdata().tolist() == [20] and best.get_ydata().tolist() == [0.4]  # type: ignore[union-attr]
    assert _legend_labels(ax) == ["train", "test", "lowest test loss 0.4 (epoch 20)"]
    assert ax.get_title() == "Loss by epoch: final train loss 0.03333, test 0.6"
    assert ax.get_ylim()[0] == 0.0


def test_loss_curve_accepts_dicts_like_history_points() -> None:
    as_dicts = [point.as_dict() for point in HISTORY]
    assert plotting.loss_curve_png(as_dicts) == plotting.loss_curve_png(HISTORY)


def test_loss_curve_without_test_loss_and_log_scale() -> None:
    history = [{"epoch": e, "train_loss": 2.0**-e, "test_loss": None} for e in range(1, 6)]
    ax = plotting.loss_curve_figure(history, log_scale=True, title="mine").axes[0]
    assert len(ax.get_lines()) == 1
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "mine"
    assert ax.get_ylabel() == "loss (cross-entropy), log scale"


def test_loss_curve_draws_non_finite_losses_as_gaps() -> None:
    history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": float("inf")}]
    ax = plotting.loss_curve_figure(history).axes[0]
    assert np.isnan(ax.get_lines()[0].get_ydata()[1])  # type: ignore[index]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "history is empty"),
        ([{"epoch": 1}], "history points need epoch and train_loss"),
        ([{"epoch": 1, "train_loss": "low"}], "history train_loss must be a number, got 'low'"),
        ([object()], "history points need epoch and train_loss"),
    ],
)
def test_loss_curve_rejects_bad_history(history: list[object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        plotting.loss_curve_png(history)


def test_curves_one_colour_per_configuration() -> None:
    series = [
        (f"lr {lr}", [{"epoch": e, "train_loss": lr / e, "test_loss": 2 * lr / e} for e in (1, 2)])
        for lr in (0.1, 0.2, 0.3)
    ]
    ax = plotting.curves_figure(series).axes[0]
    lines = ax.get_lines()
    assert len(lines) == 6
    train_lines, test_lines = lines[0::2], lines[1::2]
    assert len({str(line.get_color()) for line in train_lines}) == 3
    assert [t.get_color() for t in test_lines] == [t.get_color() for t in train_lines]
    assert all(line.get_linestyle() == "--" for line in test_lines)
    assert _legend_labels(ax) == ["lr 0.1", "lr 0.2", "lr 0.3", "train", "test"]
    no_test = [("a", [{"epoch": 1, "train_loss": 1.0}])]
    assert _legend_labels(plotting.curves_figure(no_test).axes[0]) == ["a"]


def test_curves_reject_bad_series() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        plotting.curves_png([])
    with pytest.raises(InvalidInput, match="at most 50 series"):
        plotting.curves_png([("a", [{"epoch": 1, "train_loss": 1.0}])] * 51)
    with pytest.raises(InvalidInput, match="series 'b' is empty"):
        plotting.curves_png([("a", [{"epoch": 1, "train_loss": 1.0}]), ("b", [])])


# --- memory ------------------------------------------------------------------------------------


def test_figures_are_freed_after_rendering() -> None:
    """No registry (pyplot's, a cache) keeps a figure alive once the caller drops it."""
    model = _x_model()
    y = np.array([0, 0, 1, 1])
    figures = [
        plotting.decision_boundary_figure(model, X_train=SQUARE, y_train=y, resolution=10),
        plotting.dataset_figure(from_points(SQUARE, [0, 0, 1, 1])),
        plotting.panels_figure([plotting.PanelSpec(model, SQUARE, y)], resolution=10),
        plotting.loss_curve_figure(HISTORY),
        plotting.curves_figure([("a", HISTORY)]),
    ]
    for figure in figures:
        plotting._png(figure)
    references = [weakref.ref(figure) for figure in figures]
    del figures, figure
    gc.collect()
    assert [reference() for reference in references] == [None] * 5


def render_growth_mb(renders: int = 20) -> float:
    """RSS growth of this process over `renders` decision-boundary renders, after as many to
    fill the caches and let the garbage collector's rhythm set in (MB): figures hold reference
    cycles, so up to a few dozen wait for a collection, ~7 MB at first in a fresh process."""
    process = psutil.Process()
    model = _hidden_model()
    y = np.array([0, 0, 1, 1])

    def render(count: int) -> None:
        for _ in range(count):
            plotting.decision_boundary_png(
                model, X_train=SQUARE, y_train=y, width=200, height=150, resolution=20
            )

    render(renders)
    gc.collect()
    before = process.memory_info().rss
    render(renders)
    gc.collect()
    return float((process.memory_info().rss - before) / 2**20)


def test_repeated_renders_do_not_grow_memory() -> None:
    """RSS levels off after a few renders (caches fill); keeping the figures instead grows it
    by ~0.7 MB per render at this size, so 20 renders would add ~14 MB. Measured in a fresh
    process: in the test session's, whatever earlier tests allocated and freed moves RSS."""
    code = "from tests.test_plotting import render_growth_mb; print(render_growth_mb())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    growth_mb = float(result.stdout.strip())
    assert growth_mb < 8, f"memory grew by {growth_mb:.1f} MB over 20 renders"


# --- hidden units and animations ------------------------------------------------------------


def test_hidden_activations_lead_to_the_predictions() -> None:
    """The last hidden layer's activations times the output layer, softmaxed, are
    predict_proba (the training forward pass) to rounding; relu's are never negative."""
    rng = np.random.default_rng(1)
    model = Model(
        weights=[rng.normal(size=(2, 4)), rng.normal(size=(4, 3)), rng.normal(size=(3, 2))],
        biases=[rng.normal(size=4), rng.normal(size=3), rng.normal(size=2)],
        activation="relu",
        classes=(0, 1),
        hyperparameters=Hyperparameters(hidden_layers=[4, 3], activation="relu"),
        scaler=Scaler(mean=np.array([1.0, -2.0]), scale=np.array([2.0, 0.5])),
    )
    X = rng.normal(size=(50, 2))
    layers = model.hidden_activations(X)
    assert [layer.shape for layer in layers] == [(50, 4), (50, 3)]
    assert all((layer >= 0).all() for layer in layers)
    first = np.maximum(model.scaler.transform(X) @ model.weights[0] + model.biases[0], 0)
    np.testing.assert_allclose(layers[0], first, rtol=1e-12)
    logits = layers[1] @ model.weights[2] + model.biases[2]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-10, atol=1e-12)
    assert _x_model().hidden_activations(X) == []


def test_neuron_panels_show_each_units_activation() -> None:
    """One panel per unit (a row per layer), coloured from the second class's colour (low)
    through white to the first's (high): a unit that is x itself (identity) is blue on the right,
    orange on the left, white in the middle."""
    model = Model(
        weights=[np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([[1.0], [0.0]]) @ np.ones((1, 2))],
        biases=[np.zeros(2), np.zeros(2)],
        activation="identity",
        classes=(0, 1),
        hyperparameters=Hyperparameters(hidden_layers=[2], activation="identity"),
    )
    figure = plotting.neurons_figure(model, X=SQUARE)
    panels = [ax for ax in figure.axes if ax.get_title().startswith("unit")]
    assert [ax.get_title() for ax in panels] == ["unit 1", "unit 2"]
    image = panels[0].get_images()[0]
    values = image.get_array()  # (resolution, resolution), rows from y low to high
    assert values[0, -1] > 0 > values[0, 0]
    rgb = (np.array(image.to_rgba(values)[..., :3]) * 255).round()
    np.testing.assert_allclose(rgb[0, -1], plotting._rgb(plotting.CLASS_COLOURS[0]), atol=1)
    np.testing.assert_allclose(rgb[0, 0], plotting._rgb(plotting.CLASS_COLOURS[1]), atol=1)
    # the second unit is -x: the mirror picture
    np.testing.assert_allclose(panels[1].get_images()[0].get_array(), -values)
    with pytest.raises(InvalidInput, match="no hidden layer"):
        plotting.neurons_figure(_x_model())


def test_an_animation_redraws_the_boundary_of_each_model() -> None:
    labels = np.array([0, 1, 0, 1])
    models = [(_x_model(), "epoch 1"), (_y_model(), "epoch 2"), (_x_model(), "epoch 3")]

    def figure(model: Model, title: str) -> Figure:
        return plotting.decision_boundary_figure(
            model, X_train=SQUARE, y_train=labels, width=200, height=150, resolution=40, title=title
        )

    gif = plotting.boundary_animation_gif(figure(*models[0]), models, resolution=40)
    image = Image.open(io.BytesIO(gif))
    assert (image.format, image.n_frames, image.size) == ("GIF", 3, (200, 150))
    durations = []
    for index, (model, title) in enumerate(models):
        image.seek(index)
        durations.append(image.info["duration"])
        # each frame is the figure drawn anew for its model and title, to the GIF's palette
        # (a pixel is off when a channel differs by more than the palette's rounding)
        frame = np.asarray(image.convert("RGB"), dtype=np.int64)
        off = [
            float((np.abs(frame - drawn).max(axis=2) > 40).mean())
            for drawn in (
                _decode(plotting._png(figure(candidate, title))).astype(np.int64)
                for candidate in (model, models[1 - index % 2][0])
            )
        ]
        assert off[0] < 0.005 and off[1] > 0.03, (
            off
        )  # its model's regions, not the other's (a quarter of the small axes)
    assert durations == [plotting.FRAME_MS, plotting.FRAME_MS, plotting.LAST_FRAME_MS]
    with pytest.raises(InvalidInput, match="at most 100 frames"):
        plotting.boundary_animation_gif(figure(*models[0]), models * 34, resolution=40)
    big = plotting.decision_boundary_figure(_x_model(), X_train=SQUARE, y_train=labels, width=1100)
    with pytest.raises(InvalidInput, match="at most 1024 pixels"):
        plotting.boundary_animation_gif(big, models, resolution=40)
    with pytest.raises(InvalidInput, match="at least one frame"):
        plotting.boundary_animation_gif(figure(*models[0]), [], resolution=40)


def _regressor() -> Model:
    """y = x1 - x2 exactly: a linear regression model with a target scaler."""

    return Model(
        weights=[np.array([[1.0], [-1.0]])],
        biases=[np.array([0.0])],
        activation="tanh",
        classes=(),
        hyperparameters=Hyperparameters(hidden_layers=[]),
        feature_names=("a", "b"),
        task="regression",
        target_names=("price",),
        target_scaler=Scaler(mean=np.array([10.0]), scale=np.array([2.0])),
    )


def test_a_regression_models_boundary_is_its_surface_with_a_colour_bar() -> None:
    model = _regressor()
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    y = model.predict_values(X)  # exact targets: R² 1
    figure = plotting.decision_boundary_figure(
        model, X_train=X[:3], y_train=y[:3], X_test=X[3:], y_test=y[3:], resolution=20
    )
    ax, colour_bar = figure.axes
    assert colour_bar.get_ylabel() == "price"
    assert ax.get_title() == "2-1 linear regression · train R² 1.000"  # one test point: no R²
    surface = ax.get_images()[0].get_array()
    # the heatmap is the model's surface: 10 + 2 (x1 - x2) at the grid's corners
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    assert surface[0, 0] == pytest.approx(10 + 2 * (x_low - y_low), abs=0.3)
    assert surface[-1, -1] == pytest.approx(10 + 2 * (x_high - y_high), abs=0.3)
    with pytest.raises(InvalidInput, match=r"y_train must have shape \(3, 1\)"):
        plotting.decision_boundary_figure(model, X_train=X[:3], y_train=np.zeros((3, 2)))


def test_predicted_against_actual_lies_on_the_diagonal_for_a_perfect_model() -> None:
    model = _regressor()
    X = np.random.default_rng(0).normal(size=(30, 2))
    y = model.predict_values(X)
    figure = plotting.predicted_vs_actual_figure(model, (X[:20], y[:20]), (X[20:], y[20:]))
    ax = figure.axes[0]
    assert ax.get_title() == "2-1 linear regression · train R² 1.000 · test R² 1.000"
    for collection in ax.collections:
        actual, predicted = collection.get_offsets().T
        np.testing.assert_allclose(predicted, actual, rtol=1e-12)
    classifier = _softmax_regression([[1.0, -1.0], [0.0, 0.0]])
    with pytest.raises(InvalidInput, match="regression pictures need a regression one"):
        plotting.predicted_vs_actual_figure(classifier, (X, y))
