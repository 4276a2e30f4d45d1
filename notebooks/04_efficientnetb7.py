# %% [markdown]
# # 04 EfficientNetB7: large images under a time budget
#
# The same staged transfer learning as notebook 03, with `EfficientNetB7` at 384 -> 448 -> 512 px. B7 is
# slow and memory-hungry: the batch per device shrinks as the images grow (16 -> 8 -> 4). On Kaggle's GPU T4 x2
# both T4s train, so each step takes 32 -> 16 -> 8 photos. The seed's B7 notebook never produced a submission
# because Kaggle's session ended first; here a time budget stops training cleanly before the deadline, the best
# weights are restored, and the notebook always ends with a written, validated submission. The recipe is 03's:
# CutMix/MixUp in the middle stage, the EMA weights validated in the later ones, BatchNorm frozen while B7's
# built-in stochastic depth (drop-connect) stays on, and the prediction size picked on the validation photos.
#
# **Expected result.** Full profile on a Kaggle GPU: validation accuracy around 0.96-0.98 (competitors
# reported 0.972-0.978 public scores with EfficientNets at 384-512 px). Demo profile: B7 from scratch on the
# cartoon cars at 32 px, one stage of two epochs that trains the top 10% of its layers (blocks 6m and 7a-7d and
# the head: training every layer takes minutes to trace on a CPU), with a 5-minute budget as a safety net. It proves
# that B7 builds, trains, restores its best weights, predicts with TTA and writes a submission; its accuracy
# says nothing about B7 on real photos. The budget's clean stop is covered by the tests.
# `submissions/efficientnetb7.csv` is written either way. Run folder: `runs/<profile>/04_efficientnetb7/`.
#
# **On the demo, B7 stays at chance (0.1), and that is expected.** We measured it on the project's 2-core
# CPU: trained from scratch, B7 stayed at 0.10-0.19 validation accuracy even after 10 epochs at 32 px (about
# 17 minutes, more than the whole demo may take), and with higher learning rates it diverged; the runs are
# listed in `profiles/demo/04_efficientnetb7.yaml`. A 64-million-parameter network does not learn 10 classes
# from 320 images in a few CPU minutes without pretrained weights. The full profile starts from ImageNet
# weights, on a GPU.

# %%
from IPython.display import display

from lib import experiment, plots
from lib.notebook import collect_params

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""  # empty: Kaggle input, then data/ (real data), then data/demo
profile = "full"
run_name = "04_efficientnetb7"
submission_name = "efficientnetb7"
seed = 42
val_fraction = 0.2  # must match notebook 03 so the ensemble can fit its weights on the same rows
folds = 0  # 0: the holdout above; K (2 or more): K-fold, one model per fold, out-of-fold probabilities for 05
max_bad_fraction = 0.01
# model
backbone = "efficientnetb7"
weights = "imagenet"
pooling = "avg"
head_batchnorm = True
dropout = 0.4
dense_units = 0  # B7's 2560 features go straight to the classifier
activation = "swish"
l2 = 0.0
drop_path = None  # B7's stochastic depth: None keeps keras.applications' drop_connect_rate 0.2; 0 turns it off
precision = "auto"  # auto (by device: float32 CPU, float16 GPU < Ampere, bfloat16 newer GPU/TPU), float32, ...
# devices: auto (every GPU or TPU core found), none, mirrored (tf.distribute, GPUs), tpu, data_parallel (JAX)
distribute = "auto"
lr_scaling = "sqrt"  # how each stage's lr follows the global batch over N replicas: none, linear (x N), sqrt
jit_compile = "auto"
# data and augmentation
batch_size = 16  # per replica (device); the global batch is this x the replicas
augment = "medium"
keras_augment = "none"
workers = 0
threads = "auto"  # the backend's compute threads: auto (every core this process may use) or a number
# training: the batch shrinks as images grow. "mix", "ema" and "clipnorm" as in 03; starting points, not measured
# on this data (the EMA momentum follows the steps: about 3,900 in stage 2 and 6,200 in stage 3 on two T4s)
stages = [
    {"name": "head", "trainable": "head", "epochs": 2, "image_size": 384, "optimizer": "adam", "lr": 1e-3},
    {"name": "top 30%", "trainable": 0.3, "epochs": 5, "image_size": 448, "batch_size": 8, "optimizer": "adamw",
     "lr": 1e-4, "weight_decay": 1e-5, "schedule": "cosine", "schedule_options": {"warmup_epochs": 1},
     "mix": {"cutmix": 1.0, "mixup": 0.2, "p": 0.5}, "ema": 0.999},
    {"name": "all", "trainable": "all", "epochs": 4, "image_size": 512, "batch_size": 4, "optimizer": "adamw",
     "lr": 3e-5, "weight_decay": 1e-5, "schedule": "onecycle", "ema": 0.999},
]
label_smoothing = 0.1
# Pseudo-labelling: after 05_ensemble has run, append a stage with "pseudo_labels": True to `stages`; it trains
# on train + the test rows 05 labelled with confidence >= its threshold (appending a stage keeps the finished ones).
pseudo_labels_file = ""  # empty: runs/<profile>/05_ensemble/pseudo_labels.csv
class_weight = None
early_stopping_patience = 3
# e.g. 4 keeps the effective batch up on one device; under TensorFlow's MirroredStrategy (Kaggle's 2 x T4) it
# stops with a message, as Keras cannot sync its conditional update there (JAX's data_parallel can)
gradient_accumulation_steps = None
time_budget_minutes = "auto"  # auto: Kaggle's session limit minus 20 min (12 h GPU/CPU, 9 h TPU), none elsewhere
predict_reserve_minutes = 50  # 10-pass TTA at 512 px over 6,675 test photos and the size search take a while
verbose = "auto"
# prediction: "auto" tries the trained size, 1.125x and 1.25x (multiples of 32) on validation, as in 03
predict_image_size = "auto"
tta = ["identity", "hflip", "crop", "crop_hflip", "zoom_out"]
tta_passes = 10

# %%
params = collect_params(globals(), _before)
ctx = experiment.setup(params)

# %% [markdown]
# As in 03: the devices and the strategy that spreads training over them, the global batch and precision
# (`mixed_float16` on a T4), the cores and threads, the backend; then the data, its split and the time budget
# (`auto`: 700 minutes in a Kaggle GPU session, 520 on a TPU).

# %% [markdown]
# ## Model

# %%
model = experiment.build(ctx)
print(f"{model.name}: {model.count_params():,} parameters")
display(experiment.head_table(model))

# %% [markdown]
# About 64 million parameters, three times Xception: this is why B7 needs small batches and a time budget. B7
# rescales and normalises its input itself, so the photos go in as 0-255 floats; its 2,560 pooled features go
# straight to the classifier (`dense_units = 0`), after BatchNorm and dropout.

# %% [markdown]
# ## The plan: what trains, in what order
# One row per stage, as in 03: the trainable part of the backbone and its weights, the image size, optimizer,
# learning rate, schedule and batch. As in 03, BatchNorm stays frozen in the pretrained backbone (its ImageNet
# statistics are better than any a batch of 4-16 photos could give), and the head learns first.

# %%
display(experiment.plan_table(ctx, model))

# %% [markdown]
# The full profile: 2 epochs of the head at 384 px, then the top 30 % of B7's layers at 448 px, then all of
# them at 512 px, the batch per device shrinking from 16 to 8 to 4 as the photos grow; the middle stage mixes
# photos (CutMix/MixUp) and the later two validate the EMA weights. The demo plans two epochs of the top 10% of
# B7's layers (rounded to a block boundary), from scratch, at 32 px: enough to prove the plumbing, not to learn.

# %% [markdown]
# ## Learning-rate schedule
# The learning rate every step will use, stage by stage.

# %%
plots.lr_schedule(experiment.planned_lr(ctx));

# %% [markdown]
# One colour per stage, log scale. The full profile shows a flat 1e-3 for the head, a warm-up then cosine
# decay from 1e-4, and a one-cycle bump peaking at 3e-5. The curve comes from the same stage plan training
# follows, so each stage has its own batch size: the full profile's stages 2 and 3 (batches of 8 and 4) take
# two and four times as many steps per epoch as a batch of 16 would. The demo shows a single one-cycle curve
# over its two epochs; if the budget stops training, the steps after that never run.

# %% [markdown]
# ## Training
# Each stage prints its trainable-parameter count. When the next epoch would cross the time budget, training
# stops and the best weights so far are restored, leaving `predict_reserve_minutes` for prediction. Rerunning
# skips finished stages and resumes an interrupted or budget-stopped one from its last epoch.

# %%
result, evaluation = experiment.fit_and_evaluate(ctx, model)  # with folds >= 2: one model per fold
if result:
    display(result.stage_table())
    plots.history(result.history);

# %% [markdown]
# The table says per stage how many epochs ran out of those planned and whether the time budget stopped it;
# the plots show accuracy and loss per epoch. On the demo, its two planned epochs run (`stopped_by_budget` is
# False) and validation accuracy stays near 0.1, chance for 10 classes, as measured above: the top blocks of a
# random B7 train on random features, and B7 would need far more to learn from scratch. On the full
# profile, expect all three stages, or a clean stop in the last one when the session runs short; the best
# epoch's weights are kept either way.

# %% [markdown]
# ## Validation: the prediction size, then without and with TTA
# As in 03: with `predict_image_size = "auto"` each candidate size was tried once on the validation photos,
# without TTA (one extra validation pass per extra size; at 576-640 px for B7 that is minutes on a T4), and the
# most accurate kept. Under K-fold these are out-of-fold predictions, one per train row.

# %%
if evaluation.size_search is not None:
    display(evaluation.size_search.round(4))
display(evaluation.table)
plots.confusion(evaluation.val_labels, evaluation.val_probs.argmax(axis=1));

# %% [markdown]
# Same reading as in 03: the table compares plain predictions with TTA, and the matrix puts the true class in
# rows and the prediction in columns. A model at chance shows up as one or two full columns (it predicts the
# same class for almost every photo). On the demo's 80 validation photos, one photo is 0.0125 of accuracy.
# On the full profile, the diagonal should be nearly full; 05 shows where B7's errors differ from Xception's.

# %% [markdown]
# ## Submission

# %%
experiment.submit(ctx, evaluation.test_probs, submission_name)
display(experiment.key_metrics(ctx))

# %% [markdown]
# The submission is written even when the budget stopped training, which is the point of this notebook. The
# table repeats the key numbers from `metrics.json`. A weak B7 does not spoil the final submission: 05 fits
# the blend weights on the validation rows and gives a weak model a small weight, or none.

# %% [markdown]
# ## Summary
#
# We built EfficientNetB7, trained it in stages under a time budget, restored the best weights and predicted
# the validation and test photos with TTA. Written: `submissions/efficientnetb7.csv`, and in
# `runs/<profile>/04_efficientnetb7/`: `params.json`, `versions.json`, `history.csv`, the best weights,
# `probs_val.csv` and `probs_test.csv` (which 05 needs), `metrics.json` and `problems.csv`. Rerunning resumes
# and skips finished stages. Next: `05_ensemble` (`make 05_ensemble`), once 03 has run too.
