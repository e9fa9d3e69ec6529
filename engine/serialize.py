"""A model as a NumPy .npz archive, and back, without pickle.

Archive members (each a .npy array):

    W0, b0, W1, b1, ...        weights (fan_in, fan_out) and biases (fan_out,), input side first
    scaler_mean, scaler_scale  (n_features,) float64, only when the model standardizes its input
    target_mean, target_scale  (n_targets,) float64, only for a regression model whose targets
                               were standardized
    optimizer_0, optimizer_1   (n_parameters,) laid out like the training parameter vector
                               (engine.network), in the weights' dtype: the optimizer state
                               training goes on from (momentum's velocity; Adam's moments),
                               only when the model kept one
    metadata                   a 0-d unicode array holding JSON: format name and version,
                               activation, classes and their type, architecture (layer widths,
                               the first the input map's columns), feature names,
                               hyperparameters (their input_features name the input map; a file
                               without it, written before maps existed, loads as identity),
                               continued_from (the id of the model it continued) and
                               optimizer_state {optimizer, steps, arrays}, each when there is
                               one; from version 2 the task and the target names

Version 2 added the task (version 1 files, written before regression, are classifiers and still
load).

Loading checks every member's declared shape and dtype before reading its data (a small file
cannot make the loader allocate a huge array), then the whole model's consistency. Anything wrong
is a `ModelFormatError` whose message says what.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, get_args

import numpy as np
from pydantic import ValidationError

from engine.activations import ACTIVATIONS
from engine.errors import ModelFormatError
from engine.features import n_features_for
from engine.hyperparameters import Hyperparameters, OptimizerName
from engine.model import Label, Model, Scaler
from engine.optimizers import OptimizerState

FORMAT_NAME = "scratchnet-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

# Loading limits: far above any model the service trains, far below what would hurt the host.
MAX_PARAMETERS = 10_000_000
MAX_LAYERS = 256
MAX_METADATA_CHARS = 1_000_000
MAX_OPTIMIZER_ARRAYS = 2  # Adam's two moments: the most state an optimizer keeps

_WEIGHT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def model_to_npz(model: Model) -> bytes:
    """The model as .npz bytes that `model_from_npz` turns back into an identical predictor."""
    classes: list[Label] = [c if isinstance(c, str) else int(c) for c in model.classes]
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "activation": model.activation,
        "classes": classes,
        "class_type": "str" if classes and isinstance(classes[0], str) else "int",
        "architecture": model.architecture,
        "feature_names": list(model.feature_names),
        "hyperparameters": model.hyperparameters.model_dump(mode="json"),
        "task": model.task,
        "target_names": list(model.target_names),
    }
    if model.continued_from is not None:
        metadata["continued_from"] = model.continued_from
    arrays: dict[str, np.ndarray] = {}
    for i, (W, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        arrays[f"W{i}"] = np.ascontiguousarray(W)
        arrays[f"b{i}"] = np.ascontiguousarray(b)
    state = model.optimizer_state
    if state is not None:
        metadata["optimizer_state"] = {
            "optimizer": state.optimizer,
            "steps": int(state.steps),
            "arrays": len(state.arrays),
        }
        for i, array in enumerate(state.arrays):
            arrays[f"optimizer_{i}"] = np.ascontiguousarray(array)
    if model.scaler is not None:
        arrays["scaler_mean"] = np.asarray(model.scaler.mean, dtype=np.float64)
        arrays["scaler_scale"] = np.asarray(model.scaler.scale, dtype=np.float64)
    if model.target_scaler is not None:
        arrays["target_mean"] = np.asarray(model.target_scaler.mean, dtype=np.float64)
        arrays["target_scale"] = np.asarray(model.target_scaler.scale, dtype=np.float64)
    arrays["metadata"] = np.array(json.dumps(metadata, ensure_ascii=False))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def model_from_npz(data: bytes, *, max_parameters: int = MAX_PARAMETERS) -> Model:
    """A model from `model_to_npz` bytes; predicts exactly as the saved one did."""
    data = bytes(data)
    if not data:
        raise ModelFormatError("the file is empty; expected a .npz archive")
    if data.startswith(np.lib.format.MAGIC_PREFIX):
        raise ModelFormatError("this is a single .npy array, not a .npz archive of a model")
    if not data.startswith(b"PK"):
        raise ModelFormatError("not a .npz archive: the data does not start like a zip file")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(f"not a readable .npz archive ({_reason(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile) or archive.zip is None:
        raise ModelFormatError("not a .npz archive")
    with archive:
        headers = _read_headers(archive.zip)
        metadata = _metadata(archive, headers)
        n_layers = _n_layers(metadata)
        n_state = _n_optimizer_arrays(metadata)
        _check_members(headers, n_layers, n_state)
        _check_sizes(headers, max_parameters)
        arrays = {name: _read(archive, name) for name in headers if name != "metadata"}
    return _build(metadata, arrays, n_layers)


# --- reading ---------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _read_headers(archive: zipfile.ZipFile) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every member, read from the .npy headers without reading the data."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        infos = archive.infolist()
        if len(infos) > 2 * MAX_LAYERS + 3 + MAX_OPTIMIZER_ARRAYS:
            raise ModelFormatError(f"the archive has {len(infos)} members; too many for a model")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ModelFormatError(f"unexpected member {info.filename!r}: not a .npy array")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ModelFormatError(f"{info.filename}: unsupported .npy version {version}")
            headers[info.filename.removesuffix(".npy")] = (tuple(shape), np.dtype(dtype))
    except ModelFormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise ModelFormatError(f"corrupt archive ({_reason(exc)})") from None
    return headers


def _read(archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return np.asarray(archive[name])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        raise ModelFormatError(f"array {name!r} cannot be read ({_reason(exc)})") from None


def _metadata(
    archive: np.lib.npyio.NpzFile, headers: dict[str, tuple[tuple[int, ...], np.dtype]]
) -> dict[str, Any]:
    if "metadata" not in headers:
        found = ", ".join(sorted(headers)) or "nothing"
        raise ModelFormatError(
            f"not a scratchnet model: the archive has no metadata (it holds {found})"
        )
    shape, dtype = headers["metadata"]
    if shape != () or dtype.kind != "U":
        raise ModelFormatError(
            f"metadata must be a 0-d unicode array, got shape {shape} and dtype {dtype}"
        )
    if dtype.itemsize // 4 > MAX_METADATA_CHARS:
        raise ModelFormatError(
            f"metadata is {dtype.itemsize // 4} characters long; at most "
            f"{MAX_METADATA_CHARS} are allowed"
        )
    text = str(_read(archive, "metadata")[()])
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"metadata is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"not a scratchnet model: metadata does not name {FORMAT_NAME!r}")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ModelFormatError(
            f"format version {version!r} is not supported; this scratchnet reads versions "
            f"{', '.join(str(v) for v in READABLE_VERSIONS)}"
        )
    return metadata


def _n_layers(metadata: dict[str, Any]) -> int:
    architecture = metadata.get("architecture")
    if (
        not isinstance(architecture, list)
        or not 2 <= len(architecture) <= MAX_LAYERS + 1
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in architecture)
    ):
        raise ModelFormatError(
            f"architecture must be a list of 2 to {MAX_LAYERS + 1} positive layer widths, "
            f"got {architecture!r}"
        )
    return len(architecture) - 1


def _n_optimizer_arrays(metadata: dict[str, Any]) -> int:
    """How many optimizer_i arrays the metadata's optimizer_state declares (0 without one)."""
    state = metadata.get("optimizer_state")
    if state is None:
        return 0
    arrays = state.get("arrays") if isinstance(state, dict) else None
    steps = state.get("steps") if isinstance(state, dict) else None
    if (
        not isinstance(state, dict)
        or state.get("optimizer") not in get_args(OptimizerName)
        or not isinstance(steps, int)
        or isinstance(steps, bool)
        or steps < 0
        or not isinstance(arrays, int)
        or isinstance(arrays, bool)
        or not 1 <= arrays <= MAX_OPTIMIZER_ARRAYS
    ):
        raise ModelFormatError(
            "optimizer_state must be {optimizer: one of "
            f"{list(get_args(OptimizerName))}, steps: an integer >= 0, arrays: 1 to "
            f"{MAX_OPTIMIZER_ARRAYS}}}, got {state!r}"
        )
    return arrays


def _check_members(
    headers: dict[str, tuple[tuple[int, ...], np.dtype]], n_layers: int, n_state: int
) -> None:
    layer_names = {f"{kind}{i}" for i in range(n_layers) for kind in ("W", "b")}
    missing = sorted(layer_names - set(headers), key=lambda n: (int(n[1:]), n[0]))
    if missing:
        raise ModelFormatError(f"missing array {missing[0]} for a {n_layers}-layer model")
    state_names = {f"optimizer_{i}" for i in range(n_state)}
    if state_names - set(headers):
        name = sorted(state_names - set(headers))[0]
        raise ModelFormatError(f"missing array {name} of the optimizer state")
    scaler: set[str] = set()
    for pair in (("scaler_mean", "scaler_scale"), ("target_mean", "target_scale")):
        present = set(pair) & set(headers)
        if len(present) == 1:
            raise ModelFormatError(f"{present.pop()} without its partner: a scaler needs both")
        scaler |= present
    unexpected = set(headers) - layer_names - state_names - scaler - {"metadata"}
    if unexpected:
        raise ModelFormatError(f"unexpected array {sorted(unexpected)[0]!r}")
    for name in layer_names | state_names | scaler:
        dtype = headers[name][1]
        if dtype not in _WEIGHT_DTYPES:
            raise ModelFormatError(f"{name} must be float64 or float32, got dtype {dtype}")


def _check_sizes(headers: dict[str, tuple[tuple[int, ...], np.dtype]], max_parameters: int) -> None:
    total = 0
    for name, (shape, _) in headers.items():
        if name != "metadata":
            total += int(np.prod(shape, dtype=np.float64))  # float: no overflow on absurd shapes
    if total > max_parameters:
        raise ModelFormatError(
            f"the archive declares {total} numbers; at most {max_parameters} are allowed"
        )


# --- building --------------------------------------------------------------------------------


def _classes(metadata: dict[str, Any]) -> tuple[Label, ...]:
    classes = metadata.get("classes")
    class_type = metadata.get("class_type")
    if metadata.get("task") == "regression":
        if classes != []:
            raise ModelFormatError(f"a regression model has no classes, got {classes!r}")
        return ()
    if class_type not in ("int", "str"):
        raise ModelFormatError(f"class_type must be 'int' or 'str', got {class_type!r}")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ModelFormatError(f"classes must be a list of at least 2 labels, got {classes!r}")
    for label in classes:
        is_int = isinstance(label, int) and not isinstance(label, bool)
        if (class_type == "int" and not is_int) or (
            class_type == "str" and not isinstance(label, str)
        ):
            raise ModelFormatError(f"class {label!r} is not of class_type {class_type}")
    if len(set(classes)) != len(classes):
        raise ModelFormatError("classes must be distinct")
    return tuple(classes)


def _feature_names(metadata: dict[str, Any], n_features: int) -> tuple[str, ...]:
    names = metadata.get("feature_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(f"feature_names must be a list of strings, got {names!r}")
    if names and len(names) != n_features:
        raise ModelFormatError(f"{len(names)} feature names for a model of {n_features} features")
    return tuple(names)


def _build(metadata: dict[str, Any], arrays: dict[str, np.ndarray], n_layers: int) -> Model:
    activation = metadata.get("activation")
    if activation not in ACTIVATIONS:
        raise ModelFormatError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    try:
        hyperparameters = Hyperparameters.model_validate(metadata.get("hyperparameters"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "hyperparameters"
        raise ModelFormatError(f"invalid hyperparameters: {where}: {first['msg']}") from None

    weights = [arrays[f"W{i}"] for i in range(n_layers)]
    biases = [arrays[f"b{i}"] for i in range(n_layers)]
    architecture = metadata["architecture"]
    dtype = weights[0].dtype
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        expected = (architecture[i], architecture[i + 1])
        if W.shape != expected:
            raise ModelFormatError(f"W{i} has shape {W.shape}; the architecture says {expected}")
        if b.shape != (architecture[i + 1],):
            raise ModelFormatError(
                f"b{i} has shape {b.shape}; the architecture says ({architecture[i + 1]},)"
            )
        if W.dtype != dtype or b.dtype != dtype:
            raise ModelFormatError(f"W{i} and b{i} must share W0's dtype {dtype}")
        for name, array in ((f"W{i}", W), (f"b{i}", b)):
            if not np.isfinite(array).all():
                raise ModelFormatError(f"{name} contains NaN or infinite values")

    task = metadata.get("task", "classification")  # version 1: classifiers
    if task not in ("classification", "regression"):
        raise ModelFormatError(f"task must be 'classification' or 'regression', got {task!r}")
    classes = _classes(metadata)
    target_names = _names(metadata, "target_names", architecture[-1] if classes == () else 0)
    outputs = len(target_names) if task == "regression" else len(classes)
    if outputs != architecture[-1]:
        what = "targets" if task == "regression" else "classes"
        raise ModelFormatError(f"{outputs} {what} for an output layer of {architecture[-1]} units")
    features = hyperparameters.input_features
    n_features = n_features_for(features, architecture[0])
    if n_features is None:
        raise ModelFormatError(
            f"input_features {features} cannot give the first layer's {architecture[0]} inputs"
        )
    if task == "classification" and "target_mean" in arrays:
        raise ModelFormatError("a classifier has no target scaler")

    continued_from = metadata.get("continued_from")
    if continued_from is not None and not isinstance(continued_from, str):
        raise ModelFormatError(f"continued_from must be a model id or null, got {continued_from!r}")
    return Model(
        weights=weights,
        biases=biases,
        activation=activation,
        classes=classes,
        hyperparameters=hyperparameters,
        scaler=_scaler(arrays, "scaler", n_features, "features"),
        feature_names=_feature_names(metadata, n_features),
        task=task,
        target_names=target_names,
        target_scaler=_scaler(arrays, "target", architecture[-1], "targets"),
        optimizer_state=_optimizer_state(metadata, arrays, weights, biases),
        continued_from=continued_from,
    )


def _names(metadata: dict[str, Any], key: str, required: int) -> tuple[str, ...]:
    """A list of `required` non-empty strings (absent: none required)."""
    names = metadata.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ModelFormatError(f"{key} must be a list of names, got {names!r}")
    if len(names) != required:
        raise ModelFormatError(f"{len(names)} {key} for {required} outputs")
    return tuple(names)


def _scaler(arrays: dict[str, np.ndarray], prefix: str, width: int, what: str) -> Scaler | None:
    """The scaler stored as {prefix}_mean and {prefix}_scale, (width,) each, or None."""
    if f"{prefix}_mean" not in arrays:
        return None
    mean, scale = arrays[f"{prefix}_mean"], arrays[f"{prefix}_scale"]
    for name, array in ((f"{prefix}_mean", mean), (f"{prefix}_scale", scale)):
        if array.shape != (width,):
            raise ModelFormatError(f"{name} has shape {array.shape}; the model has {width} {what}")
        if not np.isfinite(array).all():
            raise ModelFormatError(f"{name} contains NaN or infinite values")
    if (scale <= 0).any():
        raise ModelFormatError(f"{prefix}_scale must be positive")
    return Scaler(mean=mean.astype(np.float64), scale=scale.astype(np.float64))


def _optimizer_state(
    metadata: dict[str, Any],
    arrays: dict[str, np.ndarray],
    weights: list[np.ndarray],
    biases: list[np.ndarray],
) -> OptimizerState | None:
    state = metadata.get("optimizer_state")
    if state is None:
        return None
    size = sum(W.size + b.size for W, b in zip(weights, biases, strict=True))
    members = [arrays[f"optimizer_{i}"] for i in range(state["arrays"])]
    for i, array in enumerate(members):
        if array.shape != (size,) or array.dtype != weights[0].dtype:
            raise ModelFormatError(
                f"optimizer_{i} has shape {array.shape} and dtype {array.dtype}; the model's "
                f"state is ({size},) {weights[0].dtype}"
            )
        if not np.isfinite(array).all():
            raise ModelFormatError(f"optimizer_{i} contains NaN or infinite values")
    return OptimizerState(state["optimizer"], state["steps"], tuple(members))
