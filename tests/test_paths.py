"""Data folder resolution, profiles and output locations."""

from pathlib import Path

from lib import paths


def test_explicit_data_dir_wins(tmp_path):
    assert paths.resolve_data_dir(tmp_path) == tmp_path.resolve()


def test_falls_back_to_demo_without_real_data(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "DATA_ROOT", tmp_path / "data")
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    assert paths.resolve_data_dir(None) == paths.DEMO_DIR


def test_real_data_in_data_dir_is_preferred(monkeypatch, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("Id,Category\n")
    monkeypatch.setattr(paths, "DATA_ROOT", tmp_path)
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path / "no-kaggle"))
    assert paths.resolve_data_dir("") == tmp_path


def test_kaggle_paths(monkeypatch, tmp_path):
    competition = tmp_path / "input" / "sf-dl-car-classification"
    competition.mkdir(parents=True)
    (competition / "train.csv").write_text("Id,Category\n")
    (competition / "train.zip").write_bytes(b"")
    (tmp_path / "working").mkdir()
    monkeypatch.setenv("CARS_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.delenv("CARS_OUTPUT_ROOT", raising=False)
    assert paths.on_kaggle()
    assert paths.resolve_data_dir() == competition
    assert paths.runs_dir() == tmp_path / "working" / "runs"
    assert paths.submissions_dir() == tmp_path / "working" / "submissions"


def test_profile_follows_the_data(tiny_demo, tmp_path):
    assert paths.default_profile(tiny_demo) == "demo"
    assert paths.default_profile(tmp_path) == "full"


def test_run_dir_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("CARS_OUTPUT_ROOT", str(tmp_path))
    assert paths.run_dir("demo", "03_xception") == tmp_path / "runs" / "demo" / "03_xception"
    assert Path(paths.keras_home()).name  # never empty
