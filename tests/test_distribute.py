"""lib.distribute on faked device lists: backend choice, strategy, precision, time budget and the LR rule."""

import sys

import pytest

from lib.choices import Stage
from lib.distribute import (
    Device,
    DistributionPlan,
    check_gradient_accumulation,
    choose_backend,
    lr_scale,
    plan_distribution,
    resolve_precision,
    session_budget_minutes,
)
from lib.train import TrainSettings, plan_stages

CPU = Device("cpu", "CPU", "/device:CPU:0")
T4 = [Device("gpu", "Tesla T4", f"/device:GPU:{i}", 7.5) for i in range(2)]
P100 = Device("gpu", "Tesla P100-PCIE-16GB", "/device:GPU:0", 6.0)
V100 = Device("gpu", "Tesla V100-SXM2-16GB", "/device:GPU:0", 7.0)
A100 = Device("gpu", "NVIDIA A100-SXM4-40GB", "gpu:0", 8.0)
H100 = Device("gpu", "NVIDIA H100 80GB HBM3", "gpu:0", 9.0)
TPU = [Device("tpu", "TPU v5 lite", f"tpu:{i}") for i in range(8)]


@pytest.mark.parametrize(
    ("backend", "devices", "strategy", "replicas"),
    [
        ("tensorflow", [CPU], "none", 1),  # 0 GPUs
        ("tensorflow", [CPU, T4[0]], "none", 1),  # 1 GPU: no strategy at all
        ("tensorflow", [CPU, *T4], "mirrored", 2),  # Kaggle's GPU T4 x2
        ("jax", [*T4], "data_parallel", 2),
        ("jax", TPU, "data_parallel", 8),  # Kaggle's TPU v5e-8, Keras on JAX
        ("jax", [CPU, CPU], "data_parallel", 2),  # the CPU split into 2 (tests, VIRTUAL_DEVICES=2)
    ],
)
def test_auto_uses_every_device_it_finds(backend, devices, strategy, replicas):
    plan = plan_distribution("auto", backend, devices)
    assert (plan.strategy, plan.replicas) == (strategy, replicas)
    assert plan_distribution("none", backend, devices).replicas == 1


def test_a_tpu_needs_jax_or_a_tpu_build_of_tensorflow():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        plan_distribution("auto", "tensorflow", TPU, tf_tpu=False)
    assert plan_distribution("auto", "tensorflow", TPU, tf_tpu=True).strategy == "tpu"
    assert plan_distribution("tpu", "jax", TPU).strategy == "data_parallel"
    with pytest.raises(ValueError, match="no TPU"):
        plan_distribution("tpu", "tensorflow", T4)


def test_each_engine_belongs_to_its_backend():
    with pytest.raises(ValueError, match="data_parallel"):
        plan_distribution("mirrored", "jax", T4)
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        plan_distribution("data_parallel", "tensorflow", T4)
    with pytest.raises(ValueError, match="choose one of"):
        plan_distribution("horovod", "tensorflow", T4)


@pytest.fixture
def keras_not_imported(monkeypatch):
    """choose_backend as it runs at the top of a notebook, before anything imported Keras."""
    monkeypatch.delitem(sys.modules, "keras", raising=False)


@pytest.mark.usefixtures("keras_not_imported")
def test_auto_switches_to_jax_on_a_tpu_without_a_tpu_build_of_tensorflow(capsys):
    environ = {}
    assert choose_backend("auto", environ, tpu=True, tf_tpu=False) == "jax"
    assert environ["KERAS_BACKEND"] == "jax"
    assert "using Keras's JAX backend" in capsys.readouterr().out
    for tpu, tf_tpu in ((True, True), (False, False)):
        environ = {}
        assert choose_backend("auto", environ, tpu=tpu, tf_tpu=tf_tpu) == "tensorflow" and not environ
    assert choose_backend("none", {}, tpu=True, tf_tpu=False) == "tensorflow"  # "none" asks for no switch
    assert choose_backend("auto", {"KERAS_BACKEND": "torch"}, tpu=True, tf_tpu=False) == "torch"  # user's choice


@pytest.mark.usefixtures("keras_not_imported")
def test_data_parallel_selects_jax():
    environ = {}
    assert choose_backend("data_parallel", environ) == "jax" and environ["KERAS_BACKEND"] == "jax"


def test_once_keras_is_imported_the_backend_stays():
    import keras

    assert choose_backend("auto", {}, tpu=True, tf_tpu=False) == keras.backend.backend()


@pytest.mark.parametrize(
    ("devices", "precision"),
    [
        ([CPU], "float32"),
        (T4, "mixed_float16"),  # compute capability 7.5: no fast bfloat16
        ([P100], "mixed_float16"),
        ([V100], "mixed_float16"),
        ([A100], "mixed_bfloat16"),
        ([H100], "mixed_bfloat16"),
        (TPU, "mixed_bfloat16"),
        ([Device("gpu", "GPU", "gpu:0")], "mixed_float16"),  # capability unknown: float16 works on every GPU
    ],
)
def test_precision_auto_by_device(devices, precision):
    assert resolve_precision("auto", devices) == precision
    assert resolve_precision("float32", devices) == "float32"


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", [CPU])


def test_time_budget_follows_the_hardware():
    assert session_budget_minutes("auto", "gpu", on_kaggle=True) == 12 * 60 - 20
    assert session_budget_minutes("auto", "cpu", on_kaggle=True) == 12 * 60 - 20
    assert session_budget_minutes("auto", "tpu", on_kaggle=True) == 9 * 60 - 20
    assert session_budget_minutes("auto", "gpu", on_kaggle=False) is None  # no limit locally
    assert session_budget_minutes(8, "tpu", on_kaggle=True) == 8.0  # a number is kept
    assert session_budget_minutes(0, "gpu", on_kaggle=True) is None
    with pytest.raises(ValueError, match="time_budget_minutes"):
        session_budget_minutes("9h", "gpu", on_kaggle=True)


def test_auto_plans_give_the_budget_of_their_accelerator():
    """The `auto` chain as setup runs it: devices -> plan -> the budget for the plan's platform."""
    for devices, minutes in (([CPU], 700), ([CPU, *T4], 700), (TPU, 520)):
        plan = plan_distribution("auto", "jax", devices)
        assert session_budget_minutes("auto", plan.platform, on_kaggle=True) == minutes


def test_the_summary_line_and_the_record():
    plan = DistributionPlan("mirrored", "tensorflow", tuple(T4))
    assert plan.describe(32, "mixed_float16") == (
        "Devices: 2 x Tesla T4 (tf.distribute.MirroredStrategy), global batch 64 = 32 per replica, "
        "precision mixed_float16"
    )
    assert plan.record(32) == {
        "strategy": "mirrored",
        "backend": "tensorflow",
        "replicas": 2,
        "devices": ["Tesla T4", "Tesla T4"],
        "batch_size_per_replica": 32,
        "global_batch_size": 64,
    }
    assert DistributionPlan("none", "tensorflow", (CPU,)).describe(16, "float32") == (
        "Devices: 1 x CPU (single device), batch 16, precision float32"
    )


def test_gradient_accumulation_stops_at_once_under_tf_distribute():
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4 .*set gradient_accumulation_steps=None"):
        check_gradient_accumulation(DistributionPlan("mirrored", "tensorflow", tuple(T4)), 4)
    check_gradient_accumulation(DistributionPlan("data_parallel", "jax", tuple(T4)), 4)  # works under JAX
    check_gradient_accumulation(DistributionPlan("none", "tensorflow", (T4[0],)), 4)
    check_gradient_accumulation(DistributionPlan("mirrored", "tensorflow", tuple(T4)), None)


def test_lr_follows_the_global_batch_by_the_chosen_rule():
    assert lr_scale("none", 8) == 1.0 and lr_scale("linear", 8) == 8.0 and lr_scale("sqrt", 4) == 2.0
    with pytest.raises(ValueError, match="lr_scaling"):
        lr_scale("cubic", 2)
    stage = Stage("s", epochs=2, lr=1e-3)
    one = plan_stages([stage], 100, TrainSettings(batch_size=16))[0]
    two = plan_stages([stage], 100, TrainSettings(batch_size=16, replicas=2, lr_scaling="sqrt"))[0]
    assert (one.global_batch, one.steps_per_epoch, one.lr) == (16, 7, 1e-3)
    assert (two.global_batch, two.steps_per_epoch) == (32, 4) and two.lr == pytest.approx(2**0.5 * 1e-3)
    eight = plan_stages([stage], 101, TrainSettings(batch_size=4, replicas=8, lr_scaling="linear"))[0]
    assert (eight.steps_per_epoch, eight.lr) == (3, 8e-3)  # 101 rows: the 5 of 101 % 8 sit out, 96 = 3 x 32


def test_the_model_notebooks_import_no_keras_before_setup():
    """`auto` can only switch to JAX before the first `import keras`: the imports of 03 and 04 must not do it."""
    import subprocess

    import jupytext

    from lib.paths import PROJECT_ROOT

    for name in ("03_xception", "04_efficientnetb7"):
        notebook = jupytext.read(PROJECT_ROOT / "notebooks" / f"{name}.py")
        imports = next(c.source for c in notebook.cells if c.cell_type == "code")
        check = f"{imports}\nimport sys\nassert 'keras' not in sys.modules, [m for m in sys.modules if 'keras' in m]"
        done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=PROJECT_ROOT)
        assert done.returncode == 0, f"{name}: {done.stderr[-1500:]}"


# ---------------------------------------------------------------- the runtime: cores, threads, allocator


def test_available_cores_follow_the_affinity_and_a_cgroup_quota(tmp_path):
    from lib.runtime import available_cores

    assert available_cores({0, 1, 2, 3}, tmp_path / "none") == 4
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    assert available_cores({0, 1, 2, 3}, tmp_path / "v2") == 2
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert available_cores({0, 1, 2}, tmp_path / "v2") == 3
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores({0, 1, 2, 3}, tmp_path / "v1") == 1


# Page faults while a worker thread allocates and touches a decoded photo's buffer (640x480x3, 900 KB) 100 times,
# as the input pipeline's threads do: about 225 per round when glibc trims and re-faults it every time, none
# when the buffer is reused.
FAULT_PROBE = """
import json, resource, sys, threading
import numpy as np
from lib import runtime as setup

def faults_per_round(rounds=100, size=640 * 480 * 3):
    counted = {}
    def work():
        np.empty(size, np.uint8).fill(1)  # the thread's arena, set up
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(rounds):
            np.empty(size, np.uint8).fill(1)
        counted["faults"] = (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / rounds
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return counted["faults"]

runtime = setup.start_runtime(sys.argv[1]) if sys.argv[1] != "none" else None
import keras

class Photos(keras.utils.PyDataset):
    def __len__(self):
        return 2
    def __getitem__(self, index):
        return np.zeros((4, 8, 8, 3), np.float32), np.zeros((4, 2), np.float32)

model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
model.compile(optimizer="sgd", loss="mse")
model.predict(Photos(), verbose=0)  # TTA's path: tf.data's generator op, as model.fit on the pipeline
after_predict = faults_per_round()
model.fit(Photos(), epochs=1, verbose=0)  # an LR range test or a first stage
import tensorflow as tf
print(json.dumps({"after_predict": after_predict, "after_fit": faults_per_round(),
                  "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                              tf.config.threading.get_inter_op_parallelism_threads()],
                  "runtime": runtime.record() if runtime else None}))
"""


def probe(threads: str) -> dict:
    import json
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-c", FAULT_PROBE, threads], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), "KERAS_BACKEND": "tensorflow"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_decoded_photos_reuse_their_memory_after_tensorflow_has_fed_a_pydataset():
    """TensorFlow's generator op sets glibc's trim threshold to 128 KB on its first use; start_runtime keeps
    glibc's own thresholds after it, so a predict or a fit (an LR range test) leaves decoding as fast as before."""
    pytest.importorskip("tensorflow")
    fixed = probe("auto")
    assert fixed["after_predict"] < 5 and fixed["after_fit"] < 5
    assert fixed["runtime"]["allocator"] == "glibc mmap/trim thresholds 32/64 MB"
    unfixed = probe("none")  # the control: TensorFlow's own setting still costs a fault per page, every time
    assert unfixed["after_predict"] > 100


@pytest.mark.slow
def test_the_thread_settings_are_the_ones_training_runs_with():
    pytest.importorskip("tensorflow")
    from lib.runtime import available_cores

    assert probe("1")["threads"] == [1, 1]
    cores, automatic = available_cores(), probe("auto")
    assert automatic["threads"] == [cores, cores] and automatic["runtime"]["cores"] == cores
