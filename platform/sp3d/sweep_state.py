"""Sweep state: `SweepSpec` (``<storage>/<name>/sweep_state.json``) and the storage `Location` of a sweep.

The state file holds everything needed to resume a sweep after its driver died (the validated search
space, base config, user overrides, options, MLflow parent run id and the non-secret settings); it is
written atomically next to Tune's experiment state.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

from sp3d.search_space import SearchSpace
from sp3d.settings import Settings
from sp3d.storage import ensure_bucket, resolve_storage, split_s3_uri

DEFAULT_EXPERIMENT = "sp3d-sweeps"  # what `sp3d compare` searches first
STATE_FILE = "sweep_state.json"


class SweepError(ValueError):
    """Bad sweep options or state (one line naming the option / file and what was expected)."""


class SweepSpec(BaseModel):
    """Everything needed to run or resume a sweep; stored as ``sweep_state.json`` (JSON, no secrets)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["sweep", "study"] = "sweep"
    space: dict[str, Any]  # SearchSpace dump (paper block excluded)
    space_name: str
    space_source: str
    base_config: str
    sets: dict[str, Any] = Field(default_factory=dict)  # user --set overrides, flat dotted
    samples: int
    concurrent: int
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int | None = None
    reduction_factor: float = 2.0
    seed: int = 0
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    max_failures: int = 2  # Ray Train worker-group restarts per trial
    experiment: str = DEFAULT_EXPERIMENT
    storage: str
    parent_run_id: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)  # non-secret: tracking URI, S3 endpoint, ...
    tags: dict[str, str] = Field(default_factory=dict)  # extra parent tags (studies)
    created: str = Field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    def search_space(self) -> SearchSpace:
        """The `SearchSpace` this sweep samples from."""
        space = SearchSpace.model_validate(self.space)
        space._source = self.space_source
        return space

    def trial_payload(self, location: Location) -> dict[str, Any]:
        """The JSON-able dict every trial receives (see `sp3d.sweep_trial.run_trial`)."""
        return {**self.model_dump(include={"space", "base_config", "sets", "workers", "gpus_per_worker",
                                           "cpus_per_worker", "max_failures", "experiment", "parent_run_id",
                                           "settings"}),
                "train_storage": location.train_storage(self.name),
                "trial_tags": {"sp3d.kind": "trial", "sp3d.sweep": self.name, "sp3d.space": self.space_name}}


def _keyless_s3(settings: Settings) -> pafs.S3FileSystem | None:
    """An S3 filesystem for Tune that reads the credentials from ``AWS_*`` environment variables instead of
    holding them: Tune pickles its RunConfig (storage filesystem included) into ``tuner.pkl`` on the
    storage, and a pyarrow S3FileSystem pickles explicit keys. Exports the configured credentials to this
    process's environment when they are missing there (local Ray workers inherit them). None when the
    environment holds other credentials than the settings (then the keyed filesystem is used)."""
    access, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if access is None or secret is None:
        return None
    for name, value in (("AWS_ACCESS_KEY_ID", access), ("AWS_SECRET_ACCESS_KEY", secret)):
        os.environ.setdefault(name, value.get_secret_value())
        if os.environ[name] != value.get_secret_value():
            return None
    kwargs: dict[str, Any] = {"region": settings.aws_default_region}
    if settings.s3_endpoint:
        parsed = urlparse(settings.s3_endpoint)
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    return pafs.S3FileSystem(**kwargs)


class Location:
    """A sweep storage root: ``uri`` as given (dir or s3://bucket/prefix), Ray's path + filesystem, and
    `tune_fs`, the filesystem handed to Tune (no keys inside when possible, see `_keyless_s3`)."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.path, self.fs = resolve_storage(uri, settings)
        self.is_s3 = self.fs is not None
        self.uri = f"s3://{self.path}" if self.is_s3 else self.path
        self.tune_fs = (_keyless_s3(settings) or self.fs) if self.is_s3 else None
        if self.is_s3:
            ensure_bucket(settings, split_s3_uri(uri)[0])

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem to read / write the sweep state with."""
        return self.fs or pafs.LocalFileSystem()

    def sweep_path(self, name: str) -> str:
        """Tune's experiment path of sweep ``name`` (Ray path, no scheme)."""
        return f"{self.path}/{name}"

    def train_storage(self, name: str) -> str:
        """`run_training` storage of the sweep's trials (dir or s3:// URI)."""
        return f"{self.uri}/{name}/runs"



# ---- state file ---------------------------------------------------------------------------------
def write_state(location: Location, spec: SweepSpec) -> None:
    """Write ``<storage>/<name>/sweep_state.json`` atomically (temp object, then move)."""
    fs, folder = location.filesystem, location.sweep_path(spec.name)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{STATE_FILE}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps(spec.model_dump(mode="json"), indent=1).encode())
    fs.move(tmp, f"{folder}/{STATE_FILE}")


def _known_sweeps(location: Location) -> list[str]:
    fs = location.filesystem
    try:
        entries = fs.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
    except OSError:
        return []
    names = [e.base_name for e in entries if e.type == pafs.FileType.Directory]
    return sorted(n for n in names if fs.get_file_info(f"{location.path}/{n}/{STATE_FILE}").type
                  == pafs.FileType.File)


def read_state(location: Location, name: str) -> SweepSpec:
    """Load the `SweepSpec` of sweep ``name``; SweepError listing the sweeps there when it is missing."""
    path = f"{location.sweep_path(name)}/{STATE_FILE}"
    fs = location.filesystem
    if fs.get_file_info(path).type != pafs.FileType.File:
        known = ", ".join(_known_sweeps(location)) or "none"
        raise SweepError(f"{location.uri}/{name}: no sweep named {name!r} (sweeps there: {known}; "
                         "pass the --storage it ran with)")
    with fs.open_input_stream(path) as stream:
        try:
            return SweepSpec.model_validate(json.loads(stream.read()))
        except ValueError as err:
            raise SweepError(f"{location.uri}/{name}/{STATE_FILE}: not a valid sweep state "
                             f"({str(err).splitlines()[0]})") from None
