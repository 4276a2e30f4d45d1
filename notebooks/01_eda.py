# %% [markdown]
# # 01 Exploratory data analysis
#
# A first look at the data before any training: how many photos each of the 10 car models has, what sizes
# the photos come in, what they look like, which files are broken or missing, and which photos are near-copies
# of each other (label noise inside train, train photos that reappear in test).
#
# **Expected result.** On the real data: 15,561 train photos, classes between 1,207 and 1,971 photos,
# mostly 640x480 and 640x360, 6,675 test photos. On the offline demo: 400 train and 100 test cartoon cars,
# 40 per class, at the same sizes; the demo proves that the checks and plots run, it says nothing about the
# real photos. The problem table lists every unreadable or missing file with what the pipeline will do
# about it. The duplicate scan finds the demo's 5 planted near-copies (2 same-label, 1 with a conflicting label,
# 2 train photos in test), and perhaps a chance look-alike among the simple cartoons. The notebook trains
# nothing; it takes seconds on the demo, a few minutes on the real data (hashing 22k photos).

# %%
from IPython.display import display

from lib import data, plots
from lib.analysis import duplicates
from lib.notebook import collect_params, describe_data, open_run
from lib.runs import write_csv

_before = set(globals())

# %% tags=["parameters"]
data_dir = ""  # empty: Kaggle input, then data/ (real data), then data/demo
profile = "full"
run_name = "01_eda"
samples_per_class = 4
size_sample = 2000  # photos whose size is read for the size plot (0: all)
max_bad_fraction = 0.01
duplicate_max_distance = 8  # perceptual-hash bits (of 64) within which two photos count as near-duplicates
duplicate_pairs_shown = 6
seed = 42

# %%
params, data_dir, run = open_run(collect_params(globals(), _before))
print(f"Data folder: {describe_data(data_dir)}")

# %% [markdown]
# ## Problems in the data
# Every train row is checked against its file, and every photo's header and JPEG end marker are read (a cheap
# check, not a full decode). Unusable train photos are skipped; unusable test photos still get a prediction
# (the training prior), so no submission row is lost.

# %%
scan = data.scan(data_dir, max_bad_fraction=max_bad_fraction)
write_csv(run.path("problems.csv"), scan.problems)
print(scan.summary())
display(scan.problems.groupby(["problem", "action"]).size().rename("files").to_frame() if len(scan.problems)
        else "No problems found.")

# %% [markdown]
# We see one line of counts, then the problems grouped by kind and by what the pipeline does with them. The
# demo has none, by construction. On the real data, any row here is a file that training skips or a test row
# that gets the fallback prediction; the full list, one file a line, is in `problems.csv` in the run folder.
# If more than `max_bad_fraction` of the train rows were unusable, the cell above would stop with an error.

# %% [markdown]
# ## Class balance

# %%
plots.class_balance(scan.train);

# %% [markdown]
# Look at the spread between the smallest and the largest bar. The demo has exactly 40 photos per class. The
# real data ranges from about 1,200 to 2,000 photos per class: uneven, but not enough to need class weights,
# which is why the model notebooks keep `class_weight = None`. The validation split keeps these proportions.

# %% [markdown]
# ## Image sizes
# Models take square inputs, so every photo is stretched to the stage's size; the mix of aspect ratios
# below is what that stretching meets.

# %%
files = scan.train["path"].sample(min(size_sample or len(scan.train), len(scan.train)), random_state=seed)
sizes = data.image_sizes(files.tolist())
plots.image_sizes(sizes);
display(sizes.describe().loc[["min", "50%", "max"]])

# %% [markdown]
# The bars count the most common sizes; the table gives the smallest, median and largest width and height.
# On the demo, 640x480 dominates, then 640x360 and a few portrait 480x640 photos: the demo copies the real mix
# on purpose. On the real data, expect mostly 640x480 and 640x360; any other size shows up as a shorter bar.
# The full profile trains at 224-512 px, close to the photos' short side, so little detail is lost; the demo's
# 64-96 px keeps only the rough shape and colour of a car.

# %% [markdown]
# ## Samples per class

# %%
plots.sample_grid(scan.train, per_class=samples_per_class, seed=seed);

# %% [markdown]
# Each row is one class, with the name competitors gave it. The photos are stretched to squares, as the
# models see them. On the demo, each class is a cartoon car with its own body colour and shape, so the classes
# are easy to tell apart; the real names are just labels there. On the real data, several classes are Lada
# models that look alike, and the car fills more or less of the photo: that is what makes the task hard.

# %% [markdown]
# ## Duplicates and label noise
# Every readable photo gets a 64-bit perceptual hash (a coarse fingerprint of its grey, 32x32-shrunk image).
# Photos whose hashes differ in at most `duplicate_max_distance` bits are near-duplicates: the same photo saved
# again, resized, re-compressed or cropped a little. Three kinds matter: `label_conflict` (the same photo under
# two classes, so at least one label is wrong), `same_label` (a repeat that weighs double in training and can
# sit on both sides of the validation split) and `train_test` (a test photo whose answer is in train).

# %%
pairs = duplicates.find_duplicates(scan.train, scan.test[scan.test["readable"]], max_distance=duplicate_max_distance)
write_csv(run.path("duplicates.csv"), pairs)
print(duplicates.summary(pairs))
plots.duplicate_pairs(pairs, max_pairs=duplicate_pairs_shown);
display(pairs.groupby("kind").agg(pairs=("id_a", "size"), max_distance=("distance", "max")) if len(pairs)
        else "No near-duplicates found.")

# %% [markdown]
# Each pair shows photo a (always from train) and photo b, with the class names, the kind and the distance in
# bits. On the demo, the planted copies appear at 0-4 bits, as they do for re-saved real photos (measured on
# real photos: 0-6 bits for resized and re-encoded copies, 16 or more between different photos). The cartoon
# cars are far simpler than photos, so a chance look-alike may show up too: that is the demo, not a bug. On the
# real data, a `label_conflict` row is label noise to fix or drop, and `train_test` rows tell how much of the
# test set is already seen in training; the full list is `duplicates.csv` in the run folder.

# %%
run.update_metrics(train_rows=len(scan.train), test_rows=len(scan.test), problems=len(scan.problems),
                   unreadable_test=int((~scan.test["readable"]).sum()),
                   **{f"duplicates_{kind}": int((pairs["kind"] == kind).sum()) for kind in duplicates.KINDS});

# %% [markdown]
# ## Summary
#
# We checked every train and test file, plotted the class balance and the image sizes, looked at a few
# photos per class and searched for near-duplicate photos. The run folder `runs/<profile>/01_eda/` now holds
# `problems.csv` (one row per problem file, empty when there are none), `duplicates.csv` (one row per
# near-duplicate pair), `params.json`, `versions.json` and `metrics.json` (row, problem and duplicate counts).
# Nothing is trained here. Next: `02_augmentation_preview` to see what training does to the photos, or go
# straight to `03_xception` (`make 03_xception`).
