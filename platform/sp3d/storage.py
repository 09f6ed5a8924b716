"""S3 / local storage helpers shared by Ray (RunConfig storage), the stack and tests.

Ray wants ``storage_path="bucket/prefix"`` plus a ``pyarrow.fs.S3FileSystem`` pointed at the endpoint
(MinIO, Ceph, moto or AWS); local directories need no filesystem object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from sp3d.settings import Settings

CHECKPOINT_FILE = "model.pt"  # the engine checkpoint inside a run's checkpoint directory

_MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}


class StorageError(RuntimeError):
    """An S3 endpoint is unreachable, a bucket is missing, or a storage URI is malformed."""


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for the configured endpoint (``SP3D_S3_ENDPOINT``; AWS when unset).

    Credentials and region come from the settings; unset credentials fall back to pyarrow's AWS chain.
    """
    kwargs: dict[str, Any] = {"region": settings.aws_default_region}
    if settings.s3_endpoint:
        parsed = urlparse(settings.s3_endpoint)
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    access, secret = _secret(settings.aws_access_key_id), _secret(settings.aws_secret_access_key)
    if access and secret:
        kwargs["access_key"] = access
        kwargs["secret_key"] = secret
    return pafs.S3FileSystem(**kwargs)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``. Raises `StorageError` if there is no bucket."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri}: expected s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.strip("/")


def resolve_storage(path_or_uri: str | Path, settings: Settings) -> tuple[str, pafs.FileSystem | None]:
    """Turn a storage location into Ray's ``(storage_path, storage_filesystem)`` pair.

    ``s3://bucket/prefix`` -> ``("bucket/prefix", S3FileSystem)``; a local path -> ``(absolute path, None)``.
    Other URI schemes raise `StorageError`.
    """
    text = str(path_or_uri)
    scheme = urlparse(text).scheme
    if scheme == "s3":
        bucket, prefix = split_s3_uri(text)
        return (f"{bucket}/{prefix}" if prefix else bucket), s3_filesystem(settings)
    if scheme in ("", "file"):
        local = Path(urlparse(text).path if scheme == "file" else text).expanduser().resolve()
        return str(local), None
    raise StorageError(f"{text}: unsupported storage scheme {scheme!r} (use s3://bucket/prefix or a local dir)")


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint with short timeouts (fails fast when it is down)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.aws_default_region,
        aws_access_key_id=_secret(settings.aws_access_key_id),
        aws_secret_access_key=_secret(settings.aws_secret_access_key),
        config=BotoConfig(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
    )


def _endpoint_name(settings: Settings) -> str:
    return settings.s3_endpoint or "AWS S3"


def ensure_bucket(settings: Settings, bucket: str | None = None, create: bool = True) -> str:
    """Make sure ``bucket`` (default ``settings.artifact_bucket``) exists on the endpoint; return its name.

    create: create it when missing (else raise). Raises `StorageError` when the endpoint is unreachable,
    credentials are rejected, or the bucket is missing and ``create`` is False.
    """
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    name = bucket or settings.artifact_bucket
    client = s3_client(settings)
    where = _endpoint_name(settings)
    try:
        client.head_bucket(Bucket=name)
        return name
    except EndpointConnectionError as err:
        raise StorageError(f"S3 endpoint {where} is unreachable (start it, e.g. `sp3d stack up`, or fix SP3D_S3_ENDPOINT): {err}") from None
    except NoCredentialsError:
        raise StorageError(f"S3 endpoint {where}: no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)") from None
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in _MISSING_BUCKET_CODES:
            raise StorageError(f"S3 endpoint {where}: cannot access bucket {name!r} ({code})") from None
    except BotoCoreError as err:
        raise StorageError(f"S3 endpoint {where}: {err}") from None
    if not create:
        raise StorageError(f"S3 bucket {name!r} does not exist on {where} (run `sp3d stack up` or create it)")
    _create_bucket(client, name, settings.aws_default_region, where)
    return name


def _create_bucket(client: Any, name: str, region: str, where: str) -> None:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise StorageError(f"S3 endpoint {where}: cannot create bucket {name!r} ({code})") from None


def fetch_checkpoint(location: str, settings: Settings, dest: Path) -> Path:
    """A local engine checkpoint file for ``location``: a file, a checkpoint directory (its ``model.pt``),
    ``s3://bucket/key`` (file or directory, copied into ``dest``) or an MLflow artifact URI
    (``runs:/<run id>/checkpoints/best.pt``, downloaded into ``dest``). Raises `StorageError` naming it."""
    if location.startswith(("runs:/", "mlflow-artifacts:/", "models:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        from sp3d import tracking

        tracking.configure(settings)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dest)))
        except (MlflowException, OSError) as err:
            raise StorageError(f"{location}: cannot download ({str(err).splitlines()[0]})") from None
        return local / CHECKPOINT_FILE if local.is_dir() else local
    if urlparse(location).scheme != "s3":
        local = Path(location).expanduser()
        return local / CHECKPOINT_FILE if local.is_dir() else local
    bucket, key = split_s3_uri(location)
    fs, path = s3_filesystem(settings), f"{bucket}/{key}".rstrip("/")
    try:
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            path = f"{path}/{CHECKPOINT_FILE}"
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise StorageError(f"{location}: no checkpoint there (expected a file or a dir with {CHECKPOINT_FILE})")
        local = dest / path.rsplit("/", 1)[-1]
        pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as err:
        raise StorageError(f"{location}: cannot read ({str(err).splitlines()[0]})") from None
    return local
