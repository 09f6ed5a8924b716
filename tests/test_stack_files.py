"""Key checks of the production stack files under cluster/ (offline, no Docker): compose (MinIO, PostgreSQL,
MLflow with proxied S3 artifacts), the Dockerfiles, .dockerignore and the cluster env example."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from typing import Any

import pytest
import ray
from cluster_file_checks import (
    CLUSTER,
    PY_TAG,
    REQUIRED_REF,
    ROOT,
    SECRET_KEY,
    dockerfile_instructions,
    image_tag,
    load_one,
    parse_env_file,
    resolve_from,
)


# ----------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed cluster/compose.yaml."""
    return load_one(CLUSTER / "compose.yaml")


def test_compose_services_health_and_order(compose: dict[str, Any]) -> None:
    """Services exist, long-running ones have healthchecks, depends_on uses valid conditions."""
    services = compose["services"]
    assert {"minio", "createbuckets", "postgres", "mlflow"} <= set(services)
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if svc.get("restart") != "no":
            assert svc["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
        for dep, rule in svc.get("depends_on", {}).items():
            assert dep in services and rule["condition"] in conditions, f"{name} -> {dep}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} health it never reports"
    assert services["createbuckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    mlflow_deps = services["mlflow"]["depends_on"]
    assert mlflow_deps["postgres"]["condition"] == "service_healthy"
    assert mlflow_deps["createbuckets"]["condition"] == "service_completed_successfully"
    for volume in (v.split(":")[0] for s in services.values() for v in s.get("volumes", [])):
        assert volume in compose["volumes"], f"undeclared named volume {volume}"


def test_compose_credentials_are_required_references(compose: dict[str, Any]) -> None:
    """Every credential is `${VAR:?message}` (compose fails loudly if unset) and in .env.example."""
    example = parse_env_file(CLUSTER / ".env.example")
    for name, svc in compose["services"].items():
        for key, value in svc.get("environment", {}).items():
            if SECRET_KEY.search(key) or key.endswith("_USER"):
                match = REQUIRED_REF.match(str(value))
                assert match, f"{name}.{key} must be ${{VAR:?...}}, got {value!r}"
                assert match.group(1) in example, f"{match.group(1)} missing from cluster/.env.example"
    code = re.sub(r"(?m)^\s*#.*$", "", (CLUSTER / "compose.yaml").read_text())
    required = set(re.findall(r"\$\{(\w+):\?", code))
    assert required <= set(example), f"not in .env.example: {required - set(example)}"
    for key, value in example.items():
        if SECRET_KEY.search(key) or key.endswith("_PASSWORD"):
            assert re.fullmatch(r"<[^<>]+>", value), f".env.example {key} must be a <placeholder>"


def test_compose_mlflow_server(compose: dict[str, Any]) -> None:
    """MLflow: Postgres backend without inline password, proxied S3 artifacts, MinIO endpoint."""
    mlflow = compose["services"]["mlflow"]
    argv = mlflow["command"]
    assert argv[:2] == ["mlflow", "server"] and "--serve-artifacts" in argv
    assert re.fullmatch(
        r"s3://\$\{SP3D_BUCKET:-sp3d\}/mlartifacts", argv[argv.index("--artifacts-destination") + 1]
    )
    backend = argv[argv.index("--backend-store-uri") + 1]
    userinfo = re.sub(r"\$\{[^}]*\}", "X", backend.removeprefix("postgresql://")).split("@")[0]
    assert backend.startswith("postgresql://") and ":" not in userinfo, "password belongs in PGPASSWORD"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    dockerfile = CLUSTER / mlflow["build"]["context"] / mlflow["build"]["dockerfile"]
    pinned = dict(re.findall(r"ARG (\w+)=(\S+)", dockerfile.read_text()))["MLFLOW_VERSION"]
    assert pinned.split(".")[0] == importlib.metadata.version("mlflow").split(".")[0]
    assert "psycopg2" in dockerfile.read_text() and "boto3" in dockerfile.read_text()


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_compose_createbuckets_script(compose: dict[str, Any]) -> None:
    """The one-shot bucket script is valid sh and creates the `sp3d` bucket idempotently."""
    svc = compose["services"]["createbuckets"]
    script = svc["command"][0].replace("$$", "$")
    subprocess.run(["sh", "-n", "-c", script], check=True, timeout=5)
    assert "mc mb --ignore-existing" in script and svc["environment"]["SP3D_BUCKET"] == "${SP3D_BUCKET:-sp3d}"
    assert svc["entrypoint"][0] == "/bin/sh"


# ----------------------------------------------------------------------------- Dockerfiles
def test_training_dockerfile() -> None:
    """FROM the Ray image of the installed Ray/Python, installs the project, no secret ENV/ARG."""
    path = CLUSTER / "Dockerfile"
    image = resolve_from(path)
    assert image.startswith("rayproject/ray:"), image
    tag = image_tag(image)
    assert tag.split("-")[0] == ray.__version__ and PY_TAG in tag.split("-") and tag.endswith("gpu")
    instructions = dockerfile_instructions(path)
    runs = " ".join(rest for instr, rest in instructions if instr == "RUN")
    assert "requirements-ci.txt" in runs and "-e ." in runs
    for instr, rest in instructions:
        if instr in {"ENV", "ARG"}:
            keys = re.findall(r"(\w+)=", rest) or [rest.split()[0]]
            assert not [k for k in keys if SECRET_KEY.search(k)], f"secret in {instr} {rest}"
        if instr in {"COPY", "ADD"}:
            assert ".env" not in rest and "auth_token" not in rest


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    """The repo-root .dockerignore excludes the venv, git and local credential files."""
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env", "**/.env", "**/auth_token"} <= patterns


def test_cluster_env_example_lists_job_environment() -> None:
    """The node env template names every variable the jobs read, with placeholder credentials."""
    env = parse_env_file(CLUSTER / "cluster.env.example")
    assert set(env) == {
        "MLFLOW_TRACKING_URI",
        "SP3D_S3_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }
    assert re.fullmatch(r"<[^<>]+>", env["AWS_ACCESS_KEY_ID"]) and re.fullmatch(
        r"<[^<>]+>", env["AWS_SECRET_ACCESS_KEY"]
    )
