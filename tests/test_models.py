"""Model building: heads, staged freezing, BatchNorm modes, precision policy (offline weights: test_weights.py)."""

import keras
import numpy as np
import pytest

from lib import NUM_CLASSES
from lib.models import (
    backbone_of,
    build_model,
    count_params,
    set_trainable,
)

SMALL = "mobilenetv3small"  # a real keras.applications backbone that builds and trains fast


@pytest.fixture(scope="module")
def model():
    return build_model(SMALL, weights=None, dense_units=16, backbone_bn="frozen")


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_head_variants_give_probabilities(pooling):
    net = build_model(SMALL, weights=None, pooling=pooling, dense_units=8, activation="gelu", l2=1e-4)
    probs = keras.ops.convert_to_numpy(net(np.random.default_rng(0).integers(0, 255, (2, 64, 48, 3), dtype=np.uint8)))
    assert probs.shape == (2, NUM_CLASSES) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert ("avgmax" in [layer.name for layer in net.layers]) == (pooling == "avgmax")


def test_trainable_choices(model):
    base = backbone_of(model)
    # Counted on the fresh model, where every layer is trainable.
    head = count_params([w for layer in model.layers if layer is not base for w in layer.trainable_weights])
    backbone_no_bn = count_params(
        [
            w
            for layer in base.layers
            if not isinstance(layer, keras.layers.BatchNormalization)
            for w in layer.trainable_weights
        ]
    )
    assert set_trainable(model, "head") == head
    assert set_trainable(model, "all") == head + backbone_no_bn
    top = set_trainable(model, 10)
    assert [layer.trainable for layer in base.layers[:-10]] == [False] * (len(base.layers) - 10)
    assert head < top < head + backbone_no_bn
    assert set_trainable(model, 0.5) > top
    named = base.layers[-10].name
    assert set_trainable(model, f"from:{named}") == top
    for bad in ("some", -0.5, 2.0, "from:nope"):
        with pytest.raises(ValueError):
            set_trainable(model, bad)


def fit_one_step(net):
    net.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    net.fit(x, np.eye(NUM_CLASSES)[:4], epochs=1, verbose=0)


def moving_means(net):
    return [
        keras.ops.convert_to_numpy(layer.moving_mean).copy()
        for layer in backbone_of(net).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.mark.parametrize("mode, changes", [("frozen", False), ("train", True)])
def test_batchnorm_statistics_follow_the_mode(mode, changes):
    """Pretrained backbones keep BN in inference mode when unfrozen; random ones let BN learn."""
    net = build_model("test_cnn", weights=None, dense_units=8, backbone_bn=mode)
    set_trainable(net, "all")
    before = moving_means(net)
    fit_one_step(net)
    after = moving_means(net)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)) == changes


def test_head_is_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        net = build_model(SMALL, weights=None, dense_units=8)
        assert net.get_layer("logits").compute_dtype == "float16"
        assert net.get_layer("probs").compute_dtype == "float32"
        assert keras.ops.convert_to_numpy(net(np.zeros((1, 32, 32, 3), np.uint8))).dtype == np.float32
    finally:
        keras.config.set_dtype_policy("float32")


def test_precision_auto_is_float32_on_this_cpu():
    from lib.distribute import resolve_precision, visible_devices

    assert resolve_precision("auto", visible_devices()) == "float32"


def test_the_test_backbone_is_a_small_cnn_without_pretrained_weights():
    net = build_model("test_cnn", weights=None, dense_units=8)
    assert backbone_of(net).name == "test_cnn" and 50_000 < count_params(backbone_of(net).weights) < 100_000
    probs = keras.ops.convert_to_numpy(net(np.zeros((2, 40, 56, 3), np.uint8)))
    assert probs.shape == (2, NUM_CLASSES)
    with pytest.raises(ValueError, match="'test_cnn' has no pretrained weights: use weights=None"):
        build_model("test_cnn", weights="imagenet")


def test_unknown_backbone():
    with pytest.raises(ValueError, match="xception"):
        build_model("resnet9000", weights=None)


def test_load_trained_rebuilds_a_run_model_with_its_best_weights(tmp_path):
    from lib.models import build_model, load_trained
    from lib.runs import write_json

    settings = dict(pooling="avg", head_batchnorm=False, dropout=0.0, dense_units=8, activation="relu", l2=0.0)
    keras.utils.set_random_seed(3)
    trained = build_model("xception", weights=None, keras_augment="none", **settings)
    trained.save_weights(tmp_path / "best.weights.h5")
    write_json(tmp_path / "params.json", {"backbone": "xception", "weights": None, "keras_augment": "none", **settings})
    images = np.random.default_rng(0).integers(0, 255, (2, 71, 71, 3), dtype="uint8")
    keras.utils.set_random_seed(4)  # a different initialisation: only the loaded weights can make them agree
    loaded = load_trained(tmp_path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), trained.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="make 03_xception"):
        load_trained(tmp_path / "nothing")


def test_trained_image_size_reads_the_run_or_its_first_fold(tmp_path):
    from lib.models import trained_image_size
    from lib.runs import write_json

    write_json(tmp_path / "holdout" / "metrics.json", {"image_size": 96})
    write_json(tmp_path / "kfold" / "fold_0" / "metrics.json", {"image_size": 72})
    assert trained_image_size(tmp_path / "holdout") == 96
    assert trained_image_size(tmp_path / "kfold") == 72
    with pytest.raises(FileNotFoundError, match="image_size"):
        trained_image_size(tmp_path / "none")


def test_the_head_table_lists_the_backbone_as_one_row_and_each_head_layer():
    from lib.models import build_model, head_table

    model = build_model("mobilenetv3small", weights=None, dense_units=16, dropout=0.25)
    table = head_table(model)
    backbone = [name for name, kind in table["type"].items() if "the backbone" in kind]
    assert len(backbone) == 1 and table.loc[backbone[0], "weights"] > 900_000
    assert table.loc["head_dense", "type"] == "Dense(16, relu)" and table.loc["head_dropout", "type"] == "Dropout(0.25)"
    assert table.loc["logits", "weights"] == 16 * 10 + 10 and table.loc["probs", "output shape"] == "(None, 10)"
    assert table["weights"].sum() == model.count_params()


NEW_BACKBONES = [
    *(f"efficientnetv2{size}" for size in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    *(f"convnext_{size}" for size in ("tiny", "small", "base", "large")),
]


@pytest.mark.slow  # about 30 s for the eleven on the 2-core CPU; Large ones hold 118 and 196 million weights
@pytest.mark.parametrize("name", NEW_BACKBONES)
def test_each_new_backbone_builds_without_weights_and_matches_its_table_entry(name):
    """Built from scratch and run at 32 px (ConvNeXt's stride is 32); the table says right whether it has
    BatchNorm (ConvNeXt: LayerNorm) and stochastic depth (EfficientNetV2's drop-connect), and names its weight file
    as keras.applications does (<model name>_notop.h5)."""
    from lib.backbones import backbone_spec
    from lib.models import drop_path_layers

    net = build_model(name, weights=None, dense_units=0)
    probs = keras.ops.convert_to_numpy(net(np.zeros((2, 32, 32, 3), np.uint8)))
    assert probs.shape == (2, NUM_CLASSES) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    base, spec = backbone_of(net), backbone_spec(name)
    has_batchnorm = any(isinstance(layer, keras.layers.BatchNormalization) for layer in base.layers)
    assert has_batchnorm == spec.batchnorm and bool(drop_path_layers(base)) == bool(spec.drop_path)
    assert spec.notop_file == f"{base.name}_notop.h5"
    keras.backend.clear_session()


def block_states(net, pattern):
    """{block: the set of trainable flags of its layers}, BatchNorm left out (it stays frozen in a frozen backbone)."""
    from lib.models import layer_blocks

    base = backbone_of(net)
    states: dict = {}
    for layer, block in zip(base.layers, layer_blocks(base, pattern)):
        if not isinstance(layer, keras.layers.BatchNormalization):
            states.setdefault(block, set()).add(layer.trainable)
    return states


@pytest.mark.parametrize("name", ["efficientnetv2b0", "xception", "test_cnn"])
def test_a_fraction_unfreezes_whole_blocks(name):
    """trainable 0.5 or 0.3 moves to the nearest block boundary: every block trains whole or not at all, Xception's
    unnamed residual layers with the block before them; an int still counts layers exactly."""
    from lib.backbones import backbone_spec

    net = build_model(name, weights=None, dense_units=0, backbone_bn="frozen")
    pattern, base = backbone_spec(name).block_pattern, backbone_of(net)
    for fraction in (0.3, 0.4, 0.5):
        set_trainable(net, fraction)
        states = block_states(net, pattern)
        assert all(len(flags) == 1 for flags in states.values()), {b: f for b, f in states.items() if len(f) > 1}
        assert {True, False} <= set().union(*states.values())  # some blocks train, some stay frozen
    set_trainable(net, 5)
    not_batchnorm = [layer.trainable for layer in base.layers if not isinstance(layer, keras.layers.BatchNormalization)]
    top = [layer for layer in base.layers[-5:] if not isinstance(layer, keras.layers.BatchNormalization)]
    assert not_batchnorm.count(True) == len(top) and all(layer.trainable for layer in top)


@pytest.mark.slow
def test_frozen_batchnorm_stays_put_while_drop_connect_works():
    """A pretrained-style backbone (BatchNorm frozen) now runs in training mode: a training step leaves every
    BatchNorm statistic where it was, while EfficientNet's drop-connect makes two training-mode passes differ.
    drop_path=0 turns it off; inference is deterministic either way."""
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    keras.utils.set_random_seed(1)
    net = build_model("efficientnetv2b0", weights=None, dense_units=0, dropout=0.0, backbone_bn="frozen")
    set_trainable(net, "all")
    frozen = [layer for layer in backbone_of(net).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert frozen and not any(layer.trainable for layer in frozen)
    before = moving_means(net)
    net.compile(optimizer="adam", loss="categorical_crossentropy")
    net.train_on_batch(x, np.eye(NUM_CLASSES)[:4])
    assert all(np.array_equal(a, b) for a, b in zip(before, moving_means(net)))
    first, second = (keras.ops.convert_to_numpy(net(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    inference = [keras.ops.convert_to_numpy(net(x, training=False)) for _ in range(2)]
    assert np.array_equal(*inference)
    plain = build_model("efficientnetv2b0", weights=None, dense_units=0, dropout=0.0, backbone_bn="frozen", drop_path=0)
    assert np.array_equal(*(keras.ops.convert_to_numpy(plain(x, training=True)) for _ in range(2)))
    with pytest.raises(ValueError, match="'xception' has no stochastic depth in keras.applications: set drop_path"):
        build_model("xception", weights=None, drop_path=0.1)
