# %% [markdown]
# # 02 Augmentation preview
#
# Training sees randomly changed copies of each photo. This notebook shows what the presets do, so you can
# judge whether a car stays recognisable: first the albumentations presets that run in the input pipeline
# (on the CPU), then the Keras preprocessing layers that run inside the model (on the accelerator).
#
# **Expected result.** Grids of the same photos under each preset, from `light` (small shifts, flips) to
# `heavy` (strong geometry, colour, blur and cut-outs). Nothing is trained. On the demo the photos are cartoon
# cars at 160 px; on the real data, real photos at 299 px.

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
picks = train.sample(photos, random_state=seed)
print(f"Presets available: {PRESETS}")

# %% [markdown]
# ## albumentations presets (input pipeline)
# Each row is one photo: the original first, titled with its class, then random augmented copies.

# %%
for preset in presets:
    images, titles = albumentations_samples(picks, preset, image_size, copies, seed)
    title = f"albumentations: {preset}"
    plots.image_grid(images, titles, columns=copies + 1, title=title, name=f"albumentations_{preset}")

# %% [markdown]
# Compare each copy with the original in its row. `light` and `medium` flip, shift and rotate a little and
# change brightness and contrast (medium a little more, plus some blur): the car stays easy to recognise.
# `heavy` also shears, shifts the hue, blurs and cuts black holes, so part of the car can be hidden or its
# colour can change. A copy can come out almost unchanged, because each transform fires only with some
# probability. Borders are filled by reflection, not black wedges, so the model cannot learn the wedges. On
# the demo the class is the body colour, so heavy's hue shift blurs the classes; the demo trains with
# `light`, the full profile with `medium`.

# %% [markdown]
# ## Keras preprocessing layers (inside the model)
# RandomFlip, RandomRotation, RandomZoom, RandomTranslation and RandomContrast (`heavy` adds RandomBrightness),
# used when a notebook sets `keras_augment`.

# %%
for preset in keras_presets:
    images, titles = keras_layer_samples(picks, preset, image_size, copies, seed)
    plots.image_grid(images, titles, columns=copies + 1, title=f"Keras layers: {preset}", name=f"keras_layers_{preset}")

# %% [markdown]
# The Keras `medium` preset uses about the same ranges as albumentations `medium` (up to 15 degrees, 10% zoom
# and shift), but every copy is rotated, zoomed and shifted, so this grid looks stronger, and a car near the
# edge can slide partly out of the frame. These layers run on the accelerator, which helps when the CPU cannot
# keep up with the input pipeline. Both model notebooks leave them off (`keras_augment = "none"`) in the demo
# and the full profile.

# %% [markdown]
# ## Summary
#
# We showed the same photos under each albumentations preset and under the Keras preprocessing layers. The
# notebook writes only `params.json` and `versions.json` to `runs/<profile>/02_augmentation_preview/`; the
# grids live in the executed notebook. To change what training uses, set `augment` or `keras_augment` in the
# parameters of 03 or 04. Next: `03_xception` (`make 03_xception`).
