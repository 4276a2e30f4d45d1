# %% [markdown]
# # 01 Exploratory data analysis
#
# A first look at the data before any training: how many photos each of the 10 car models has, what sizes
# the photos come in, what they look like, and which files are broken or missing.
#
# **Expected result.** On the real data: 15,561 train photos, classes between 1,207 and 1,971 photos,
# mostly 640x480 and 640x360, 6,675 test photos. On the offline demo: 400 train and 100 test cartoons.
# The problem table lists every unreadable or missing file with what the pipeline will do about it.

# %%
from IPython.display import display

from lib import data, plots
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
seed = 42

# %%
params, data_dir, run = open_run(collect_params(globals(), _before))
print(f"Data folder: {describe_data(data_dir)}")

# %% [markdown]
# ## Problems in the data
# Every train row is checked against its file and every photo is decoded once. Unusable train photos are
# skipped; unusable test photos still get a prediction (the training prior), so no submission row is lost.

# %%
scan = data.scan(data_dir, max_bad_fraction=max_bad_fraction)
write_csv(run.path("problems.csv"), scan.problems)
print(scan.summary())
display(scan.problems.groupby(["problem", "action"]).size().rename("files").to_frame() if len(scan.problems)
        else "No problems found.")

# %% [markdown]
# ## Class balance

# %%
plots.class_balance(scan.train);

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
# ## Samples per class

# %%
plots.sample_grid(scan.train, per_class=samples_per_class, seed=seed);

# %%
run.update_metrics(train_rows=len(scan.train), test_rows=len(scan.test), problems=len(scan.problems),
                   unreadable_test=int((~scan.test["readable"]).sum()))
