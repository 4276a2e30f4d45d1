"""lib.pipeline.ImageSequence: shapes, one-hot labels, partial last batch, seeded shuffle, cache, bad files."""

import numpy as np
import pytest
from PIL import Image

import lib
from lib.pipeline import ImageSequence
from tests.fixed_random import FixedRandom


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(11):
        height, width = (48, 64) if index % 3 else (64, 48)
        path = tmp_path / f"{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def test_batches_shapes_dtypes_and_one_hot(image_files):
    labels = np.arange(len(image_files)) % lib.NUM_CLASSES
    seq = ImageSequence(image_files, labels, image_size=32, batch_size=4, augment="medium")
    assert len(seq) == 3
    x, y = seq[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (4, lib.NUM_CLASSES) and y.dtype == np.float32
    assert np.array_equal(y.argmax(1), labels[:4]) and np.all(y.sum(1) == 1)
    x_last, y_last = seq[2]
    assert x_last.shape == (3, 32, 32, 3) and y_last.shape == (3, lib.NUM_CLASSES)
    with pytest.raises(IndexError):
        seq[3]


def test_without_labels_returns_images_only_in_order(image_files):
    seq = ImageSequence(image_files, image_size=24, batch_size=5)
    batches = [seq[i] for i in range(len(seq))]
    assert all(isinstance(batch, np.ndarray) for batch in batches)
    assert sum(len(batch) for batch in batches) == len(image_files)
    single = ImageSequence(image_files[5:6], image_size=24, batch_size=1)[0]
    assert np.array_equal(batches[1][0], single[0])


def test_shuffle_is_deterministic_by_seed_and_changes_per_epoch(image_files):
    labels = np.arange(len(image_files)) % lib.NUM_CLASSES

    def epoch_orders(seed):
        seq = ImageSequence(image_files, labels, image_size=16, batch_size=4, shuffle=True, seed=seed)
        orders = []
        for _ in range(2):
            orders.append(np.concatenate([seq.batch_indices(i) for i in range(len(seq))]))
            seq.on_epoch_end()
        return orders

    first, again, other = epoch_orders(1), epoch_orders(1), epoch_orders(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])
    assert sorted(first[0]) == list(range(len(image_files)))


def test_augmentation_is_reproducible_for_same_seed(image_files):
    def batch(seed):
        return ImageSequence(image_files, image_size=32, batch_size=4, augment="heavy", seed=seed)[1]

    assert np.array_equal(batch(5), batch(5))
    assert not np.array_equal(batch(5), batch(6))


def test_cache_gives_same_pixels_as_cold_decode(image_files, tmp_path):
    cold = ImageSequence(image_files, image_size=40, batch_size=4)
    cached = ImageSequence(image_files, image_size=40, batch_size=4, cache_dir=tmp_path / "cache")
    first_pass = [cached[i] for i in range(len(cached))]
    assert cached.cache.filled() == len(image_files)
    warm = ImageSequence(image_files, image_size=40, batch_size=4, cache_dir=tmp_path / "cache")
    assert warm.cache.filled() == len(image_files)  # reused from disk by a new sequence
    for i in range(len(cold)):
        assert np.array_equal(cold[i], first_pass[i]) and np.array_equal(cold[i], warm[i])
    other_size = ImageSequence(image_files, image_size=20, batch_size=4, cache_dir=tmp_path / "cache")
    assert other_size.cache.filled() == 0


def test_unreadable_file_gives_blank_and_keeps_the_row(image_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    paths = image_files[:3] + [str(broken)] + image_files[3:5]
    seq = ImageSequence(paths, np.zeros(len(paths), int), image_size=16, batch_size=4, augment="medium")
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        x, y = seq[0]
    assert x.shape == (4, 16, 16, 3) and not x[3].any() and x[2].any()
    assert sum(len(seq[i][0]) for i in range(len(seq))) == len(paths)


def test_replicas_get_equal_shares_of_every_batch(image_files):
    """Split across 2 replicas (5 rows, batch 4): training leaves one row out per epoch, a different one each
    epoch; validation pads its last batch with a zero-weight copy, so every row counts exactly once."""
    image_files = image_files[:5]
    labels = np.arange(5) % 3
    train = ImageSequence(image_files, labels, image_size=16, batch_size=4, shuffle=True, seed=1, replicas=2)
    left_out = set()
    for epoch in range(4):
        train.set_epoch(epoch)
        rows = np.concatenate([train.batch_indices(i) for i in range(len(train))])
        assert len(rows) == 4 and all(len(train[i][0]) % 2 == 0 for i in range(len(train)))
        left_out |= set(range(5)) - set(rows)
    assert len(left_out) > 1
    val = ImageSequence(image_files, labels, image_size=16, batch_size=4, replicas=2)
    (_, _, w0), (x1, y1, w1) = val[0], val[1]
    assert len(x1) == 2 and w1.tolist() == [1.0, 0.0] and w0.tolist() == [1.0] * 4
    assert np.array_equal(x1[1], x1[0]) and np.array_equal(y1[1], y1[0])
    assert len(ImageSequence(image_files, image_size=16, batch_size=4, replicas=2)[1]) == 1  # unlabelled: as is
    with pytest.raises(ValueError, match="multiple of replicas"):
        ImageSequence(image_files, labels, image_size=16, batch_size=3, replicas=2)


def test_bad_arguments_are_refused(image_files):
    with pytest.raises(ValueError, match="labels"):
        ImageSequence(image_files, [0, 1], image_size=16, batch_size=2)
    with pytest.raises(ValueError, match="0..9"):
        ImageSequence(image_files, [10] * len(image_files), image_size=16, batch_size=2)
    with pytest.raises(ValueError, match="preset"):
        ImageSequence(image_files, image_size=16, batch_size=2, augment="wild")


def test_threaded_keras_iteration_matches_direct_indexing(image_files):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    seq = ImageSequence(image_files, image_size=16, batch_size=3, augment="light", workers=2)
    direct = [seq[i] for i in range(len(seq))]
    adapter = PyDatasetAdapter(seq, shuffle=False)
    adapter.on_epoch_begin()
    through_keras = [batch[0] for batch in adapter.get_numpy_iterator()]
    adapter.on_epoch_end()
    assert len(through_keras) == len(direct)
    assert all(np.array_equal(a, b) for a, b in zip(direct, through_keras))


@pytest.mark.jax
def test_tiny_model_fits_and_predicts_on_image_sequence(image_files):
    """Runs under any backend; `make test-jax` runs it with KERAS_BACKEND=jax and no TensorFlow installed."""
    import sys

    import keras

    from lib.augment import keras_augmentation

    labels = np.arange(len(image_files)) % lib.NUM_CLASSES
    train = ImageSequence(image_files, labels, image_size=24, batch_size=4, augment="light", shuffle=True, workers=2)
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras_augmentation("light", seed=0),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(lib.NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    probs = model.predict(ImageSequence(image_files, image_size=24, batch_size=4), verbose=0)
    assert probs.shape == (len(image_files), lib.NUM_CLASSES)
    if keras.backend.backend() == "jax":
        assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("use_cache", [False, True])
def test_flip_and_neutral_affine_match_plain_resize(image_files, tmp_path, use_cache):
    seq = ImageSequence(
        image_files,
        image_size=32,
        batch_size=4,
        augment="medium",
        cache_dir=(tmp_path / "cache") if use_cache else None,
    )
    plain, flipped, warped = (np.empty((32, 32, 3), np.uint8) for _ in range(3))
    assert seq.load(1, plain)
    assert seq.load(1, flipped, FixedRandom([0.0, 0.99]))  # flip drawn, affine not
    assert np.array_equal(flipped, plain[:, ::-1])
    assert seq.load(1, warped, FixedRandom([0.99, 0.0]))  # affine drawn at scale 1, angle 0, no shift
    assert np.abs(warped.astype(int) - plain).max() <= 2


def test_sequence_survives_pickling_for_worker_processes(image_files, tmp_path):
    import pickle

    seq = ImageSequence(image_files, image_size=24, batch_size=4, augment="medium", cache_dir=tmp_path / "c")
    first = seq[1]
    clone = pickle.loads(pickle.dumps(seq))  # what use_multiprocessing=True does to reach the workers
    assert np.array_equal(clone[1], first)
    assert clone.cache.filled() == 4  # the clone maps the same cache files


MIX = {"cutmix": 1.0, "mixup": 0.2, "p": 0.75}


def test_mixing_is_keyed_to_seed_epoch_and_batch(image_files):
    """CutMix/MixUp (keras.layers.CutMix and MixUp) draw from (seed, epoch, batch) alone: the same batch read in
    another order, by another thread or after a pickle round trip gives the same bytes; another epoch other
    mixes. Images stay uint8, labels become soft and still sum to 1; unmixed batches are untouched."""
    import pickle
    import threading

    labels = np.arange(len(image_files)) % lib.NUM_CLASSES

    def sequence(**kw):
        return ImageSequence(image_files, labels, image_size=24, batch_size=4, augment="light", shuffle=True,
                             seed=3, **kw)  # fmt: skip

    mixed, plain = sequence(mix=MIX), sequence()
    batches = [mixed[i] for i in range(len(mixed))]
    again = sequence(mix=MIX)
    from_thread = {}
    worker = threading.Thread(target=lambda: from_thread.update({i: again[i] for i in reversed(range(len(again)))}))
    worker.start()
    worker.join()
    copied = pickle.loads(pickle.dumps(sequence(mix=MIX)))
    for index, (x, y) in enumerate(batches):
        assert x.dtype == np.uint8 and y.dtype == np.float32 and np.allclose(y.sum(axis=1), 1, atol=1e-6)
        for other in (from_thread[index], copied[index]):
            assert x.tobytes() == other[0].tobytes() and y.tobytes() == other[1].tobytes()
    soft = [index for index, (_, y) in enumerate(batches) if (y.max(axis=1) < 1).any()]
    assert soft, "p 0.75 over 3 batches mixed none"
    for index in set(range(len(batches))) - set(soft):  # a batch the draw left alone is the plain pipeline's
        assert np.array_equal(batches[index][0], plain[index][0])
    mixed.set_epoch(1)
    assert any(not np.array_equal(mixed[i][1], batches[i][1]) for i in range(len(mixed)))


def test_mixing_chooses_by_p_and_switch_and_needs_labels(image_files):
    from lib.augment import BatchMixer

    draws = [BatchMixer({"cutmix": 1.0, "mixup": 0.2, "p": 0.5}).choose(np.random.default_rng(k)) for k in range(400)]
    assert 0.4 < draws.count(None) / 400 < 0.6 and 0.4 < draws.count("cutmix") / draws.count("mixup") < 2.5
    assert {BatchMixer({"mixup": 0.2}).choose(np.random.default_rng(k)) for k in range(20)} == {"mixup"}
    assert {BatchMixer({"cutmix": 1.0, "p": 0.0}).choose(np.random.default_rng(k)) for k in range(20)} == {None}
    with pytest.raises(ValueError, match="mix needs labels"):
        ImageSequence(image_files, image_size=16, batch_size=4, mix=MIX)
