"""What a run's spans carry from its engine: the training's arguments on its root, and its results
(losses, learning rates, fitness and metrics) read the way Ultralytics' own loggers read them
(scalars only, names by semconv)."""

from __future__ import annotations

import contextlib
from typing import Any

from .. import semconv as sc


def _scalars(results: dict[str, Any]) -> dict[str, float]:
    scalars = {}
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(key, str):
            continue
        try:
            scalars[key] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
    return scalars


def as_attributes(results: dict[str, float]) -> dict[str, float]:
    return {sc.result_attribute(key): value for key, value in results.items()}


def epoch_results(trainer: Any) -> dict[str, float]:
    """An epoch's training losses, learning rates and, after validation, its metrics and fitness,
    by Ultralytics' own keys (``train/box_loss``, ``lr/pg0``, ``metrics/mAP50-95(B)``, ``fitness``)."""
    results: dict[str, Any] = {}
    label = getattr(trainer, "label_loss_items", None)
    tloss = getattr(trainer, "tloss", None)
    if callable(label) and tloss is not None:
        with contextlib.suppress(Exception):  # a trainer without losses yet: nothing to show
            results.update(label(tloss, prefix="train") or {})
    for name in ("lr", "metrics"):
        values = getattr(trainer, name, None)
        if isinstance(values, dict):
            results.update(values)
    fitness = getattr(trainer, "fitness", None)
    if fitness is not None:
        results["fitness"] = fitness
    return _scalars(results)


def val_results(validator: Any) -> dict[str, float]:
    """A validation's metrics (mAP50, mAP50-95, precision, recall and the task's others)."""
    metrics = getattr(validator, "metrics", None)
    try:
        results = getattr(metrics, "results_dict", None)
    except Exception:  # metrics not computed (no labels, an interrupted validation)
        return {}
    return _scalars(results) if isinstance(results, dict) else {}


def run_name(engine: Any) -> dict[str, str]:
    """The run as people named it: the last two parts of its save directory (``project/name``)."""
    save_dir = getattr(engine, "save_dir", None)
    if not save_dir:
        return {}
    parts = str(save_dir).replace("\\", "/").rstrip("/").split("/")
    return {sc.ATTR_RUN_NAME: "/".join(parts[-2:])}


def run_attributes(trainer: Any) -> dict[str, Any]:
    """The train span's attributes from the trainer's args: scalars only, file names not paths."""
    args = getattr(trainer, "args", None)
    attributes: dict[str, Any] = run_name(trainer)
    for name, key in sc.RUN_ATTRIBUTES.items():
        value = getattr(args, name, None)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            attributes[key] = value
        elif isinstance(value, str) and value:
            file_name = value.replace("\\", "/").rsplit("/", 1)[-1]
            attributes[key] = file_name if name in ("model", "data") else value
    return attributes
