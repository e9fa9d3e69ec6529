"""Model <-> .npz: exact round trips, and a clear ModelFormatError for every kind of bad file."""

from __future__ import annotations

import io
import itertools
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.datasets import generate, split
from engine.errors import InvalidInput, ModelFormatError
from engine.hyperparameters import Hyperparameters
from engine.model import Label, Model, Scaler
from engine.serialize import model_from_npz, model_to_npz
from engine.training import train

POINTS = np.random.default_rng(1).normal(size=(500, 2)) * 3  # (500, 2)


def _model(
    *,
    dtype: type = np.float64,
    classes: tuple[Label, ...] = ("cat", "dog", "eel"),
    scaler: bool = True,
    feature_names: tuple[str, ...] = ("length", "weight"),
) -> Model:
    rng = np.random.default_rng(0)
    hp = Hyperparameters(hidden_layers=[4, 3], activation="leaky_relu", learning_rate=0.3, l2=0.01)
    sizes = [2, 4, 3, len(classes)]
    return Model(
        weights=[rng.normal(size=(a, b)).astype(dtype) for a, b in itertools.pairwise(sizes)],
        biases=[rng.normal(size=b).astype(dtype) for b in sizes[1:]],
        activation="leaky_relu",
        classes=classes,
        hyperparameters=hp,
        scaler=Scaler(mean=np.array([0.5, -1.0]), scale=np.array([2.0, 0.25])) if scaler else None,
        feature_names=feature_names,
    )


def _assert_same_model(loaded: Model, original: Model) -> None:
    assert np.array_equal(loaded.predict_proba(POINTS), original.predict_proba(POINTS))
    assert loaded.predict(POINTS) == original.predict(POINTS)
    assert loaded.classes == original.classes
    assert [type(c) for c in loaded.classes] == [type(c) for c in original.classes]
    assert loaded.activation == original.activation
    assert loaded.hyperparameters == original.hyperparameters
    assert loaded.feature_names == original.feature_names
    assert loaded.architecture == original.architecture
    for a, b in zip(
        loaded.weights + loaded.biases, original.weights + original.biases, strict=True
    ):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    if original.scaler is None:
        assert loaded.scaler is None
    else:
        assert loaded.scaler is not None
        assert np.array_equal(loaded.scaler.mean, original.scaler.mean)
        assert np.array_equal(loaded.scaler.scale, original.scaler.scale)


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        _model(),
        _model(dtype=np.float32),
        _model(classes=(-3, 0, 7), scaler=False),
        _model(classes=("b", "a", "c"), feature_names=()),
        _model(classes=("ünïcødé ✓", "$x$", "a,b")),
    ],
    ids=["float64", "float32", "int-classes", "no-names", "unicode"],
)
def test_round_trip_predicts_identically(model: Model) -> None:
    _assert_same_model(model_from_npz(model_to_npz(model)), model)


def test_round_trip_of_a_trained_model() -> None:
    data = generate("spiral", n_samples=60)
    parts = split(data, test_fraction=0.2, standardize=True, seed=0)
    hp = Hyperparameters(hidden_layers=[5], epochs=20, seed=3)
    result = train(hp, parts.X_train, parts.y_train, data.n_classes, parts.X_test, parts.y_test)
    model = Model(
        result.weights,
        result.biases,
        hp.activation,
        data.classes,
        hp,
        parts.scaler,
        data.feature_names,
    )
    _assert_same_model(model_from_npz(model_to_npz(model)), model)


def test_softmax_regression_round_trip() -> None:
    model = Model(
        weights=[np.array([[1.0, -1.0], [0.5, 2.0]])],
        biases=[np.array([0.1, -0.1])],
        activation="tanh",
        classes=(0, 1),
        hyperparameters=Hyperparameters(hidden_layers=[]),
    )
    _assert_same_model(model_from_npz(model_to_npz(model)), model)


def test_archive_layout_is_plain_numpy() -> None:
    model = _model()
    with np.load(io.BytesIO(model_to_npz(model)), allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            ["W0", "b0", "W1", "b1", "W2", "b2", "scaler_mean", "scaler_scale", "metadata"]
        )
        metadata = json.loads(str(archive["metadata"][()]))
        assert archive["metadata"].shape == ()
    assert metadata == {
        "format": "scratchnet-model",
        "format_version": 2,
        "activation": "leaky_relu",
        "classes": ["cat", "dog", "eel"],
        "class_type": "str",
        "architecture": [2, 4, 3, 3],
        "feature_names": ["length", "weight"],
        "hyperparameters": model.hyperparameters.model_dump(mode="json"),
        "task": "classification",
        "target_names": [],
    }


def test_parameter_cap_counts_every_array() -> None:
    model = _model(scaler=False)
    data = model_to_npz(model)
    assert model_from_npz(data, max_parameters=model.n_parameters).n_parameters == 39
    with pytest.raises(ModelFormatError, match="declares 39 numbers; at most 38 are allowed"):
        model_from_npz(data, max_parameters=model.n_parameters - 1)


# --- bad files ---------------------------------------------------------------------------------


def _arrays(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _savez(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _edited(
    *,
    drop: tuple[str, ...] = (),
    replace: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """A valid archive of `_model()` with arrays dropped or replaced and metadata keys changed."""
    arrays = _arrays(model_to_npz(_model()))
    for name in drop:
        del arrays[name]
    arrays.update(replace or {})
    if metadata:
        meta = json.loads(str(arrays["metadata"][()]))
        meta.update(metadata)
        arrays["metadata"] = np.array(json.dumps(meta))
    return _savez(arrays)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy member that declares `shape` float64 but carries 8 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(  # writes the magic string too
        buffer, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + b"\0" * 8


VALID = model_to_npz(_model())
HUGE_MEMBER = _npy_header_only((100_000, 100_000))


def _flip_a_data_byte(data: bytes) -> bytes:
    """Corrupt a byte inside the first member's stored data (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
    corrupted = bytearray(data)
    corrupted[start] ^= 0xFF
    return bytes(corrupted)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"definitely not a model", "does not start like a zip file"),
        (np.lib.format.magic(1, 0) + b"\x00" * 20, "a single .npy array, not a .npz archive"),
        (VALID[: len(VALID) // 2], "not a readable .npz archive (BadZipFile"),
        (VALID[:-1], "not a readable .npz archive"),
        (b"PK\x03\x04" + b"\x00" * 50, "not a readable .npz archive"),
        (_zip({"hello.txt": b"hi"}), "unexpected member 'hello.txt': not a .npy array"),
        (_zip({"W0.npy": b"not npy"}), "corrupt archive"),
        (_zip({"W0.npy": HUGE_MEMBER}), "the archive has no metadata"),
        (_savez({"a": np.zeros(3), "b": np.ones(2)}), "no metadata (it holds a, b)"),
        (_savez({"metadata": np.array([{"format": 1}], dtype=object)}), "0-d unicode array"),
        (_savez({"metadata": np.array("{not json")}), "metadata is not valid JSON"),
        (_savez({"metadata": np.array('"a string"')}), "does not name 'scratchnet-model'"),
        (_edited(metadata={"format": "other-model"}), "does not name 'scratchnet-model'"),
        (_edited(metadata={"format_version": 3}), "format version 3 is not supported"),
        (_edited(metadata={"format_version": "1"}), "format version '1' is not supported"),
        (_edited(metadata={"format_version": True}), "format version True"),
        (_edited(drop=("b1",)), "missing array b1 for a 3-layer model"),
        (_edited(drop=("W0", "b2")), "missing array W0"),
        (_edited(replace={"extra": np.zeros(1)}), "unexpected array 'extra'"),
        (_edited(drop=("scaler_scale",)), "scaler_mean without its partner"),
        (
            _edited(replace={"W1": np.zeros((4, 5))}),
            "W1 has shape (4, 5); the architecture says (4, 3)",
        ),
        (_edited(replace={"W0": np.zeros((4,))}), "W0 has shape (4,)"),
        (_edited(replace={"b2": np.zeros(2)}), "b2 has shape (2,); the architecture says (3,)"),
        (_edited(metadata={"architecture": [2, 4, 3, 2]}), "W2 has shape"),
        (_edited(metadata={"architecture": "2-4-3-3"}), "architecture must be a list"),
        (_edited(metadata={"architecture": [2]}), "architecture must be a list"),
        (_edited(metadata={"architecture": [2, 0, 3, 3]}), "architecture must be a list"),
        (_edited(metadata={"classes": ["a", "b"]}), "2 classes for an output layer of 3 units"),
        (_edited(metadata={"classes": ["a", "a", "b"]}), "classes must be distinct"),
        (_edited(metadata={"classes": ["a", 1, "b"]}), "class 1 is not of class_type str"),
        (_edited(metadata={"classes": [0, 1, True], "class_type": "int"}), "class True"),
        (_edited(metadata={"class_type": "float"}), "class_type must be 'int' or 'str'"),
        (_edited(metadata={"classes": "abc"}), "classes must be a list"),
        (_edited(metadata={"feature_names": ["a"]}), "1 feature names for a model of 2 features"),
        (_edited(metadata={"feature_names": [1, 2]}), "feature_names must be a list of strings"),
        (_edited(metadata={"activation": "swish"}), "unknown activation 'swish'"),
        (
            _edited(metadata={"hyperparameters": {"learning_rate": -1}}),
            "invalid hyperparameters: learning_rate: Input should be greater than 0",
        ),
        (
            _edited(metadata={"hyperparameters": {"colour": "red"}}),
            "invalid hyperparameters: colour",
        ),
        (_edited(metadata={"hyperparameters": None}), "invalid hyperparameters"),
        (_edited(replace={"W1": np.full((4, 3), np.nan)}), "W1 contains NaN or infinite values"),
        (_edited(replace={"b0": np.array([0, np.inf, 0, 0])}), "b0 contains NaN or infinite"),
        (_edited(replace={"scaler_mean": np.array([np.nan, 0])}), "scaler_mean contains NaN"),
        (_edited(replace={"scaler_scale": np.array([1.0, 0.0])}), "scaler_scale must be positive"),
        (_edited(replace={"scaler_mean": np.zeros(3)}), "scaler_mean has shape (3,)"),
        (_edited(replace={"W0": np.zeros((2, 4), dtype=object)}), "W0 must be float64 or float32"),
        (_edited(replace={"W0": np.zeros((2, 4), dtype=np.float16)}), "got dtype float16"),
        (_edited(replace={"W0": np.zeros((2, 4), dtype=np.int64)}), "got dtype int64"),
        (_edited(replace={"W1": np.zeros((4, 3), dtype=np.float32)}), "must share W0's dtype"),
        (_edited(replace={"W1": np.zeros((4, 3), dtype="<U3")}), "W1 must be float64"),
    ],
)
def test_bad_files_raise_model_format_error(data: bytes, message: str) -> None:
    with pytest.raises(ModelFormatError, match=re.escape(message)):
        model_from_npz(data)


def test_corrupted_member_data_fails_its_crc() -> None:
    with pytest.raises(ModelFormatError, match="Bad CRC-32"):
        model_from_npz(_flip_a_data_byte(VALID))


def test_huge_declared_arrays_are_refused_before_reading() -> None:
    """A member declaring 10^10 float64 (80 GB) in a few bytes must not be allocated."""
    arrays = _arrays(VALID)
    members = {f"{name}.npy": _npy_bytes(array) for name, array in arrays.items()}
    members["W1.npy"] = HUGE_MEMBER
    others = sum(a.size for name, a in arrays.items() if name not in ("W1", "metadata"))
    declared = 10**10 + others
    with pytest.raises(ModelFormatError, match=re.escape(f"declares {declared} numbers")):
        model_from_npz(_zip(members))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_memoryview_and_bytearray_inputs() -> None:
    _assert_same_model(model_from_npz(bytearray(VALID)), _model())  # type: ignore[arg-type]
    _assert_same_model(model_from_npz(memoryview(VALID)), _model())  # type: ignore[arg-type]


def test_a_file_written_before_regression_still_loads() -> None:
    """tests/fixtures/classifier_format_1.npz was written by model_to_npz before models
    recorded their task: it loads as the classifier it was, predicting what it predicted."""
    data = (Path(__file__).parent / "fixtures" / "classifier_format_1.npz").read_bytes()
    model = model_from_npz(data)
    assert model.classes == ("cat", "dog", "eel")
    assert model.feature_names == ("length", "weight")
    assert model.architecture == [2, 4, 3]
    points = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 0.5]])
    # the probabilities the writing code printed for these points
    expected = [
        [0.42867595691577015, 0.10911391119972075, 0.4622101318845091],
        [0.8888647789617998, 0.08678468119684295, 0.024350539841357075],
        [0.4290056483360326, 0.10913342777571897, 0.46186092388824856],
    ]
    np.testing.assert_allclose(model.predict_proba(points), expected, rtol=1e-12)
    assert model.task == "classification" and model.target_scaler is None


def _regressor(target_scaler: bool = True) -> Model:
    rng = np.random.default_rng(2)
    sizes = [3, 4, 2]
    return Model(
        weights=[rng.normal(size=(a, b)) for a, b in itertools.pairwise(sizes)],
        biases=[rng.normal(size=b) for b in sizes[1:]],
        activation="relu",
        classes=(),
        hyperparameters=Hyperparameters(hidden_layers=[4], activation="relu"),
        scaler=Scaler(mean=np.array([0.5, -1.0, 2.0]), scale=np.array([2.0, 0.25, 1.0])),
        feature_names=("a", "b", "c"),
        task="regression",
        target_names=("price", "weight"),
        target_scaler=Scaler(mean=np.array([100.0, -3.0]), scale=np.array([20.0, 0.5]))
        if target_scaler
        else None,
    )


@pytest.mark.parametrize("target_scaler", [True, False])
def test_regression_round_trip_predicts_in_original_units(target_scaler: bool) -> None:
    model = _regressor(target_scaler)
    loaded = model_from_npz(model_to_npz(model))
    points = np.random.default_rng(0).normal(size=(50, 3))
    assert loaded.task == "regression" and loaded.target_names == ("price", "weight")
    np.testing.assert_array_equal(loaded.predict_values(points), model.predict_values(points))
    # By hand: the network's outputs, unscaled.
    hidden = np.maximum(model.scaler.transform(points) @ model.weights[0] + model.biases[0], 0)  # type: ignore[union-attr]
    outputs = hidden @ model.weights[1] + model.biases[1]  # (50, 2)
    if target_scaler:
        outputs = outputs * np.array([20.0, 0.5]) + np.array([100.0, -3.0])
    np.testing.assert_allclose(loaded.predict_values(points), outputs, rtol=1e-12)
    with pytest.raises(InvalidInput, match="predicts values, not class probabilities"):
        loaded.predict_proba(points)


def test_regression_files_that_do_not_fit_are_refused() -> None:
    data = model_to_npz(_regressor())
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays["metadata"][()]))

    def edited(change: dict[str, Any], drop: str | None = None) -> bytes:
        members = {k: v for k, v in arrays.items() if k != drop}
        members["metadata"] = np.array(json.dumps({**metadata, **change}))
        buffer = io.BytesIO()
        np.savez(buffer, **members)  # type: ignore[arg-type]
        return buffer.getvalue()

    cases = [
        (edited({"target_names": ["price"]}), "1 target_names for 2 outputs"),
        (edited({"classes": [0, 1]}), "a regression model has no classes"),
        (edited({"task": "ranking"}), "task must be 'classification' or 'regression'"),
        (edited({}, drop="target_scale"), "target_mean without its partner"),
        (edited({"task": "classification", "classes": [0, 1], "target_names": []}),
         "a classifier has no target scaler"),
    ]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(ModelFormatError, match=re.escape(message)):
            model_from_npz(bad)
