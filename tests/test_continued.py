"""Continued training in the engine: a runs of a and b epochs, the second from the first's
weights and optimizer state, equal one run of a + b; the state survives `.npz`; wrong shapes
are refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_moons

from engine.errors import InvalidInput, ModelFormatError
from engine.hyperparameters import Hyperparameters
from engine.model import Model
from engine.serialize import model_from_npz, model_to_npz
from engine.training import Initial, TrainResult, train

# Full-batch runs with a constant rate repeat the same floating-point operations in the same
# order, so the two ways agree bit for bit; the brief's bound is 1e-12 relative.
RELATIVE = 1e-12

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def moons() -> Data:
    X, y = make_moons(200, noise=0.2, random_state=0)
    return X[:160], y[:160], X[160:], y[160:]


def _run(hp: Hyperparameters, data: Data, initial: Initial | None = None) -> TrainResult:
    X_train, y_train, X_test, y_test = data
    return train(hp, X_train, y_train, 2, X_test, y_test, initial=initial)


def _continued(result: TrainResult) -> Initial:
    return Initial(result.weights, result.biases, result.optimizer_state)


def _largest_relative_difference(one: TrainResult, other: TrainResult) -> float:
    pairs = [*zip(one.weights, other.weights, strict=True)]
    pairs += [*zip(one.biases, other.biases, strict=True)]
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in pairs)


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "learning_rate": 2.0, "l2": 0.01},  # the tutorial's
        {"optimizer": "adam", "learning_rate": 0.02},
        {"optimizer": "momentum", "learning_rate": 0.5, "l1": 0.001},
        {"optimizer": "nesterov", "learning_rate": 0.5, "hidden_layers": [4, 3]},
    ],
)
def test_a_then_b_epochs_equal_a_plus_b(moons: Data, options: dict[str, Any]) -> None:
    hp = Hyperparameters(**{"hidden_layers": [3], "record_every": 25, **options})
    whole = _run(hp.model_copy(update={"epochs": 200}), moons)
    first = _run(hp.model_copy(update={"epochs": 100}), moons)
    second = _run(hp.model_copy(update={"epochs": 100}), moons, _continued(first))
    assert _largest_relative_difference(second, whole) <= RELATIVE
    assert second.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=RELATIVE)
    # the second run's history is the second half of the whole one's, its epochs from 1
    assert [p.epoch for p in second.history] == [25, 50, 75, 100]
    for mine, theirs in zip(second.history, whole.history[4:], strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=RELATIVE)
    if hp.optimizer == "sgd":
        assert whole.optimizer_state is None  # plain gradient descent keeps nothing
    else:
        assert whole.optimizer_state is not None and first.optimizer_state is not None
        assert first.optimizer_state.steps == 100 and whole.optimizer_state.steps == 200


def test_adam_without_its_state_is_not_the_same_run(moons: Data) -> None:
    """The state matters: Adam restarted with fresh moments (t = 0) takes other steps."""
    hp = Hyperparameters(hidden_layers=[3], optimizer="adam", learning_rate=0.02, epochs=100)
    whole = _run(hp.model_copy(update={"epochs": 200}), moons)
    first = _run(hp, moons)
    fresh = _run(hp, moons, Initial(first.weights, first.biases))
    assert _largest_relative_difference(fresh, whole) > 1e-3
    # another optimizer's state is not used: momentum starts afresh from Adam's weights
    other = hp.model_copy(update={"optimizer": "momentum", "learning_rate": 0.5})
    from_adam = _run(other, moons, _continued(first))
    from_weights = _run(other, moons, Initial(first.weights, first.biases))
    assert _largest_relative_difference(from_adam, from_weights) == 0.0


def test_early_stopping_keeps_no_state_for_earlier_weights(moons: Data) -> None:
    hp = Hyperparameters(
        hidden_layers=[16],
        optimizer="adam",
        learning_rate=0.05,
        epochs=400,
        early_stopping=True,
        patience=20,
    )
    result = _run(hp, moons)
    assert result.best_epoch is not None and result.best_epoch < result.epochs_run
    assert result.optimizer_state is None


def test_initial_weights_of_another_shape_are_refused(moons: Data) -> None:
    hp = Hyperparameters(hidden_layers=[3], epochs=5)
    first = _run(hp, moons)
    wider = hp.model_copy(update={"hidden_layers": [4]})
    with pytest.raises(InvalidInput, match=r"initial weights have shapes \[\(2, 3\), \(3, 2\)\]"):
        _run(wider, moons, _continued(first))


def test_the_state_and_the_parent_survive_npz(moons: Data) -> None:
    hp = Hyperparameters(hidden_layers=[3], optimizer="adam", learning_rate=0.02, epochs=100)
    first = _run(hp, moons)
    model = Model(
        first.weights,
        first.biases,
        "tanh",
        (0, 1),
        hp,
        optimizer_state=first.optimizer_state,
        continued_from="mdl_0123456789abcdef",
    )
    loaded = model_from_npz(model_to_npz(model))
    assert loaded.continued_from == "mdl_0123456789abcdef"
    state = loaded.optimizer_state
    assert state is not None and first.optimizer_state is not None
    assert (state.optimizer, state.steps) == ("adam", 100)
    for mine, theirs in zip(state.arrays, first.optimizer_state.arrays, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    whole = _run(hp.model_copy(update={"epochs": 200}), moons)
    again = _run(hp, moons, Initial(loaded.weights, loaded.biases, state))
    assert _largest_relative_difference(again, whole) <= RELATIVE

    plain = model_from_npz(model_to_npz(Model(first.weights, first.biases, "tanh", (0, 1), hp)))
    assert plain.optimizer_state is None and plain.continued_from is None


def test_a_damaged_state_is_a_format_error(moons: Data) -> None:
    import io
    import json

    hp = Hyperparameters(hidden_layers=[3], optimizer="adam", epochs=3)
    first = _run(hp, moons)
    model = Model(
        first.weights, first.biases, "tanh", (0, 1), hp, optimizer_state=first.optimizer_state
    )
    archive = dict(np.load(io.BytesIO(model_to_npz(model)), allow_pickle=False))

    def saved(**members: Any) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **{**archive, **members})
        return buffer.getvalue()

    with pytest.raises(ModelFormatError, match=r"optimizer_1 has shape \(3,\)"):
        model_from_npz(saved(optimizer_1=np.zeros(3)))
    metadata = json.loads(str(archive["metadata"][()]))
    metadata["optimizer_state"]["steps"] = -1
    with pytest.raises(ModelFormatError, match="steps: an integer >= 0"):
        model_from_npz(saved(metadata=np.array(json.dumps(metadata))))
    del archive["optimizer_1"]
    metadata["optimizer_state"]["steps"] = 3
    with pytest.raises(ModelFormatError, match="missing array optimizer_1"):
        model_from_npz(saved(metadata=np.array(json.dumps(metadata))))
