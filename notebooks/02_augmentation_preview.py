# %% [markdown]
# # 02 Augmentation preview
#
# Training sees randomly changed copies of each photo. This notebook shows what the presets do, so you can
# judge whether a car stays recognisable: first the albumentations presets that run in the input pipeline
# (on the CPU), then the Keras preprocessing layers that run inside the model (on the accelerator), then CutMix
# and MixUp, which mix the photos of a training batch two by two, labels included.
#
# **Expected result.** Grids of the same photos under each preset, from `light` (small shifts, flips) to
# `heavy` (strong geometry, colour, blur and cut-outs), then a batch of photos before and after CutMix and MixUp
# with the label mix each one now carries. Nothing is trained. On the demo the photos are cartoon cars at 160 px;
# on the real data, real photos at 299 px.

# %%
from lib import data, plots
from lib.augment import PRESETS
from lib.notebook import collect_params, open_run
from lib.preview import albumentations_samples, keras_layer_samples, mixed_samples

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
mix_photos = 6  # photos in the batch that CutMix and MixUp mix with each other
mix = {"cutmix": 1.0, "mixup": 0.2}  # each one's Beta alpha, as the model notebooks' middle stages use them
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
# ## CutMix and MixUp (input pipeline, whole batches)
# A training stage with `mix` (see 03) mixes each batch with `keras.layers.CutMix` or `keras.layers.MixUp`: every
# photo is paired with another photo of the batch (a random permutation), and its label becomes the two labels in
# the same proportions. CutMix pastes a box of the partner over the photo, the label share following the box's
# area; MixUp overlays the whole partner with a weight drawn from Beta(alpha, alpha). Below, the first row is the
# batch as it comes, the second the same batch mixed, each titled with its label mix (the two largest shares).

# %%
mix_picks = train.sample(mix_photos, random_state=seed + 1)
for kind in ("cutmix", "mixup"):
    if mix.get(kind):
        images, titles = mixed_samples(mix_picks, kind, mix[kind], image_size, seed)
        name = {"cutmix": "CutMix", "mixup": "MixUp"}[kind]
        plots.image_grid(images, titles, columns=mix_photos, size=2.2, title=f"{name} (alpha {mix[kind]:g})",
                         name=f"mix_{kind}")

# %% [markdown]
# With CutMix, a box of another photo now sits in each photo, and the label shares match the areas: a photo mostly
# covered by its partner's box takes mostly its partner's class. With alpha 0.2, MixUp's weights lie mostly near
# 0 or 1, so most mixed photos look like one of the two (their own or their partner's, as the label says) with a
# faint ghost of the other, and a few are half-and-half blends. A photo paired with itself, or with a car of its own
# class, keeps a single class. The model learns to
# spread its belief in the same proportions, which discourages over-confidence; on the demo, where the class is
# the body colour, a pasted box of another colour is exactly the evidence the label share describes.

# %% [markdown]
# ## Summary
#
# We showed the same photos under each albumentations preset and under the Keras preprocessing layers, and a
# batch mixed by CutMix and by MixUp with its soft labels. The notebook writes only `params.json` and
# `versions.json` to `runs/<profile>/02_augmentation_preview/`; the grids live in the executed notebook and in
# its `figures/`. To change what training uses, set `augment` or `keras_augment`, and a stage's `mix`, in the
# parameters of 03 or 04. Next: `03_xception` (`make 03_xception`).
