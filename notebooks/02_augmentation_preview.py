# %% [markdown]
# # 02 Augmentation preview
#
# Training sees randomly changed copies of each photo. This notebook shows what the presets do, so you can
# judge whether a car stays recognisable: first the albumentations presets that run in the input pipeline
# (on the CPU), then the Keras preprocessing layers that run inside the model (on the accelerator).
#
# **Expected result.** Grids of the same photos under each preset, from `light` (small shifts, flips) to
# `heavy` (strong geometry, colour, blur and cut-outs).

# %%
from lib import data, plots
from lib.augment import PRESETS
from lib.notebook import collect_params, open_run
from lib.preview import albumentations_samples, keras_layer_samples

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""
profile = "full"
run_name = "02_augmentation_preview"
image_size = 299
photos = 4  # different photos per grid
copies = 4  # augmented copies of each photo
presets = ["light", "medium", "heavy"]
keras_presets = ["medium"]
seed = 42

# %%
params, data_dir, run = open_run(collect_params(globals(), _before))
train = data.load_train(data_dir)
picks = train.sample(photos, random_state=seed)["path"].tolist()
print(f"Presets available: {PRESETS}")

# %% [markdown]
# ## albumentations presets (input pipeline)
# Each row is one photo: the original first, then random augmented copies.

# %%
for preset in presets:
    images, titles = albumentations_samples(picks, preset, image_size, copies, seed)
    plots.image_grid(images, titles, columns=copies + 1, title=f"albumentations: {preset}")

# %% [markdown]
# ## Keras preprocessing layers (inside the model)
# RandomFlip, RandomRotation, RandomZoom and RandomContrast, used when a notebook sets `keras_augment`.

# %%
for preset in keras_presets:
    images, titles = keras_layer_samples(picks, preset, image_size, copies, seed)
    plots.image_grid(images, titles, columns=copies + 1, title=f"Keras layers: {preset}")
