"""Ensembles: blend class probabilities, fit non-negative blend weights on validation/OOF log-loss."""

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from lib import NUM_CLASSES, class_display_name
from lib.analysis.calibration import apply_temperature, fit_temperature
from lib.choices import BLEND_METHODS, SEARCHES
from lib.metrics import EPS, accuracy, class_labels, log_loss


def _stack(prob_list) -> np.ndarray:
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in prob_list])
    if stacked.ndim != 3:
        raise ValueError(
            f"each probability array must be [rows, classes]; got shapes {[np.shape(p) for p in prob_list]}"
        )
    return stacked


def blend(prob_list, weights, method="arithmetic") -> np.ndarray:
    """Weighted blend of [rows, classes] probability arrays; rows sum to 1.

    arithmetic: sum_m w_m p_m. geometric: exp(sum_m w_m log p_m), renormalised per row.
    """
    stacked = _stack(prob_list)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(stacked),):
        raise ValueError(f"blend: {len(stacked)} models but {weights.size} weights")
    weights = weights / weights.sum()
    if method == "arithmetic":
        mixed = np.tensordot(weights, stacked, axes=1)
    elif method == "geometric":
        log_mixed = np.tensordot(weights, np.log(np.clip(stacked, EPS, 1.0)), axes=1)
        mixed = np.exp(log_mixed - log_mixed.max(axis=1, keepdims=True))
    else:
        raise ValueError(f"unknown blend method {method!r}: use one of {', '.join(BLEND_METHODS)}")
    return mixed / mixed.sum(axis=1, keepdims=True)


def _simplex_grid(n_models: int, resolution: int):
    """All weight vectors with entries k / resolution summing to 1."""
    for cuts in itertools.combinations(range(resolution + n_models - 1), n_models - 1):
        parts = np.diff([-1, *cuts, resolution + n_models - 1]) - 1  # stars and bars
        yield parts / resolution


def fit_weights(prob_list, labels, method="arithmetic", search="scipy", resolution=20) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's log-loss on (validation or OOF) rows.

    search="scipy": SLSQP with bounds [0, 1] and a sum-to-one constraint, started from equal weights.
    search="simplex": exhaustive grid over the simplex with step 1 / `resolution` (for a few models).
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown weight search {search!r}: use one of {', '.join(SEARCHES)}")
    stacked = _stack(prob_list)
    n_models = len(stacked)
    if n_models == 1:
        return np.ones(1)

    def objective(weights):
        return log_loss(blend(stacked, np.clip(weights, 0.0, None) + 1e-12, method), labels)

    if search == "simplex":
        points = math.comb(resolution + n_models - 1, n_models - 1)
        if points > 200_000:
            raise ValueError(
                f"simplex search over {n_models} models at resolution {resolution} is {points} "
                "blends: lower the resolution or use search='scipy'"
            )
        best = min(_simplex_grid(n_models, resolution), key=objective)
        return np.asarray(best, dtype=np.float64)
    start = np.full(n_models, 1.0 / n_models)
    fitted = minimize(
        objective,
        start,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n_models,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
    )
    weights = np.clip(fitted.x, 0.0, None)
    weights = weights / weights.sum()
    # SLSQP can stop early on flat objectives; never return worse than equal weights
    return weights if objective(weights) <= objective(start) else start


def per_class_accuracy(models: dict, labels) -> pd.DataFrame:
    """Accuracy per true class (rows "0 Lada Priora" ... "9 Lada 21099") and overall (row "all"), one column per
    model name."""
    labels = class_labels(labels)
    columns = {}
    for name, probs in models.items():
        predicted = np.asarray(probs).argmax(axis=1)
        n_classes = np.asarray(probs).shape[1]
        per_class = [
            float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else np.nan for c in range(n_classes)
        ]
        columns[name] = per_class + [accuracy(probs, labels)]
    n_rows = len(next(iter(columns.values()))) if columns else 1
    index = pd.Index([*(class_display_name(c) for c in range(n_rows - 1)), "all"], name="class")
    return pd.DataFrame(columns, index=index)


class EnsembleError(ValueError):
    """The model runs cannot be combined as asked (missing, or validated on different rows)."""


@dataclass
class Blend:
    """An ensemble fitted on the shared validation rows."""

    weights: pd.Series
    val_ids: pd.Series
    val_labels: np.ndarray
    val_probs: np.ndarray
    test_ids: pd.Series
    test_probs: np.ndarray
    model_val_probs: dict  # as blended: temperature-scaled when temperature_scaling is on
    temperature_scaling: bool = False
    # per model: its temperature (1.0 when off) and validation log-loss before and after scaling
    calibration: pd.DataFrame | None = None

    def scores(self) -> pd.DataFrame:
        """Weight and validation accuracy of each model and of the ensemble."""
        accuracies = {name: accuracy(p, self.val_labels) for name, p in self.model_val_probs.items()}
        accuracies["ensemble"] = accuracy(self.val_probs, self.val_labels)
        return self.weights.to_frame().join(pd.Series(accuracies, name="validation accuracy"), how="outer")


def combine_runs(
    run_folders: dict, method: str = "arithmetic", search: str = "scipy", temperature_scaling: bool = False
) -> Blend:
    """Read each model run's probs_val/probs_test, fit blend weights on the shared validation rows, blend.

    temperature_scaling: first scale each model's validation and test probabilities with its own temperature,
    fitted on its validation probabilities (lib.analysis.calibration), so that no over-confident model dominates."""
    from lib.runs import load_probs, probs_matrix

    vals, tests = {}, {}
    for name, folder in run_folders.items():
        try:
            vals[name], tests[name] = load_probs(folder, "val"), load_probs(folder, "test")
        except FileNotFoundError as err:
            raise EnsembleError(str(err)) from None
    names = list(run_folders)
    reference = vals[names[0]]
    for name in names[1:]:
        if not vals[name]["Id"].equals(reference["Id"]) or not tests[name]["Id"].equals(tests[names[0]]["Id"]):
            raise EnsembleError(
                f"{name} was validated or tested on other rows than {names[0]}: rerun both with "
                f"the same data_dir, seed, val_fraction and folds (the shared split)."
            )
    labels = reference["Category"].to_numpy()
    per_model = {name: probs_matrix(vals[name]) for name in names}
    per_model_test = {name: probs_matrix(tests[name]) for name in names}
    calibration = {}
    for name in names:
        temperature = fit_temperature(per_model[name], labels) if temperature_scaling else 1.0
        before = log_loss(per_model[name], labels)
        if temperature_scaling:
            per_model[name] = apply_temperature(per_model[name], temperature)
            per_model_test[name] = apply_temperature(per_model_test[name], temperature)
        calibration[name] = {
            "temperature": temperature,
            "log-loss before": before,
            "log-loss after": log_loss(per_model[name], labels),
        }
    weights = (
        fit_weights(list(per_model.values()), labels, method=method, search=search) if len(names) > 1 else np.ones(1)
    )
    return Blend(
        weights=pd.Series(weights, index=names, name="weight"),
        val_ids=reference["Id"],
        val_labels=labels,
        val_probs=blend(list(per_model.values()), weights, method),
        test_ids=tests[names[0]]["Id"],
        test_probs=blend(list(per_model_test.values()), weights, method),
        model_val_probs=per_model,
        temperature_scaling=temperature_scaling,
        calibration=pd.DataFrame.from_dict(calibration, orient="index").rename_axis("model"),
    )


def smoothed_top(label_smoothing: float, classes: int = NUM_CLASSES) -> float:
    """The top probability a model fits under label smoothing: its target for the true class, 1 - e + e/K (0.91
    for e 0.1 over 10 classes). A model that is right and sure sits near it, not near 1."""
    return 1.0 - float(label_smoothing) + float(label_smoothing) / classes


def label_smoothing_of(run_folders: dict) -> dict:
    """Each model run's label smoothing, from its params.json (0 when it records none)."""
    from pathlib import Path

    from lib.runs import read_json

    return {
        name: float(read_json(Path(folder) / "params.json").get("label_smoothing") or 0.0)
        if (Path(folder) / "params.json").is_file()
        else 0.0
        for name, folder in run_folders.items()
    }


def reachable_confidence(label_smoothing: dict, weights: pd.Series) -> float:
    """The blend's counterpart of smoothed_top: each model's, weighted by its blend weight."""
    total = float(weights.sum())
    return sum(float(weights[name]) * smoothed_top(label_smoothing.get(name, 0.0)) for name in weights.index) / total


def pseudo_labels(
    test_df: pd.DataFrame, test_probs: np.ndarray, threshold: float, ceiling: float = 1.0
) -> pd.DataFrame:
    """Test rows whose top probability is at least `threshold` x `ceiling`, labelled with their predicted class and
    that probability as `confidence` (05 writes them for a model notebook's pseudo-label stage). `ceiling` is the
    highest top probability the models can reach (reachable_confidence): with label smoothing 0.1 a sure model
    gives about 0.91, so an absolute threshold of 0.98 would keep nothing."""
    probs = np.asarray(test_probs)
    confident = probs.max(axis=1) >= threshold * ceiling
    return (
        test_df.loc[confident, ["Id", "path"]]
        .assign(Category=probs[confident].argmax(axis=1), confidence=probs[confident].max(axis=1))
        .reset_index(drop=True)
    )


def pseudo_label_rows(test_df: pd.DataFrame, fitted: Blend, run_folders: dict, threshold: float):
    """05's pseudo-labels: the test rows the blend is sure of on the scale its models can reach (pseudo_labels with
    the ceiling of reachable_confidence, each run's label smoothing read from its params.json). Returns (rows,
    the smallest top probability kept)."""
    ceiling = reachable_confidence(label_smoothing_of(run_folders), fitted.weights)
    return pseudo_labels(test_df, fitted.test_probs, threshold, ceiling), threshold * ceiling


def class_balance(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows per class (named, every class listed) and their share: what 05 prints about its pseudo-labels."""
    counts = rows["Category"].value_counts().reindex(range(NUM_CLASSES), fill_value=0)
    table = pd.DataFrame({"rows": counts, "share": counts / max(1, len(rows))})
    table.index = pd.Index([class_display_name(c) for c in table.index], name="class")
    return table
