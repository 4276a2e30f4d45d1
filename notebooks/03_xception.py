# %% [markdown]
# # 03 Xception (and ConvNeXt): transfer learning in stages
#
# Fine-tunes the Keras backbone its parameters name, with a small custom head: `Xception` by default (the run
# `03_xception`), and ConvNeXt in the run `03_convnext`, which is this same notebook with its own parameters
# (`profiles/<profile>/03_convnext.yaml`: `make 03_convnext`). Training runs in stages: first the head alone on a
# frozen backbone, then more and more of the backbone, with the image size growing from stage to stage
# (progressive resizing). BatchNorm layers of a pretrained backbone stay frozen throughout. The middle stage
# mixes photos (CutMix and MixUp) and the later ones validate an exponential moving average (EMA) of the weights.
# Validation and test photos are predicted with test-time augmentation (TTA), at the size that does best on the
# validation photos. Training uses every GPU or TPU core it finds (`distribute = "auto"`): on Kaggle's GPU T4 x2
# both T4s train.
#
# **Expected result.** Full profile on the real data (ImageNet weights, GPU): validation accuracy around
# 0.95-0.97 for Xception, in line with the seed notebook's 0.95086 public score; ConvNeXt-Base (pretrained on
# ImageNet-21k) should do better, but that is not measured here. Demo profile: Xception from scratch on the
# cartoon cars, all layers trained at 72 then 96 px, 2-pass TTA, a 10-minute budget on a CPU; on an idle 2-core
# machine it reaches about 0.9-1.0 validation accuracy. The demo's ConvNeXt-Tiny, from scratch at 32 px for four
# epochs in two stages, reaches less than Xception (its numbers are in the README's measured times). The demo
# proves the pipeline, not the score.
# Outputs: `submissions/<submission_name>.csv` (`xception.csv`, `convnext.csv`) and the run folder
# `runs/<profile>/<run_name>/` (parameters, versions, history.csv, best weights, probabilities, metrics).

# %%
from IPython.display import display

from lib import experiment, plots
from lib.notebook import collect_params

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""  # empty: Kaggle input, then data/ (real data), then data/demo
profile = "full"
run_name = "03_xception"
submission_name = "xception"
seed = 42
val_fraction = 0.2  # one stratified fold of round(1 / val_fraction), shared by every model
folds = 0  # 0: the holdout above; K (2 or more): K-fold, one model per fold, out-of-fold probabilities for 05
max_bad_fraction = 0.01  # stop if more of train.csv is unusable
# model
backbone = "xception"
weights = "imagenet"  # or None to train from scratch
pooling = "avg"  # avg, max or avgmax
head_batchnorm = True
dropout = 0.3
dense_units = 256  # 0: no hidden dense layer
activation = "relu"  # relu, swish, gelu
l2 = 0.0
# stochastic depth the backbone's blocks ramp up to (timm's drop_path_rate); None: keras.applications' own, which
# is 0.2 for EfficientNet V1 and V2 and none for Xception and ConvNeXt; 0 turns it off
drop_path = None
precision = "auto"  # auto (by device: float32 CPU, float16 GPU < Ampere, bfloat16 newer GPU/TPU), float32, ...
# devices: auto (every GPU or TPU core found), none, mirrored (tf.distribute, GPUs), tpu, data_parallel (JAX)
distribute = "auto"
lr_scaling = "sqrt"  # how each stage's lr follows the global batch over N replicas: none, linear (x N), sqrt
jit_compile = "auto"
# data and augmentation
batch_size = 32  # per replica (device); the global batch is this x the replicas
augment = "medium"  # albumentations preset: none, light, medium, heavy
keras_augment = "none"  # Keras preprocessing layers inside the model: none, light, medium, heavy
workers = 0  # input pipeline threads (0: automatic)
threads = "auto"  # the backend's compute threads: auto (every core this process may use) or a number
# training. Per stage: "mix" mixes training batches (CutMix and MixUp: their Beta alphas, "p" the share of batches
# mixed, "switch" the share of those by CutMix); "ema" validates and keeps the optimizer's moving average of the
# weights (its momentum); "clipnorm" clips each gradient's norm. Starting points from timm's and the papers'
# recipes, not measured on this data: mixing in the middle stage only, so the last one fits unmixed photos
stages = [
    {"name": "head", "trainable": "head", "epochs": 2, "image_size": 224, "optimizer": "adam", "lr": 1e-3},
    {"name": "top half", "trainable": 0.5, "epochs": 6, "image_size": 299, "optimizer": "adamw", "lr": 2e-4,
     "weight_decay": 1e-4, "schedule": "cosine", "schedule_options": {"warmup_epochs": 1},
     "mix": {"cutmix": 1.0, "mixup": 0.2, "p": 0.5}, "ema": 0.998},
    {"name": "all", "trainable": "all", "epochs": 6, "image_size": 384, "optimizer": "adamw", "lr": 5e-5,
     "weight_decay": 1e-4, "schedule": "onecycle", "ema": 0.998},
]
label_smoothing = 0.1
# Pseudo-labelling: after 05_ensemble has run, append a stage with "pseudo_labels": True to `stages`; it trains
# on train + the test rows 05 labelled with confidence >= its threshold (appending a stage keeps the finished ones).
pseudo_labels_file = ""  # empty: runs/<profile>/05_ensemble/pseudo_labels.csv
class_weight = None  # or "balanced"
early_stopping_patience = 3
gradient_accumulation_steps = None
lr_find_steps = 100  # LR range test before training (0: skip)
time_budget_minutes = "auto"  # auto: Kaggle's session limit minus 20 min (12 h GPU/CPU, 9 h TPU), none elsewhere
predict_reserve_minutes = 30  # kept free for prediction and the submission
verbose = "auto"
# prediction. "auto": the size the best weights were trained at and 1.125x and 1.25x of it (multiples of 32), each
# tried once on the validation photos without TTA, the most accurate kept; 0: the trained size; a number: that size
predict_image_size = "auto"
tta = ["identity", "hflip", "crop", "crop_hflip", "zoom_out"]
tta_passes = 10

# %%
params = collect_params(globals(), _before)
ctx = experiment.setup(params)

# %% [markdown]
# Two lines. The first says what this run computes with: the devices and how training spreads over them, e.g.
# `Devices: 2 x Tesla T4 (tf.distribute.MirroredStrategy), global batch 64 = 32 per replica, precision
# mixed_float16` on Kaggle's GPU T4 x2, or `1 x CPU (single device)` here, then the cores this process may use,
# the threads it computes and decodes with (`threads`, `workers`), and the Keras version and backend. The second
# says what it trains on: the data, its split, the time budget and the run folder. `batch_size` is per device, and
# with several devices each step trains on all their batches at once.

# %% [markdown]
# ## Model

# %%
model = experiment.build(ctx)
print(f"{model.name}: {model.count_params():,} parameters")
display(experiment.head_table(model))

# %% [markdown]
# The model, layer by layer: uint8 photos of any size, rescaled to what the backbone expects ([-1, 1] for
# Xception; ConvNeXt normalises 0-255 pixels itself), the backbone as one row (Xception about 20.9 million
# weights, ConvNeXt-Tiny 27.8, ConvNeXt-Base 87.6), then the head that this notebook adds: global average pooling,
# a BatchNorm, dropout, a hidden dense layer and the 10-class softmax. The image size does not change the count:
# the backbone is convolutional and the pooling makes its output one vector.

# %% [markdown]
# ## The plan: what trains, in what order
# Each row is one stage, run in order. A stage says which part of the backbone trains (`head`: none of it, a
# fraction: that share of its layers from the top, `all`), at which image size, with which optimizer, learning
# rate (already scaled for the devices found), schedule and batch. The weights each stage trains carry over to
# the next, so early stages teach the new head on a frozen backbone before later ones fine-tune the backbone
# itself at larger sizes (progressive resizing).
#
# A fraction such as the full profile's 0.5 moves to the nearest block boundary of the backbone, so no block
# trains in part (keras-io's EfficientNet fine-tuning example warns that a block's shortcut spans the whole block).
#
# **BatchNorm stays frozen** in a pretrained backbone in every stage: its moving averages were measured on
# millions of ImageNet photos, and updating them from batches of a few dozen car photos would replace them with
# noisy estimates and undo much of what the backbone learned (the Keras transfer-learning guide). In Keras 3 a
# frozen BatchNorm layer runs in inference mode whatever the `training` flag, so the backbone itself still runs in
# training mode: its stochastic depth (EfficientNet's drop-connect) works. On the demo, which trains from
# scratch, BatchNorm has nothing to keep and trains with the rest. ConvNeXt has no BatchNorm (LayerNorm, which
# keeps no statistics).
#
# The columns `mix` and `EMA` say which stages mix their training photos and which validate the weights'
# moving average (see the training section).

# %%
display(experiment.plan_table(ctx, model))

# %% [markdown]
# The full profile trains the head alone for 2 epochs at 224 px (about 0.5 million of 21 million weights),
# then the top half of the backbone at 299 px with CutMix/MixUp on half the batches, then everything at 384 px
# with a smaller learning rate and no mixing; the last two validate the EMA weights. The demo trains all layers
# from the start (there are no pretrained weights to protect): Xception at 72 then 96 px, ConvNeXt-Tiny at 32 px
# in both stages (larger is too slow on a CPU), with mixing in its first stage and EMA in both.

# %% [markdown]
# ## Learning-rate schedule
# The learning rate every step will use, stage by stage.

# %%
plots.lr_schedule(experiment.planned_lr(ctx));

# %% [markdown]
# One colour per stage, log scale. Check that each stage starts and ends where you meant it to. The full
# profile shows a flat 1e-3 for the head, a warm-up then cosine decay from 2e-4, and a one-cycle bump peaking
# at 5e-5. Xception's demo shows a one-cycle curve peaking at 2e-3 and falling to almost zero, then one small
# triangle up to 2e-4 and back; ConvNeXt's demo two one-cycle curves.

# %% [markdown]
# ## LR range test
# The learning rate rises exponentially while the loss is recorded; the suggestion is where the loss falls
# fastest. It runs on the first stage's set-up and leaves the weights as they were. When every stage has
# already finished in the run folder, training has nothing left to use a suggestion for, so the test is skipped.

# %%
found = experiment.find_lr(ctx, model, lr_find_steps)
if found is not None:
    from lib.lr_find import plot_lr_find

    plot_lr_find(found);

# %% [markdown]
# Read the curve from left to right: flat, then falling, then shooting up where the learning rate is too
# high. A good learning rate sits on the falling part, well before the climb. The suggestion is a hint, not a
# setting: the stage keeps its own `lr`. On the demo, 15 steps of a network trained from scratch give a
# noisy, mostly flat curve, so the suggestion means little there. The full profile runs 100 steps on the
# head of the frozen ImageNet backbone, where the dip should be clearer. The y axis spans the losses measured,
# from just below the lowest to 1.5 times the first, so the blow-up at the right-hand end runs off the top.

# %% [markdown]
# ## Training
# Each stage prints its trainable-parameter count. A finished stage found in the run folder is skipped; an
# interrupted one resumes from its last epoch, exactly as if it had not stopped. The time budget stops
# training cleanly, and the best weights are used from here on; rerun (with a larger budget, or in a new
# session) and the stopped stage carries on from its last epoch.
#
# **Mixing.** A stage with `mix` blends the photos of a training batch two by two: CutMix pastes a box of one
# photo onto another, MixUp overlays them, and the label becomes the mix of the two labels in the same
# proportions (`keras.layers.CutMix` and `keras.layers.MixUp`, in the input pipeline; 02 shows examples). Train
# accuracy then counts a mixed photo as right when the model picks the larger share's class, so it reads lower
# than on plain photos; validation photos are never mixed.
#
# **EMA.** A stage with `ema` keeps an exponential moving average of the weights in the optimizer (Keras's
# `use_ema`). Validation, the best checkpoint and everything predicted afterwards use the average, which is
# usually smoother and a little more accurate than the last step's weights; training itself goes on with the raw
# weights, and the resume backup keeps both. The history's `val_on_ema` column says which weights each epoch's
# validation saw (1: the average).

# %%
result, evaluation = experiment.fit_and_evaluate(ctx, model)  # with folds >= 2: one model per fold
if result:
    display(result.stage_table())
    plots.history(result.history);

# %% [markdown]
# The table has one row per stage: epochs run out of planned, best validation accuracy, whether the time budget
# stopped it, and its mixing and EMA. In the plots, dotted lines mark the stage boundaries. Look for validation
# accuracy rising with train accuracy; a widening gap means overfitting. On the demo, validation accuracy often stays
# at 0.1 for the first epoch or two while train accuracy climbs, then catches up: this is common for a network
# trained from scratch. On an idle 2-core CPU both stages finish and validation reaches about 0.99; on a busy machine
# the epochs are slower and the 10-minute budget can stop a stage early (`stopped_by_budget` is then True and
# accuracy is lower). The demo's ConvNeXt climbs more slowly, and its mixed first stage shows a train accuracy below
# its validation accuracy. On the full profile, the last stage should end near the 0.95-0.97 given at the top.

# %% [markdown]
# ## Validation: the prediction size, then without and with TTA
# With `predict_image_size = "auto"` the validation photos were first predicted once at each candidate size,
# without TTA: the size the best weights were trained at, and 1.125x and 1.25x of it rounded to a multiple of 32.
# A network trained on random crops sees objects larger than in the full, unaugmented photo, so it often does
# better when tested a little larger than trained (Touvron et al. 2019, "FixRes"). The cost is one extra
# validation pass per extra size. Under K-fold these are out-of-fold predictions, one per train row.

# %%
if evaluation.size_search is not None:
    display(evaluation.size_search.round(4))
display(evaluation.table)
plots.confusion(evaluation.val_labels, evaluation.val_probs.argmax(axis=1));

# %% [markdown]
# The first table has one row per size tried and marks the one kept (the most accurate; on a tie the lower log-loss).
# Since it was chosen on these photos, the accuracies below are slightly optimistic. On the demo, Xception tries 96
# and 128 px (72 and 96 when its best weights come from the 72-px stage); ConvNeXt at 32 px has no larger candidate
# (36 and 40 round back to 32). The second table compares plain predictions with TTA at the kept size; TTA usually
# gains a little, but on a small validation set it can also tie or lose. In the confusion matrix, rows are the true
# class and columns the prediction: a strong diagonal is good, and any bright cell off it shows two models the
# network mixes up. On the demo the validation set has only 80 photos (8 per class), so one photo moves accuracy by
# 0.0125. On the real data (about 3,100 validation photos), look for errors between the Lada models that look alike.

# %% [markdown]
# ## Submission

# %%
experiment.submit(ctx, evaluation.test_probs, submission_name)
display(experiment.key_metrics(ctx))

# %% [markdown]
# The submission is a CSV with one predicted class per test Id, checked against `sample-submission.csv`
# before it is written. The table repeats the key numbers from `metrics.json`. "Best validation accuracy
# while training" comes from the best epoch; the first two rows re-predict with the best weights at the
# prediction size, so they can differ from it.

# %% [markdown]
# ## Summary
#
# We built the backbone with a small head, plotted the learning-rate plan and ran the LR range test, trained in
# stages (mixing photos in the middle stage, validating the EMA weights) under a time budget, picked the
# prediction size on the validation photos, and predicted the validation and test photos with TTA. Written:
# `submissions/<submission_name>.csv`, and in `runs/<profile>/<run_name>/`: `params.json`, `versions.json`,
# `history.csv`, the best weights, `probs_val.csv` and `probs_test.csv` (which 05 needs), `metrics.json` (with
# the sizes tried) and `problems.csv`. Rerunning resumes and skips finished stages. Next: the ConvNeXt run of this
# notebook (`make 03_convnext`), then `04_efficientnetb7` (`make 04_efficientnetb7`), then `05_ensemble`.
