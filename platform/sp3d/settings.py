"""The platform's environment: where MLflow tracks, which S3 endpoint/bucket holds artifacts, credentials.

Precedence (highest first):

1. keyword arguments to `load_settings(...)` (CLI flags),
2. explicit environment variables (``MLFLOW_TRACKING_URI``, ``SP3D_S3_ENDPOINT``, ``AWS_*``, ...),
3. profile files, later ones win: ``$SP3D_PROFILE`` > ``./sp3d.env`` > ``<state dir>/profile.env``
   (written by ``sp3d stack up``, removed by ``sp3d stack down``) > ``~/.sp3d/profile.env``,
4. the defaults below: state dir ``./.sp3d``, MLflow in ``sqlite:///<state dir>/mlflow.db`` with local
   artifacts in ``<state dir>/mlartifacts`` (so nothing needs a server), no S3 endpoint.

Profile files are ``KEY=VALUE`` lines (dotenv syntax) using the same variable names. Credentials are
held as `SecretStr`, so ``repr(settings)`` and logs never show them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

USER_PROFILE = Path("~/.sp3d/profile.env")
PROJECT_PROFILE = Path("sp3d.env")
PROFILE_ENV_VAR = "SP3D_PROFILE"


class SettingsError(ValueError):
    """The platform environment is malformed; the message names the variable and what was expected."""


def _alias(name: str, field: str) -> Any:
    return AliasChoices(name, field)


class Settings(BaseSettings):
    """Resolved platform settings. Build with `load_settings` (which adds the profile files)."""

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, env_ignore_empty=True, case_sensitive=False
    )

    state_dir: Path = Field(Path(".sp3d"), validation_alias=_alias("SP3D_STATE_DIR", "state_dir"))
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=_alias("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")
    )
    s3_endpoint: str | None = Field(None, validation_alias=_alias("SP3D_S3_ENDPOINT", "s3_endpoint"))
    aws_access_key_id: SecretStr | None = Field(
        None, validation_alias=_alias("AWS_ACCESS_KEY_ID", "aws_access_key_id")
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_alias("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key")
    )
    aws_default_region: str = Field(
        "us-east-1", validation_alias=_alias("AWS_DEFAULT_REGION", "aws_default_region")
    )
    artifact_bucket: str = Field(
        "sp3d-artifacts", validation_alias=_alias("SP3D_ARTIFACT_BUCKET", "artifact_bucket")
    )
    mlflow_port: int = Field(5000, ge=0, le=65535, validation_alias=_alias("SP3D_MLFLOW_PORT", "mlflow_port"))
    s3_port: int = Field(9000, ge=0, le=65535, validation_alias=_alias("SP3D_S3_PORT", "s3_port"))
    stack_timeout_s: float = Field(
        120.0, gt=0, validation_alias=_alias("SP3D_STACK_TIMEOUT", "stack_timeout_s")
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"expected http(s)://host[:port], got {value!r}")
        return value.rstrip("/")

    @field_validator("artifact_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        ok = 3 <= len(value) <= 63 and value == value.lower() and "/" not in value and "_" not in value
        if not ok:
            raise ValueError(f"expected an S3 bucket name (3-63 lowercase chars, no '/' or '_'), got {value!r}")
        return value

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the configured one, else ``sqlite:///<state dir>/mlflow.db``."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def is_local_tracking(self) -> bool:
        """True when MLflow writes to a local database (no server), so artifacts go to a local dir."""
        return urlparse(self.tracking_uri).scheme in ("sqlite", "file", "")

    @property
    def local_artifacts_dir(self) -> Path:
        """Artifact root used for experiments created against a local (sqlite) tracking store."""
        return self.state_dir / "mlartifacts"

    @property
    def stack_dir(self) -> Path:
        """Where `sp3d stack` keeps pids, ports, logs and the stack's MLflow database."""
        return self.state_dir / "stack"

    @property
    def profile_path(self) -> Path:
        """The profile written by `sp3d stack up` (read by every `sp3d` command)."""
        return self.state_dir / "profile.env"

    def secret_values(self) -> list[str]:
        """Every configured credential as plain text (for redaction only; never log these)."""
        secrets = [self.aws_access_key_id, self.aws_secret_access_key]
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


def _user_and_project_profiles(cwd: Path) -> tuple[list[Path], list[Path]]:
    low = [USER_PROFILE.expanduser()]
    high = [cwd / PROJECT_PROFILE]
    explicit = os.environ.get(PROFILE_ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SettingsError(f"{PROFILE_ENV_VAR}={explicit}: no such profile file")
        high.append(path)
    return low, high


def profile_files(state_dir: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """Existing profile files in increasing precedence (see module docstring).

    state_dir: the state dir whose ``profile.env`` (written by `sp3d stack up`) is included.
    """
    low, high = _user_and_project_profiles(cwd or Path.cwd())
    middle = [state_dir / "profile.env"] if state_dir is not None else []
    return [p for p in low + middle + high if p.is_file()]


def _build(files: list[Path], overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(_env_file=tuple(files) or None, **overrides)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "<settings>"
        info = Settings.model_fields.get(field)
        names = info.validation_alias.choices[0] if info and info.validation_alias else field  # type: ignore[union-attr]
        sources = ", ".join(str(f) for f in files) or "none"
        raise SettingsError(f"{names}: {first['msg']} (set in the environment or profiles: {sources})") from None


def load_settings(**overrides: Any) -> Settings:
    """Resolve the platform settings: overrides > environment > profile files > defaults.

    overrides: field names of `Settings` (e.g. ``state_dir=tmp``, ``s3_endpoint="http://127.0.0.1:9000"``);
    None values are ignored. Raises `SettingsError` naming the variable.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    first = _build(profile_files(None), overrides)
    return _build(profile_files(first.state_dir), overrides)
