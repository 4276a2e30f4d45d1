"""`make weights` and `make kaggle-weights`: download the backbones' ImageNet weights, then upload them to Kaggle."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from lib.backbones import WEIGHTS_DATASET_SLUG, backbone_spec, cached_weights_path, find_weights, pretrained
from lib.paths import MODEL_RUNS, PROJECT_ROOT, notebook_of
from tools.kaggle import api
from tools.kaggle.api import KaggleError, require_credentials, username
from tools.runner.check import notebook_defaults

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PROFILES_DIR = PROJECT_ROOT / "profiles"
STAGE_DIR = PROJECT_ROOT / "build" / "kaggle-weights"
METADATA_FILE = "dataset-metadata.json"  # what `kaggle datasets create/version -p DIR` reads (kaggle 2.2.5)
_DATASET_ID = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9-]+$")


class WeightsError(RuntimeError):
    """What `make weights` or `make kaggle-weights` cannot do, with what to do about it in one line."""


def needed_backbones(
    notebooks_dir: Path = NOTEBOOKS_DIR, profiles_dir: Path = PROFILES_DIR, model_runs=MODEL_RUNS
) -> list[str]:
    """Every backbone that a model run (lib.paths.MODEL_RUNS: run -> notebook) builds with ImageNet weights: its
    notebook's defaults and each of the run's profiles over them (profiles/*/<run>.yaml), in the series' order. A
    run under another name than its notebook's (03_convnext) always has a profile, so its notebook's defaults alone
    do not count."""
    import yaml

    names: list[str] = []
    runs = model_runs if isinstance(model_runs, dict) else {run: notebook_of(run) for run in model_runs}
    for model_run, notebook_name in runs.items():
        notebook = notebooks_dir / f"{notebook_name}.py"
        defaults = notebook_defaults(notebook)
        overrides = [yaml.safe_load(p.read_text()) or {} for p in sorted(profiles_dir.glob(f"*/{model_run}.yaml"))]
        for settings in ([{}] if notebook_name == model_run else []) + overrides:
            name = str(settings.get("backbone", defaults.get("backbone"))).lower()
            if settings.get("weights", defaults.get("weights")) == "imagenet" and name not in names:
                try:
                    pretrained(name)
                except ValueError as err:
                    raise WeightsError(f"{notebook.name} or its profiles: {err}") from None
                names.append(name)
    return names


def download(names: list[str], timeout: float = 60.0) -> str:
    """Download each backbone's weights into $KERAS_HOME/models unless find_weights already finds them."""
    for name in names:
        found = find_weights(name)
        if found is not None:
            print(f"{name}: already present at {found}; skipped", flush=True)
            continue
        from lib.models import WeightsUnavailableError, download_backbone

        target = cached_weights_path(name)
        print(f"{name}: downloading {target.name} ...", flush=True)
        try:
            download_backbone(name, timeout)
        except WeightsUnavailableError as err:
            what = "the network is unreachable" if err.offline else "the download failed"
            raise WeightsError(
                f"{what}: could not download `{target.name}` ({err.reason}); run `make weights` again with internet, "
                f"or copy the file into {target.parent} (or into a folder named by WEIGHTS_DIR)"
            ) from None
        if not target.is_file():  # Keras falls back to /tmp/.keras when $KERAS_HOME is not writable
            raise WeightsError(f"Keras did not save `{target.name}` in {target.parent}: is that folder writable?")
        print(f"{name}: {target} (its hash checked by Keras)", flush=True)
    return f"ImageNet weights ready for {', '.join(names)}; for Kaggle kernels without internet: `make kaggle-weights`"


def dataset_id(given: str | None = None, owner: str | None = None) -> str | None:
    """WEIGHTS_DATASET as given (`none`: no dataset), else <user>/sf-dl-cars-keras-weights; the user comes from
    KAGGLE_USERNAME or kaggle.json, else `owner` (a kernel's owner)."""
    if given:
        if given.lower() == "none":
            return None
        if not _DATASET_ID.match(given):
            raise KaggleError(f"WEIGHTS_DATASET={given!r} must look like `owner/lowercase-slug` (or `none`)")
        return given
    user = username() or owner
    if not user:
        raise KaggleError(
            "no Kaggle user for the weights dataset: set KAGGLE_USERNAME (or kaggle.json) or WEIGHTS_DATASET=owner/slug"
        )
    return f"{user}/{WEIGHTS_DATASET_SLUG}"


def metadata(dataset: str, files: list[str]) -> dict:
    """dataset-metadata.json as kaggle 2.2.5's dataset_create_new reads it (id, title, exactly one licence)."""
    return {
        "id": dataset,
        "title": "Keras ImageNet weights for sf-dl-cars",  # 6 to 50 characters
        "subtitle": "keras.applications notop weights for offline Kaggle kernels",  # 20 to 80 characters
        "description": (
            "The ImageNet weight files without the classification top that keras.applications downloads, under "
            f"their exact Keras names: {', '.join(files)}. Uploaded by `make kaggle-weights` of the "
            "sf-dl-car-classification notebook series, whose notebooks find them anywhere under /kaggle/input when "
            "this dataset is attached, so they run with the internet off. The weights keep the licences of the "
            "Keras applications they come from (https://keras.io/api/applications/)."
        ),
        "licenses": [{"name": "other"}],  # "other": specified in the description
    }


def stage(files: list[Path], dataset: str, out: Path = STAGE_DIR) -> Path:
    """`out` holding the weight files (hard links, else copies) and dataset-metadata.json, nothing older."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.h5"), out / METADATA_FILE]:
        old.unlink(missing_ok=True)
    for source in files:
        try:
            os.link(source, out / source.name)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(source, out / source.name)
    (out / METADATA_FILE).write_text(json.dumps(metadata(dataset, [f.name for f in files]), indent=2) + "\n")
    return out


def dataset_exists(dataset: str) -> bool:
    """Whether Kaggle shows this account the dataset. kaggle 2.2.5's dataset_create_new asks its status the same
    way and takes any HTTP error as "not there"; here only a 403 or 404 does, anything else fails in one line."""
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

    request = ApiGetDatasetStatusRequest()
    request.owner_slug, request.dataset_slug = dataset.split("/")
    send = api.client().datasets.dataset_api_client.get_dataset_status
    missing = api.NotFound(f"Kaggle shows you no dataset {dataset}")
    try:
        api.call(send, request, f"dataset {dataset}", {403: missing, 404: missing})
    except api.NotFound:
        return False
    return True


def upload_blob(path: Path):
    """Send one file to Kaggle's storage (kaggle 2.2.5's _upload_blob, in one piece); returns the ApiDatasetNewFile
    that names it in a create or version request."""
    from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest
    from kagglesdk.datasets.types.dataset_api_service import ApiDatasetNewFile

    request = ApiStartBlobUploadRequest()
    request.type, request.name = ApiBlobType.DATASET, path.name
    request.content_length, request.last_modified_epoch_seconds = path.stat().st_size, int(path.stat().st_mtime)
    print(f"Uploading {path.name} ({path.stat().st_size / 1e6:,.1f} MB) ...", flush=True)
    started = api.call(api.client().blobs.blob_api_client.start_blob_upload, request, f"the upload of {path.name}")
    api.upload(started.create_url, path, path.name)
    new_file = ApiDatasetNewFile()
    new_file.token = started.token
    return new_file


def create_or_version(folder: Path, files: list[Path], notes: str):
    """Create the dataset that the staged metadata names (private), or add a version when Kaggle already has it;
    returns kagglesdk's ApiCreateDatasetResponse and whether a dataset was created."""
    from kagglesdk.datasets.types.dataset_api_service import (
        ApiCreateDatasetRequest,
        ApiCreateDatasetVersionRequest,
        ApiCreateDatasetVersionRequestBody,
    )

    meta = json.loads((folder / METADATA_FILE).read_text())
    owner, slug = meta["id"].split("/")
    exists = dataset_exists(meta["id"])
    new_files = [upload_blob(folder / f.name) for f in files]
    datasets = api.client().datasets.dataset_api_client
    about = f"dataset {meta['id']}"
    if exists:
        body = ApiCreateDatasetVersionRequestBody()
        body.version_notes, body.files = notes, new_files
        body.subtitle, body.description = meta["subtitle"], meta["description"]
        request = ApiCreateDatasetVersionRequest()
        request.owner_slug, request.dataset_slug, request.body = owner, slug, body
        return api.call(datasets.create_dataset_version, request, about), False
    request = ApiCreateDatasetRequest()
    request.owner_slug, request.slug, request.title = owner, slug, meta["title"]
    request.license_name, request.is_private = meta["licenses"][0]["name"], True
    request.subtitle, request.description, request.files = meta["subtitle"], meta["description"], new_files
    return api.call(datasets.create_dataset, request, about), True


def upload(names: list[str], given: str | None = None, out: Path = STAGE_DIR, message: str | None = None) -> str:
    """Upload the weights as a private dataset, or as a new version of it when Kaggle already has it."""
    found = {name: find_weights(name) for name in names}
    missing = [f"{name} (`{backbone_spec(name).notop_file}`)" for name, path in found.items() if path is None]
    if missing:
        raise WeightsError(f"no local ImageNet weights for {', '.join(missing)}: run `make weights` first")
    require_credentials()
    dataset = dataset_id(given)
    if dataset is None:
        raise WeightsError("WEIGHTS_DATASET=none names no dataset to upload to: set WEIGHTS_DATASET=owner/slug")
    files = list(found.values())
    folder = stage(files, dataset, out)
    from lib.runs import git_commit

    notes = message or f"{', '.join(f.name for f in files)} (git {git_commit() or 'none'})"
    answer, created = create_or_version(folder, files, notes)
    if answer.error:
        raise KaggleError(f"Kaggle refused the dataset {dataset}: {' '.join(answer.error.split())}")
    action = "created as a new private dataset" if created else "uploaded as a new version"
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    attach = f" WEIGHTS_DATASET={dataset}" if given else ""
    page = answer.url or f"https://www.kaggle.com/datasets/{dataset}"
    return (
        f"{len(files)} weight files ({size_mb:.0f} MB) {action} {dataset}; `make kaggle-kernel{attach}` attaches it. "
        f"Kaggle processes it before a kernel can attach it: {page}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["download", "upload"])
    parser.add_argument("--dataset", help=f"owner/slug (default: <your user>/{WEIGHTS_DATASET_SLUG})")
    parser.add_argument("--message", help="the new version's notes (default: the file names and git commit)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a silent network is given up")
    parser.add_argument("--out", type=Path, default=STAGE_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        names = needed_backbones()
        if args.action == "download":
            print(download(names, args.timeout))
        else:
            print(upload(names, args.dataset, args.out, args.message))
    except (KaggleError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
