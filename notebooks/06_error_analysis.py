# %% [markdown]
# # 06 Error analysis
#
# Where do the model runs (03 with Xception, 03 with ConvNeXt, 04), and the blend of 05, go wrong, and how far can
# their probabilities be trusted? This notebook reads the validation probabilities those runs saved (`probs_val.csv`
# in each run folder) and trains nothing, so it reruns in seconds after any of them. For each model and the ensemble:
# precision, recall and F1 per class, the class pairs most often confused, the photos of the most confident mistakes,
# a reliability diagram with its expected calibration error (ECE), and what temperature scaling does to the log-loss.
#
# **Expected result.** Tables and plots that name the classes ("3 Lada 2110"). On the full profile, expect the
# mistakes to gather in a few pairs of look-alike Lada models and the models to be somewhat over-confident
# (ECE of a few percent, a fitted temperature above 1). On the tiny profile, and for B7 on the demo, a model
# at chance predicts one class for every photo with almost uniform probabilities: all its mistakes form one
# column of pairs, its ECE is near 0 (confidence ~0.1, accuracy ~0.1), and its temperature goes to the upper
# bound, 20 (uniform probabilities are its best log-loss); those numbers only prove that the analysis runs.
# Everything is measured on the validation rows, the only labelled rows the models did not train on.

# %%
import pandas as pd
from IPython.display import display

from lib import data, paths, plots
from lib.analysis import gradcam
from lib.analysis.calibration import temperature_table
from lib.analysis.errors import confused_pairs, misclassified, per_class_table
from lib.images import read_resized
from lib.metrics import accuracy
from lib.notebook import collect_params, describe_data, open_run
from lib.runs import load_probs, probs_matrix, write_csv

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""  # empty: Kaggle input, then data/ (real data), then data/demo
profile = "full"
run_name = "06_error_analysis"
models = []  # run folders under runs/<profile>/; empty: every model run of the series (lib.paths.MODEL_RUNS)
ensemble = "05_ensemble"  # the blend's run folder; empty: analyse the models only
n_bins = 15  # equal-width confidence bins of the reliability diagram and the ECE
top_pairs = 10  # confused class pairs shown per model
gallery_size = 16  # mistakes shown as photos
gallery_image_size = 160
gradcam_photos = 4  # Grad-CAM: the surest mistakes and as many sure right answers per model
gradcam_image_size = 0  # 0: the size each model predicted at

# %%
params, data_dir, run = open_run(collect_params(globals(), _before))
models = list(models or paths.MODEL_RUNS)
print(f"Data folder: {describe_data(data_dir)}")

# %% [markdown]
# ## The validation probabilities
# Each run folder is found as in 05 (here, or under `/kaggle/input` in a Kaggle kernel). All runs must have
# predicted the same validation rows (the shared split); the photos' paths come from `train.csv`.

# %%
names = [*models, *([ensemble] if ensemble else [])]
frames = {name: load_probs(paths.find_run_dir(profile, name), "val") for name in names}
reference = frames[names[0]]
for name, frame in frames.items():
    if not frame["Id"].equals(reference["Id"]):
        raise ValueError(f"{name} was validated on other rows than {names[0]}: rerun it with the same split.")
labels = reference["Category"].to_numpy()
val_probs = {("ensemble" if name == ensemble else name): probs_matrix(frame) for name, frame in frames.items()}
photo_paths = reference[["Id"]].merge(data.load_train(data_dir)[["Id", "path"]], on="Id", how="left")["path"]
print(f"{len(labels)} validation rows, accuracy: "
      + ", ".join(f"{name} {accuracy(probs, labels):.3f}" for name, probs in val_probs.items()))

# %% [markdown]
# One line: the validation rows (the same for every model) and each model's accuracy on them, as in 05.

# %% [markdown]
# ## Per-class precision, recall and F1
# Recall: the share of a class's photos predicted as that class. Precision: the share of photos predicted as
# a class that really are it. Support: the class's validation photos.

# %%
per_class = pd.concat({name: per_class_table(probs, labels) for name, probs in val_probs.items()}, names=["model"])
write_csv(run.path("per_class.csv"), per_class.reset_index())
table = per_class.drop(columns="support").unstack("model")
table.insert(0, ("support", ""), per_class.loc[names[0], "support"])
display(table.round(2))

# %% [markdown]
# One row per class; for each measure one column per model. A class with a low recall is one the models
# miss (its photos go to other classes: see the pairs below); a low precision, one they use as a catch-all.
# On the demo each class has only a few validation photos, so each number moves in large steps.

# %% [markdown]
# ## The most confused pairs

# %%
pairs = pd.concat({name: confused_pairs(probs, labels, top=None) for name, probs in val_probs.items()},
                  names=["model", "rank"])
write_csv(run.path("confused_pairs.csv"), pairs.reset_index().drop(columns="rank"))
display(pairs.groupby(level="model", sort=False).head(top_pairs).round(3))
final = "ensemble" if ensemble else models[0]  # the model whose pairs and mistakes are drawn
of_final = lambda frame: frame[frame.index.get_level_values("model") == final].droplevel("model")
plots.confused_pairs_bar(of_final(pairs).head(top_pairs), title=f"{final}: most confused classes");

# %% [markdown]
# Each row is a (true class, predicted class) pair with how many validation photos of the true class went to
# the predicted one, and which share of the true class that is. On the real data, expect the top pairs to be
# Lada models of similar body shape; a pair confused both ways is a pair the models cannot tell apart, one
# confused one way only points to a class the models over-predict.

# %% [markdown]
# ## The most confident mistakes

# %%
mistakes = pd.concat({name: misclassified(probs, labels, reference["Id"], photo_paths)
                      for name, probs in val_probs.items()}, names=["model", "rank"])
write_csv(run.path("misclassified.csv"), mistakes.reset_index().drop(columns="rank"))
final_mistakes = of_final(mistakes)
display(final_mistakes.drop(columns="path").head(gallery_size).round(3))
plots.misclassified_gallery(final_mistakes, limit=gallery_size, image_size=gallery_image_size,
                            title=f"{final}: most confident mistakes");

# %% [markdown]
# The photos the final model got wrong while most sure of itself, with the true and the predicted class and
# the predicted class's probability. Confident mistakes are worth a look: a mislabelled photo, a photo of
# something else (an interior, a detail) or two cars in one photo all show up here first. Every mistake of
# every model is in `misclassified.csv`.

# %% [markdown]
# ## Where the network looked (Grad-CAM)
# Grad-CAM weighs the feature maps of a model's last convolutional block by how much they raise the score of
# a class, and draws the result over the photo: red where the evidence for that class was, blue where there
# was none. Each model is rebuilt from its run folder with its best weights (nothing is downloaded) and
# explains its own predicted class on its surest mistakes and its surest right answers, at the image size it
# predicted at. Then, for the ensemble's surest mistakes, each model shows where it saw the class the
# ensemble wrongly chose.

# %%
ensemble_sample = final_mistakes.head(gradcam_photos) if ensemble else final_mistakes.iloc[:0]
explained = gradcam.explain_runs({name: paths.find_run_dir(profile, name) for name in models}, val_probs, labels,
                                 reference["Id"], photo_paths, gradcam_photos, gradcam_image_size, ensemble_sample)
for run_cam in explained:
    plots.image_grid(run_cam.panels, run_cam.titles, columns=4, size=2.6,
                     title=f"{run_cam.name}: where it looked ({run_cam.image_size} px)", name=f"gradcam_{run_cam.name}")

# %% [markdown]
# Two photos per row: the photo with its true class, the predicted one and its confidence, then the heatmap.
# Right answers should light up the car itself (grille, lights, body line); a mistake that lights up the
# background, a watermark or a second car explains itself. A model at chance (tiny, B7 on the demo) has no
# evidence worth drawing: its maps are noise or blank.

# %%
if len(ensemble_sample):
    rows = []
    for i, (_, mistake) in enumerate(ensemble_sample.iterrows()):
        rows.append((read_resized(mistake["path"], gallery_image_size),
                     f"true: {mistake['true name']}\nensemble: {mistake['predicted name']}"))
        rows += [(run_cam.ensemble_overlays[i], f"{run_cam.name}: where it saw\n{mistake['predicted name']}")
                 for run_cam in explained]
    plots.image_grid([image for image, _ in rows], [title for _, title in rows], columns=1 + len(explained),
                     size=2.6, title="Ensemble: its surest mistakes, as each model saw them", name="gradcam_ensemble")
else:
    print("The ensemble made no mistakes on the validation rows: nothing to explain.")

# %% [markdown]
# One row per ensemble mistake: the photo, then each model's heatmap for the class the ensemble chose. When
# the models all light up the same misleading region, more data or a higher resolution for that pair of classes
# is the remedy; when only one does, the blend weights decide, and 05's weights are worth a look.

# %% [markdown]
# ## Calibration: reliability and temperature scaling
# A model is calibrated when, among the photos it predicts with confidence 0.8, 80 % are right. The
# reliability diagram bins the validation photos by confidence (the top probability) and compares each bin's
# accuracy with its mean confidence; the ECE is the photo-weighted mean gap. Temperature scaling divides the
# log-probabilities by one number T per model, fitted to minimise the validation log-loss: T > 1 softens an
# over-confident model, T < 1 sharpens an under-confident one; the predicted class never changes.

# %%
plots.reliability_diagram(val_probs, labels, n_bins=n_bins);
calibration = temperature_table(val_probs, labels, n_bins=n_bins)
calibration.insert(0, "accuracy", [accuracy(p, labels) for p in val_probs.values()])
write_csv(run.path("calibration.csv"), calibration.reset_index())
display(calibration.round(4))

# %% [markdown]
# Bars under the diagonal (red above them) mean over-confidence: a fitted T above 1; bars above it,
# under-confidence: T below 1. A T at the bound, 20, marks a model with no signal to sharpen (at chance). The
# "after" columns are measured on the rows T was fitted on, so they are optimistic; with few validation rows
# (demo, tiny) T can fit noise. To blend temperature-scaled models, rerun 05 with `temperature_scaling = True`
# (`make 05_ensemble FORCE=1` after setting it in the profile); the ensemble row here is the blend as 05 made
# it.

# %%
run.update_metrics(
    profile=profile,
    models={name: {"accuracy": float(row["accuracy"]), "macro_f1": float(per_class.loc[name, "F1"].mean()),
                   "ece": float(row["ECE before"]), "temperature": float(row["temperature"]),
                   "log_loss": float(row["log-loss before"]), "log_loss_scaled": float(row["log-loss after"]),
                   "mistakes": int((mistakes.index.get_level_values("model") == name).sum())}
            for name, row in calibration.iterrows()},
    n_bins=n_bins,
);

# %% [markdown]
# ## Summary
#
# We compared the model runs and the 05 ensemble on the validation rows class by class, listed the pairs they confuse
# and the mistakes they were surest of, and measured how well their confidence matches their accuracy, before
# and after temperature scaling. The run folder `runs/<profile>/06_error_analysis/` now holds
# `per_class.csv`, `confused_pairs.csv`, `misclassified.csv` and `calibration.csv` (one block of rows per
# model), `params.json`, `versions.json` and `metrics.json` (accuracy, macro F1, ECE, temperature and log-loss
# per model). Nothing is trained or submitted here. Next: if the models are clearly over-confident, try
# `temperature_scaling = True` in 05; if a few pairs dominate the mistakes, look at their photos and consider
# higher resolution or more training for those classes.
