"""The model notebooks' training path through lib under KERAS_BACKEND=jax, with no TensorFlow installed.

`make test-jax` runs these in .venv-jax (requirements-jax.txt). Under TensorFlow they are skipped: the same
code is covered there by the end-to-end test.
"""

import sys

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.jax,
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs under KERAS_BACKEND=jax only"),
]


def notebook_params(tiny_demo, run_dir, **overrides):
    params = dict(
        data_dir=str(tiny_demo),
        profile="tiny",
        run_name="03_xception",  # the notebook's path on the test backbone: compiling Xception takes minutes here
        run_dir=str(run_dir),
        seed=1,
        val_fraction=0.25,
        max_bad_fraction=0.01,
        backbone="test_cnn",
        weights=None,
        pooling="avgmax",
        head_batchnorm=True,
        dropout=0.1,
        dense_units=8,
        activation="swish",
        l2=0.0,
        precision="auto",
        jit_compile="auto",
        batch_size=8,
        augment="light",
        keras_augment="light",
        workers=0,
        stages=[
            {"name": "head", "trainable": "head", "epochs": 1, "image_size": 72},
            {
                "name": "top",
                "trainable": 10,
                "epochs": 1,
                "image_size": 80,
                "optimizer": "adamw",
                "lr": 1e-4,
                "schedule": "onecycle",
            },
        ],
        label_smoothing=0.1,
        class_weight="balanced",
        early_stopping_patience=2,
        gradient_accumulation_steps=None,
        time_budget_minutes=30,
        predict_reserve_minutes=1,
        verbose=0,
        predict_image_size=0,
        tta=["identity", "hflip"],
        tta_passes=2,
    )
    return {**params, **overrides}


def test_the_model_notebooks_path_trains_predicts_and_submits(tiny_demo, tmp_path, monkeypatch):
    from lib import experiment
    from lib.submission import read_sample_ids, validate_submission

    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    ctx = experiment.setup(notebook_params(tiny_demo, tmp_path / "run"))
    model = experiment.build(ctx)
    result = experiment.train(ctx, model)
    assert list(result.history["stage"]) == [1, 2] and list(result.history["image_size"]) == [72, 80]
    evaluation = experiment.evaluate(ctx, model)
    assert evaluation.test_probs.shape == (len(ctx.scan.test), 10)
    assert np.allclose(evaluation.val_probs.sum(axis=1), 1, atol=1e-4)
    out = experiment.submit(ctx, evaluation.test_probs, "xception")
    validate_submission(out, read_sample_ids(tiny_demo / "sample-submission.csv"))
    assert "tensorflow" not in sys.modules


def test_an_efficientnet_builds_freezes_and_predicts(tiny_demo, tmp_path):
    """04's backbone family (B0 here: B7 is the same code, four times the layers to build)."""
    from lib.models import build_model, set_trainable

    model = build_model("efficientnetb0", weights=None, dense_units=0)
    assert set_trainable(model, "head") < set_trainable(model, 0.1)
    probs = keras.ops.convert_to_numpy(model.predict_on_batch(np.zeros((2, 32, 32, 3), np.uint8)))
    assert probs.shape == (2, 10) and "tensorflow" not in sys.modules
