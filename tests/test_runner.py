"""tools.runner: parameters are checked against the notebook's parameters cell before a kernel starts (and inside
it); a run's terminal stays quiet and its log keeps everything; a failed run keeps the last good executed notebook."""

import logging
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
import yaml

from lib import choices
from lib.choices import ParamError
from lib.notebook import collect_params
from lib.paths import PROJECT_ROOT, series_notebooks, series_runs
from tools.runner import check as C
from tools.runner import execute as R

NOTEBOOKS = series_notebooks()
PROFILES = ["demo", "full", "tiny"]
XCEPTION = PROJECT_ROOT / "notebooks" / "03_xception.py"
PROFILES_DIR = PROJECT_ROOT / "profiles"


def params_cli(*args, cwd=PROJECT_ROOT):
    return subprocess.run(
        [sys.executable, "-m", "tools.runner", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def demo_profile_with(tmp_path, text: str = "", replace: tuple[str, str] = ("", "")):
    source = (PROJECT_ROOT / "profiles" / "demo" / "03_xception.yaml").read_text()
    path = tmp_path / "03_xception.yaml"
    path.write_text(source.replace(*replace) + text)
    return path


def assert_one_line_error(done, *parts):
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    for part in parts:
        assert part in done.stderr, done.stderr


def test_unknown_key_in_a_profile_stops_in_one_line_with_the_closest_name(tmp_path):
    profile = demo_profile_with(tmp_path, "stagess: []\n")
    done = params_cli("check", XCEPTION, profile)
    assert_one_line_error(done, str(profile), "'stagess'", "did you mean 'stages'?")


def test_unknown_key_in_p_stops_in_one_line_with_the_closest_name():
    profile = PROJECT_ROOT / "profiles" / "demo" / "05_ensemble.yaml"
    done = params_cli("check", PROJECT_ROOT / "notebooks" / "05_ensemble.py", profile, "-p", "methd", "geometric")
    assert_one_line_error(done, "-p:", "'methd'", "did you mean 'method'?")


def test_bad_preset_value_stops_in_one_line(tmp_path):
    profile = demo_profile_with(tmp_path, replace=("augment: light", "augment: mediumm"))
    done = params_cli("check", XCEPTION, profile)
    assert_one_line_error(done, str(profile), "augment", "'mediumm'", "did you mean 'medium'?")


def test_values_inside_stages_are_checked(tmp_path):
    profile = demo_profile_with(tmp_path, replace=("schedule: onecycle", "schedule: one_cycle"))
    with pytest.raises(ParamError, match=r"stages\[0\]: unknown schedule value 'one_cycle'; did you mean 'onecycle'"):
        C.check_notebook(XCEPTION, profile)
    profile = demo_profile_with(tmp_path, replace=("image_size: 72", "image_szie: 72"))
    with pytest.raises(ParamError, match=r"stages\[0\]: unknown stage key 'image_szie'; did you mean 'image_size'"):
        C.check_notebook(XCEPTION, profile)


def test_mix_ema_and_clipnorm_inside_stages_are_checked(tmp_path):
    """A stage's `mix` is a mapping with its own keys (a misspelt one gets its suggestion) and ranges; `ema` and
    `clipnorm` have theirs; mixed labels refuse class weights; each mistake is one line before a kernel starts."""
    mixed = "schedule: onecycle, mix: {cutmix: 1.0, mixup: 0.2, p: 0.5}, ema: 0.99, clipnorm: 1.0"
    assert C.check_notebook(XCEPTION, demo_profile_with(tmp_path, replace=("schedule: onecycle", mixed)))
    for wrong, expected in [
        ("mix: {cutmx: 1.0}", "stages[0]: mix: unknown mix key 'cutmx'; did you mean 'cutmix'?"),
        ("mix: {cutmix: 2.0}", "stages[0]: mix cutmix is 2.0, not a number in [0, 1]"),
        ("mix: {mixup: 0.2, p: 1.5}", "stages[0]: mix p is 1.5, not a number in [0, 1]"),
        ("mix: cutmix", "stages[0]: mix is 'cutmix', not a mapping like"),
        ("ema: 1.0", "stages[0]: ema is 1.0, not a number in (0, 1)"),
        ("clipnorm: 0", "stages[0]: clipnorm is 0, not a number in (0, inf)"),
    ]:
        profile = demo_profile_with(tmp_path, replace=("schedule: onecycle", f"schedule: onecycle, {wrong}"))
        assert_one_line_error(params_cli("check", XCEPTION, profile), str(profile), expected)
    profile = demo_profile_with(tmp_path, "class_weight: balanced\n", ("schedule: onecycle", mixed))
    assert_one_line_error(
        params_cli("check", XCEPTION, profile), "class_weight='balanced' does not combine with CutMix/MixUp"
    )
    for size in ("big", -1):
        with pytest.raises(ParamError, match="predict_image_size is .*; give 0 .*a size in pixels or 'auto'"):
            C.check_notebook(XCEPTION, demo_profile_with(tmp_path, f"predict_image_size: {size}\n"))


def test_every_shipped_profile_passes_and_merges_like_papermill():
    from lib.paths import notebook_of

    for profile in PROFILES:
        for name in series_runs():
            path = PROJECT_ROOT / "profiles" / profile / f"{name}.yaml"
            merged = C.check_notebook(
                PROJECT_ROOT / "notebooks" / f"{notebook_of(name)}.py", path, [["data_dir", "/d"], ["profile", profile]]
            )
            assert merged == {**(yaml.safe_load(path.read_text()) or {}), "data_dir": "/d", "profile": profile}


def test_a_model_run_under_its_own_name_runs_its_notebook_with_its_own_profile_file(tmp_path):
    """03_convnext is notebook 03 with profiles/<profile>/03_convnext.yaml and its run name; a profile without that
    file is one line, not a silent Xception run under the ConvNeXt name."""
    from tools.runner import inputs, run

    values = run.parameters_of("03_convnext", "full")
    assert values["run_name"] == "03_convnext" and values["backbone"] == "convnext_base"
    assert values["submission_name"] == "convnext" and run.parameters_of("03_xception", "full")["run_name"] == (
        "03_xception"
    )
    files = inputs.notebook_inputs("03_convnext", "demo", tmp_path, tmp_path, values)
    assert files[:2] == [PROJECT_ROOT / "notebooks" / "03_xception.py", PROFILES_DIR / "demo" / "03_convnext.yaml"]
    with pytest.raises(ParamError, match="03_convnext.yaml is missing: run 03_convnext is notebook 03_xception"):
        run.parameters_of("03_convnext", "other")


def test_p_values_are_typed_as_papermill_types_them():
    merged = C.check_notebook(XCEPTION, None, [["folds", "5"], ["weights", "None"], ["head_batchnorm", "False"]])
    assert merged == {"folds": 5, "weights": None, "head_batchnorm": False}


def test_lib_checks_its_settings_against_the_same_sets_the_parameter_check_uses():
    """One home for the choices: each module that validates a setting uses lib.choices' own set."""
    from lib import augment, distribute, ensemble, predict, schedules

    assert augment.PRESETS is choices.PRESETS and predict.TTA_TRANSFORMS is choices.TTA_TRANSFORMS
    assert (distribute.STRATEGIES, distribute.LR_SCALINGS, distribute.PRECISIONS) == (
        choices.STRATEGIES,
        choices.LR_SCALINGS,
        choices.PRECISIONS,
    )
    assert ensemble.BLEND_METHODS is choices.BLEND_METHODS and ensemble.SEARCHES is choices.SEARCHES
    assert schedules.OPTIMIZERS is choices.OPTIMIZERS and schedules.SCHEDULES is choices.SCHEDULES
    from lib.backbones import BACKBONES
    from lib.train import Stage

    assert tuple(BACKBONES) == choices.BACKBONES and Stage is choices.Stage


def python_prints(code: str) -> str:
    """What a fresh Python process running `code` in the project prints (it must exit cleanly)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_check_imports_no_keras_and_no_papermill():
    code = (
        "import sys; from tools.runner.check import check_notebook; "
        f"check_notebook({str(XCEPTION)!r}, {str(PROJECT_ROOT / 'profiles/demo/03_xception.yaml')!r}, "
        "[['lr_find_steps', '0'], ['run_name', '03_convnext']]); "
        "print(sorted(m for m in ('keras', 'tensorflow', 'albumentations', 'scipy', 'papermill') if m in sys.modules))"
    )
    assert python_prints(code) == "[]"


def test_p_values_are_typed_as_papermills_command_line_types_them():
    from papermill.cli import _resolve_type

    from tools.runner.check import command_line_value

    for text in ("True", "False", "None", "true", "3", "-2", "1_000", "1e-3", "0.5", "inf", "nan", "", "03_convnext",
                 "[1, 2]", " 7 "):  # fmt: skip
        typed, expected = command_line_value(text), _resolve_type(text)
        assert type(typed) is type(expected) and str(typed) == str(expected), text


def test_collect_params_stops_on_an_injected_name_the_parameters_cell_lacks():
    """In a kernel, IPython's `In` holds the parameters cell, then the cell papermill injected after it."""
    cell = C.parameters_cell(XCEPTION)
    namespace = {"In": ["", "from lib import experiment", cell, "# Parameters\nstagess = []\n"], "stagess": []}
    with pytest.raises(ParamError, match="injected parameters: unknown parameter 'stagess'; did you mean 'stages'"):
        collect_params(namespace, {"In"})
    namespace = {"In": ["", cell, "# Parameters\nstages = []\n"], "stages": [], "augment": "light"}
    assert collect_params(namespace, {"In"}) == {"stages": [], "augment": "light"}
    with pytest.raises(ParamError, match="unknown augment value 'mediumm'"):
        collect_params({"augment": "mediumm"}, set())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_parameter_without_a_warning(name, tmp_path, caplog):
    """papermill's own inspection of the built notebook finds every name the parameters cell assigns, so neither
    'Unable to parse line' nor 'Passed unknown parameter' appears for a real parameter."""
    papermill = pytest.importorskip("papermill")
    built = tmp_path / f"{name}.ipynb"
    source = PROJECT_ROOT / "notebooks" / f"{name}.py"
    subprocess.run(
        [
            PROJECT_ROOT / ".venv" / "bin" / "jupytext",
            "--quiet",
            "--to",
            "ipynb",
            "--set-kernel",
            "python3",
            "-o",
            built,
            source,
        ],
        check=True,
    )
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = papermill.inspect_notebook(str(built))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert set(inferred) == set(C.notebook_defaults(source))
    for profile in PROFILES:
        assert set(yaml.safe_load((PROJECT_ROOT / "profiles" / profile / f"{name}.yaml").read_text()) or {}) <= set(
            inferred
        )


TINY_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     name: python3
#     display_name: Python 3
#     language: python
# ---

# %% tags=["parameters"]
fail = False

# %%
print("ran with fail =", fail)
assert not fail, "told to fail"
"""


def write_percent_notebook(path, source: str):
    """`source` (jupytext percent format) written as the .ipynb papermill runs."""
    jupytext = pytest.importorskip("jupytext")
    nbformat.write(jupytext.reads(source, fmt="py:percent"), path)
    return path


@pytest.mark.slow
def test_a_failed_run_keeps_the_last_good_executed_notebook(tmp_path):
    pytest.importorskip("papermill")
    notebook = write_percent_notebook(tmp_path / "tiny.ipynb", TINY_NOTEBOOK)
    output = tmp_path / "runs" / "tiny.ipynb"
    failed = tmp_path / "runs" / "tiny.failed.ipynb"

    assert params_cli("execute", notebook, output, "-p", "fail", "False").returncode == 0
    good = output.read_text()
    assert "ran with fail = False" in good and not failed.exists()

    done = params_cli("execute", notebook, output, "-p", "fail", "True")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: notebook tiny failed (AssertionError: told to fail)")
    assert f"The executed copy with the traceback: {failed}; the last good run stays at {output}" in last
    assert last.endswith(f"; all it printed: {output.with_suffix('.log')}")
    assert "told to fail" in output.with_suffix(".log").read_text(), "the log keeps what the kernel printed"
    assert output.read_text() == good
    assert "told to fail" in failed.read_text()

    assert params_cli("execute", notebook, output, "-p", "fail", "False").returncode == 0
    assert not failed.exists(), "a stale failed copy is removed once the notebook runs again"
    assert not output.with_suffix(".partial.ipynb").exists()


def test_run_checks_before_a_kernel_starts(tmp_path):
    notebook = write_percent_notebook(tmp_path / "tiny.ipynb", TINY_NOTEBOOK)
    done = params_cli("execute", notebook, tmp_path / "out" / "tiny.ipynb", "-p", "fial", "True")
    assert_one_line_error(done, "'fial'", "did you mean 'fail'?")
    assert not (tmp_path / "out").exists()


KERNEL_CHECKED_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     name: python3
#     display_name: Python 3
#     language: python
# ---

# %%
from lib.notebook import collect_params

_before = set(globals())

# %% tags=["parameters"]
fail = False

# %%
params = collect_params(globals(), _before)
"""


@pytest.mark.slow
def test_inside_the_kernel_an_injected_unknown_name_stops_the_notebook(tmp_path):
    """Interactive or direct papermill use (no `tools.runner`): collect_params compares papermill's injected cell
    with the parameters cell."""
    papermill = pytest.importorskip("papermill")
    notebook = write_percent_notebook(tmp_path / "checked.ipynb", KERNEL_CHECKED_NOTEBOOK)
    papermill.execute_notebook(str(notebook), str(tmp_path / "ok.ipynb"), parameters={"fail": True})
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        papermill.execute_notebook(str(notebook), str(tmp_path / "bad.ipynb"), parameters={"fial": True})
    assert raised.value.ename == "ParamError"
    assert "injected parameters: unknown parameter 'fial'; did you mean 'fail'?" in raised.value.evalue


# One line of each kind the terminal leaves out (seen in `make run-all` transcripts), by NOISE_PATTERNS key.
NOISE_EXAMPLES = {
    "blank line": "   ",
    "text progress bar": "\rChecking images:  40%|████      | 200/500 [00:01<00:01, 190.2img/s]",
    "tqdm widget warning": "/x/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. "
    "Please update jupyter and ipywidgets.",
    "absl C++ log line": "W0000 00:00:1764337000.123456   42 cpu_feature_guard.cc:210] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "TensorFlow C++ log line": "2026-11-28 06:20:01.123456: I tensorflow/core/util/port.cc:153] oneDNN custom "
    "operations are on.",
    "absl start-up notice": "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "CPU instruction notice": "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "kernel transport warning": "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.",
    "figure repr": "<Figure size 1400x350 with 3 Axes>",
    "TensorFlow retracing warning": "WARNING:tensorflow:5 out of the last 5 calls to <function conv.<locals>._conv_xla "
    "at 0x7f524d4bbf60> triggered tf.function retracing. Tracing is expensive and the excessive number of tracings "
    "could be due to (1) creating @tf.function repeatedly in a loop.",
}
ACTIONABLE = [
    "Time budget: the next epoch (~88 s) would pass the deadline; stopping.",
    "Stage 1/2 (small): trainable='all', 21,074,610 trainable parameters, 72px, batch 16, 7 epoch(s)",
    "Submission written: /work/submissions/xception.csv (100 rows)",
    "/work/lib/train.py:88: UserWarning: batch 64 does not divide 320 rows",
]


def test_every_noise_pattern_has_an_example():
    assert set(NOISE_EXAMPLES) == set(R.NOISE_PATTERNS)


@pytest.mark.parametrize("kind", NOISE_EXAMPLES)
def test_the_terminal_drops_each_kind_of_noise(kind):
    lines = R.KernelLines()
    assert lines.feed(NOISE_EXAMPLES[kind] + "\n", "stderr") + lines.finish() == []


def test_the_terminal_keeps_the_lines_a_user_acts_on():
    lines = R.KernelLines()
    text = "".join(f"{line}\n" for line in ACTIONABLE) + '  warnings.warn("batch 64 does not divide")\n'
    # papermill hands over whatever each stream message held: lines arrive cut anywhere
    shown = [line for piece in (text[:30], text[30:101], text[101:]) for line in lines.feed(piece, "stderr")]
    assert shown + lines.finish() == ACTIONABLE, "a warning's source echo is left out, its message kept"


def test_a_keras_epoch_header_joins_its_summary_line():
    lines = R.KernelLines()
    shown = lines.feed("Epoch 1/7\n\n")
    shown += lines.feed("Time budget: the next epoch (~88 s) would pass the deadline; stopping.\n")
    shown += lines.feed("20/20 - 76s - 4s/step - accuracy: 0.4125 - val_accuracy: 0.1000\nEpoch 2/7\n")
    assert shown + lines.finish() == [
        "Time budget: the next epoch (~88 s) would pass the deadline; stopping.",
        "Epoch 1/7 20/20 - 76s - 4s/step - accuracy: 0.4125 - val_accuracy: 0.1000",
        "Epoch 2/7",
    ]


def test_the_result_line():
    metrics = {"val_accuracy_no_tta": 0.9312, "val_accuracy": 0.9519}
    line = R.result_line("03_xception", 252.4, metrics, ["submissions/xception.csv"])
    assert line == "03_xception: done in 4m12s · val accuracy 0.931 (TTA 0.952) · wrote submissions/xception.csv"
    line = R.result_line("05_ensemble", 41, {"val_accuracy": 0.9375, "stopped_by_budget": False}, [])
    assert line == "05_ensemble: done in 41s · val accuracy 0.938"
    assert R.result_line("01_eda", 3725, {"stopped_by_budget": True}, []) == (
        "01_eda: done in 1h02m · stopped by the time budget (rerun to resume)"
    )


def test_written_files_are_the_named_ones_this_run_changed(tmp_path):
    old, new = tmp_path / "old.csv", tmp_path / "sub" / "new.csv"
    old.write_text("x")
    os.utime(old, (0, 0))
    new.parent.mkdir()
    new.write_text("x")
    lines = [f"Submission written: {new} (1 rows); pseudo-labels saved in {old}", f"Read {new}"]
    assert R.written_files(lines, time.time() - 5, tmp_path) == ["sub/new.csv"]


NOISY_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     name: python3
#     display_name: Python 3
#     language: python
# ---

# %% tags=["parameters"]
fail = False

# %%
import os
import sys
import warnings

os.write(2, b"W0000 00:00:1764337000.123456   42 cpu_feature_guard.cc:210] C++ straight to fd 2\\n")
print("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", file=sys.stderr)
print("Epoch 1/1")
print("3/3 - 2s - 700ms/step - accuracy: 0.5000")
warnings.warn("the lib says act")

# %%
import matplotlib.pyplot as plt

plt.plot([1, 2])
plt.show()
"a value's repr"

# %%
with open("written.csv", "w") as f:
    f.write("a\\n")
print(f"Submission written: {os.path.abspath('written.csv')} (1 rows)")
"""


@pytest.mark.slow
def test_run_shows_a_quiet_terminal_and_logs_everything(tmp_path):
    pytest.importorskip("papermill")
    notebook = write_percent_notebook(tmp_path / "noisy.ipynb", NOISY_NOTEBOOK)
    output = tmp_path / "runs" / "noisy.ipynb"

    done = params_cli("execute", notebook, output, "--cwd", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "the kernel's own stderr (C++ logs, start-up warnings) goes to the log"
    shown = done.stdout.splitlines()
    assert shown[:2] == ["Epoch 1/1 3/3 - 2s - 700ms/step - accuracy: 0.5000", shown[1]]
    assert shown[1].endswith("UserWarning: the lib says act")
    assert shown[2] == f"Submission written: {tmp_path / 'written.csv'} (1 rows)"
    assert re.fullmatch(rf"noisy: done in \d+s · wrote {tmp_path / 'written.csv'}", shown[3]) and len(shown) == 4
    assert "\r" not in done.stdout, "no progress bar redraws off a terminal"

    log = output.with_suffix(".log").read_text()
    for kept in ["C++ straight to fd 2", "absl::InitializeLog", "Executing Cell 2", "<Figure size", "a value's repr"]:
        assert kept in log
    assert "C++ straight to fd 2" in str(nbformat.read(output, as_version=4).cells), "the notebook holds it too"

    verbose = params_cli("execute", notebook, output, "--cwd", tmp_path, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    for marker in ["Executing Cell 1", "Ending Cell 3", "Epoch 1/1\n", "<Figure size", "noisy: done in"]:
        assert marker in verbose.stdout + verbose.stderr


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_parameters_cell_is_the_one_jupytext_reads(name, tmp_path):
    """Read without jupytext (whose import alone outlasts the check): the same source, from the .py and the .ipynb."""
    jupytext = pytest.importorskip("jupytext")
    source = PROJECT_ROOT / "notebooks" / f"{name}.py"
    notebook = jupytext.read(source)
    expected = [cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert [C.parameters_cell(source)] == expected
    nbformat.write(notebook, tmp_path / f"{name}.ipynb")
    assert [C.parameters_cell(tmp_path / f"{name}.ipynb")] == expected
