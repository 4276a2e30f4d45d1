# %% [markdown]
# # 05 Ensemble
#
# Combines the model runs of the series: 03 with Xception, 03 again with ConvNeXt (`03_convnext`) and 04 with
# EfficientNetB7 (the list is `lib.paths.MODEL_RUNS`; `models` picks others). All predicted the same validation
# rows (the shared stratified split), so blend weights can be fitted there: non-negative weights summing to one
# that minimise the validation log-loss. The blended test probabilities become the final
# `submissions/submission.csv`, and the test rows the blend is sure of become pseudo-labels.
#
# **Expected result.** One line per model naming the run folder it was read from, a table of weights and
# validation accuracy per model and for the ensemble, a per-class table, the submission, and how many test rows
# were kept as pseudo-labels, per class. The weights minimise log-loss, not accuracy, so the ensemble's accuracy
# is usually, not always, at least the best single model's; and since the weights were fitted on these rows, its
# figure is slightly optimistic. On the demo, `make score` then prints the accuracy on the demo's hidden test
# labels. Nothing is trained here; it takes seconds.

# %%
from IPython.display import display

from lib import data, paths, plots
from lib.ensemble import class_balance, combine_runs, per_class_accuracy, pseudo_label_rows
from lib.notebook import collect_params, open_run
from lib.runs import write_csv
from lib.submission import read_sample_ids, write_named_submission

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""
profile = "full"
run_name = "05_ensemble"
models = []  # run folders under runs/<profile>/; empty: every model run of the series (lib.paths.MODEL_RUNS)
method = "arithmetic"  # arithmetic or geometric mean of probabilities
search = "scipy"  # scipy (SLSQP on log-loss) or simplex (grid)
submission_name = "submission"
# a test row becomes a pseudo-label when its top probability reaches this share of the highest one the models can
# reach under their label smoothing (1 - e + e/K: 0.91 for e 0.1), so 0.95 keeps rows at 0.865 or more
pseudo_label_threshold = 0.95
temperature_scaling = False  # scale each model's probabilities by its own temperature (fitted on validation) first

# %%
params, data_dir, run = open_run(collect_params(globals(), _before))

# %% [markdown]
# ## Where the model runs are
# Each model's run is its folder `runs/<profile>/<name>/` here. In a Kaggle kernel, where that folder is empty,
# it is searched for under `/kaggle/input`, where Kaggle mounts the attached outputs of the model kernels
# (as `/kaggle/input/<slug>/runs/...` or `/kaggle/input/notebooks/<user>/<slug>/runs/...`).

# %%
run_folders = {name: paths.find_run_dir(profile, name) for name in models or paths.MODEL_RUNS}
for name, folder in run_folders.items():
    print(f"{name}: run from {folder}")  # on Kaggle: which attached kernel output it came from

# %% [markdown]
# ## Weights fitted on the validation rows
# With `temperature_scaling = True`, each model's probabilities are first divided in log space by its own
# temperature T, fitted on its validation rows to minimise log-loss (T > 1: the model was over-confident). The
# table below then shows each model's T and its validation log-loss before and after; without it, T is 1.

# %%
fitted = combine_runs(run_folders, method=method, search=search, temperature_scaling=temperature_scaling)
display(fitted.calibration.round(4))
scores = fitted.scores()
display(scores)

# %% [markdown]
# Temperature scaling changes how sure each model is, never its predicted class, so its accuracy stays; its
# "log-loss after" is measured on the rows T was fitted on, so it is slightly optimistic. The weights sum to
# one (the ensemble's row has no weight of its own). A model that adds little on these rows gets a small weight
# or none. On the demo, while B7 sits at chance (0.1), its weight is 0 or small: its almost uniform
# probabilities can only soften the others' log-loss. The demo's ConvNeXt, trained from scratch for a few
# epochs at 32 px, is weaker than Xception, so it gets a smaller share or none. When the models are good and make
# different mistakes, as expected on the full profile, each gets a real share, and the ensemble's accuracy should
# match or beat the best single model.

# %% [markdown]
# ## Per-class accuracy

# %%
table = per_class_accuracy({**fitted.model_val_probs, "ensemble": fitted.val_probs}, fitted.val_labels)
display(table.round(3))
plots.confusion(fitted.val_labels, fitted.val_probs.argmax(axis=1), title="Ensemble: validation confusion matrix");

# %% [markdown]
# One row per class (its number and name), one column per model, and the overall accuracy in the row `all`.
# Look for classes where one model is clearly better than the others: that is where blending helps. On the demo
# each class has only 8 validation photos, so each step is 0.125. The confusion matrix shows the ensemble's own
# mistakes.

# %% [markdown]
# ## Submission and pseudo-labels
# The blended test predictions become the final submission. Test rows the ensemble is very sure of are
# saved as pseudo-labels. The model notebooks add them to the training data of any stage that has the key
# `"pseudo_labels": True` in its entry of `stages`; their parameter `pseudo_labels_file` says which file to
# read (empty: `pseudo_labels.csv` in this notebook's run folder).
#
# "Very sure" is measured on the scale the models can reach. Trained with label smoothing e over K classes, a
# model's target for the true class is 1 - e + e/K (0.91 for e 0.1 and 10 classes), so a model that is right and
# sure gives about 0.91, never 0.98: an absolute threshold of 0.98 kept no row at all. The threshold is therefore
# a share of that ceiling (each model's, weighted by its blend weight; each run's `label_smoothing` is read from
# its `params.json`).

# %%
sample_ids = read_sample_ids(data_dir / "sample-submission.csv")
predicted = fitted.test_probs.argmax(axis=1)
out = write_named_submission(fitted.test_ids, predicted, submission_name, sample_ids)
run.save_probs("val", fitted.val_ids, fitted.val_probs, fitted.val_labels)
run.save_probs("test", fitted.test_ids, fitted.test_probs)
confident, least = pseudo_label_rows(data.load_test(data_dir), fitted, run_folders, pseudo_label_threshold)
write_csv(run.path("pseudo_labels.csv"), confident)
run.update_metrics(model="ensemble", profile=profile, weights=fitted.weights.to_dict(),
                   val_accuracy=float(scores.loc["ensemble", "validation accuracy"]),
                   model_val_accuracy=scores["validation accuracy"].drop("ensemble").to_dict(),
                   pseudo_labels=len(confident), pseudo_label_min_confidence=least,
                   temperature_scaling=temperature_scaling, temperatures=fitted.calibration["temperature"].to_dict())
print(f"Submission written: {out}")
print(f"Pseudo-labels: kept {len(confident)} of {len(fitted.test_ids)} test rows, top probability >= {least:.3f} "
      f"({pseudo_label_threshold:g} x the {least / pseudo_label_threshold:.3f} the models reach under label "
      f"smoothing); saved in {run.path('pseudo_labels.csv')}")
display(class_balance(confident).round(3))

# %% [markdown]
# The lines give the submission path and how many test rows passed the threshold, and the table how they spread over
# the classes. A class with far fewer rows than the others is one the models are rarely sure of: training on these
# rows would tilt a model away from it. On the demo, models trained for a few CPU minutes are rarely that sure: in
# our run 22 of the 100 test photos passed, 9 of them of one class and none of four others, the lopsided set this
# table is there to catch (lower `pseudo_label_threshold`, or do not train on them). On the full profile,
# pretrained models should pass a large share of the 6,675 test photos, spread more evenly (not measured here).

# %% [markdown]
# ## Summary
#
# We fitted blend weights for the model runs on their shared validation rows, compared the models per class,
# wrote the blended predictions and kept the test rows the blend is sure of as pseudo-labels. Written:
# `submissions/submission.csv` (the final submission), and in `runs/<profile>/05_ensemble/`: `probs_val.csv`,
# `probs_test.csv`, `pseudo_labels.csv` (with each row's confidence), `params.json`, `versions.json` and
# `metrics.json` (weights, accuracies, the pseudo-label count and threshold, and each model's temperature: 1
# unless `temperature_scaling` is on). Next: on the demo, `make score` for the accuracy on the hidden test
# labels; on the real data, `make submit` uploads `submissions/submission.csv` to Kaggle. To use
# pseudo-labels, append a stage with `"pseudo_labels": True` to `stages` of a model run and rerun it, then this
# notebook.
