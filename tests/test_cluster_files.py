"""Schema/key checks of the production deployment files under cluster/ (offline, no Docker/kubectl).

The Ray launcher config is validated with Ray's own schema and config preparation, the KubeRay
manifests with Ray's own RayCluster -> autoscaler translation; compose/Dockerfiles by keys.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
DRIVER_RESOURCE = "sp3d_driver"
SPACE_NAMES = {"lambda", "sigma", "attention_backbone", "views", "root_input", "label_strategy", "full"}
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"
LOCAL_ONLY = {".env", "cluster.env"}  # real credentials, git-ignored: never scanned or listed

SECRET_KEY = re.compile(r"(?i)(password|secret|secret_access_key|access_key_id|access_key|auth_token|token)$")
REFERENCE = re.compile(r"^(\$\{\w+(:?[?-][^}]*)?\}|\$\$\{?\w+\}?|<[^<>]+>|)$")
REQUIRED_REF = re.compile(r"^\$\{(\w+):\?[^}]+\}$")
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET = re.compile(r"(?i)secret_access_key\W{1,4}([A-Za-z0-9/+=]{40})\b")
LITERAL_PASSWORD = re.compile(
    r"(?im)^\s*-?\s*[\w.-]*(password|passwd|secret|secret_access_key|secret_key)\s*[:=]\s*"
    r"(?![\"']?(\$\{|\$\$|<))[\"']?(\S+)"
)


# ----------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[Any]:
    """All YAML documents of ``path`` (multi-document files allowed), empty documents dropped."""
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    """The single YAML mapping in ``path``."""
    docs = load_docs(path)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{path}: expected one YAML mapping"
    return docs[0]


def image_tag(image: str) -> str:
    """Tag part of a container image reference ('repo/name:tag' -> 'tag')."""
    name = image.rsplit("/", 1)[-1]
    assert ":" in name, f"image {image!r} has no explicit tag"
    return name.split(":", 1)[1]


def secret_values(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every mapping entry (or k8s ``{name, value}`` env item) whose key looks
    like a credential, found anywhere in a parsed YAML tree."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node and SECRET_KEY.search(node["name"]):
            found.append((f"{where}/{node['name']}", node["value"]))
        for key, value in node.items():
            if isinstance(key, str) and SECRET_KEY.search(key) and not isinstance(value, (dict, list)):
                found.append((f"{where}/{key}", value))
            found += secret_values(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += secret_values(item, f"{where}[{i}]")
    return found


def ray_start_custom_resources(params: dict[str, str]) -> dict[str, int]:
    """Custom resources of a KubeRay ``rayStartParams`` block (format '"{\\"name\\": n}"')."""
    raw = params.get("resources")
    if raw is None:
        return {}
    assert raw.startswith('"') and raw.endswith('"'), f"resources must be quoted JSON, got {raw!r}"
    return json.loads(raw[1:-1].replace("\\", ""))


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, args = line.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def resolve_from(path: Path) -> str:
    """The FROM image of the (single-stage) Dockerfile with ``${ARG}`` defaults substituted."""
    args: dict[str, str] = {}
    for instr, rest in dockerfile_instructions(path):
        if instr == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip().strip("\"'")
        if instr == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
    raise AssertionError(f"{path}: no FROM instruction")


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blanks skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: line {line!r} is not KEY=VALUE"
            pairs[key.strip()] = value.strip()
    return pairs


# ----------------------------------------------------------------------------- all files
def cluster_files() -> list[Path]:
    """Every committed file under cluster/ (local credential files excluded)."""
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.name not in LOCAL_ONLY)


YAML_FILES = [p for p in cluster_files() if p.suffix == ".yaml"]


def test_cluster_directory_has_expected_files() -> None:
    """Every deliverable exists."""
    expected = [
        "aws-gpu.yaml",
        "compose.yaml",
        "Dockerfile",
        "mlflow.Dockerfile",
        ".env.example",
        "cluster.env.example",
        "README.md",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/secrets.example.yaml",
        "kuberay/configmap.yaml",
    ]
    missing = [name for name in expected if not (CLUSTER / name).is_file()]
    assert not missing, f"missing cluster files: {missing}"
    assert (ROOT / "docs" / "cluster.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses_and_has_no_literal_secrets(path: Path) -> None:
    """Every YAML document parses; credential-like keys only hold references or placeholders."""
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        for where, value in secret_values(doc):
            assert isinstance(value, str) and REFERENCE.match(value), (
                f"{path.name}{where}: literal credential {value!r}; use ${{VAR:?}} or <placeholder>"
            )


@pytest.mark.parametrize("path", cluster_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_no_secret_patterns_in_text(path: Path) -> None:
    """No AWS key ids / 40-char secrets / 'password: literal' anywhere under cluster/."""
    text = path.read_text()
    assert not AWS_KEY_ID.search(text), f"{path}: looks like an AWS access key id"
    assert not AWS_SECRET.search(text), f"{path}: looks like an AWS secret access key"
    hit = LITERAL_PASSWORD.search(text)
    assert hit is None, f"{path}: literal credential in line {hit.group(0).strip()!r}"


def test_docs_have_no_secret_patterns() -> None:
    """The cluster guide only shows placeholders."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    assert not AWS_KEY_ID.search(text) and not AWS_SECRET.search(text)


def test_readme_and_docs_cover_every_file() -> None:
    """cluster/README.md has a section per file and points at docs/cluster.md."""
    readme = (CLUSTER / "README.md").read_text()
    assert "docs/cluster.md" in readme
    for path in cluster_files():
        if path.name not in {"README.md", ".gitignore"}:
            assert str(path.relative_to(CLUSTER)) in readme, f"README.md does not describe {path.name}"


# ----------------------------------------------------------------------------- Ray launcher
@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    """The parsed cluster/aws-gpu.yaml."""
    return load_one(CLUSTER / "aws-gpu.yaml")


def test_launcher_matches_ray_schema(launcher: dict[str, Any]) -> None:
    """Valid against the installed Ray's ray-schema.json, raw and after Ray fills in AWS defaults."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))
    validate_config(prepare_config(copy.deepcopy(launcher)))


def test_launcher_node_types(launcher: dict[str, Any]) -> None:
    """Head type exists; GPU type has GPU and no driver resource; driver resource on CPU types."""
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    assert launcher["provider"]["type"] == "aws" and launcher["provider"]["region"]
    assert launcher["auth"]["ssh_user"]
    assert (
        sum(t.get("max_workers", 0) for n, t in types.items() if n != launcher["head_node_type"])
        <= (launcher["max_workers"])
    )
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    driver_types = {n: t for n, t in types.items() if t["resources"].get(DRIVER_RESOURCE, 0) >= 1}
    assert gpu_types, "no node type advertises a GPU"
    assert launcher["head_node_type"] in driver_types
    assert set(driver_types) - {launcher["head_node_type"]}, "no worker node type for trial drivers"
    assert not set(gpu_types) & set(driver_types), "trial drivers must not be placed on GPU nodes"
    for name, node_type in gpu_types.items():
        assert node_type["node_config"]["InstanceType"].startswith(("g", "p")), name
        assert "--gpus all" in node_type.get("docker", {}).get("worker_run_options", []), name
    for name in driver_types:
        assert types[name]["resources"].get("GPU", 0) == 0, name


def test_launcher_installs_nothing_at_runtime(launcher: dict[str, Any]) -> None:
    """After Ray merges its AWS defaults, no setup command (or start command) installs packages."""
    from ray.autoscaler._private.util import prepare_config

    prepared = prepare_config(copy.deepcopy(launcher))
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"]
    for key in keys:
        assert prepared[key] == [], f"{key} must be empty (everything is in the image)"
    starts = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    assert not [c for c in starts if re.search(r"\b(pip|conda|uv|apt(-get)?)\s+install\b", c)]


def test_launcher_start_commands(launcher: dict[str, Any]) -> None:
    """Head `ray start` advertises exactly its node type's custom resources; auth + env wired."""
    head_cmd = " ".join(launcher["head_start_ray_commands"])
    match = re.search(r"--resources='([^']*)'", head_cmd)
    assert match, "head ray start must pass --resources"
    head_type = launcher["available_node_types"][launcher["head_node_type"]]
    custom = {k: v for k, v in head_type["resources"].items() if k not in {"CPU", "GPU", "memory"}}
    assert json.loads(match.group(1)) == custom
    assert "--dashboard-host=0.0.0.0" in head_cmd and "ray start --head" in head_cmd
    worker_cmd = " ".join(launcher["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_cmd
    assert "--resources" not in worker_cmd, "worker types get resources via RAY_OVERRIDE_RESOURCES"
    run_options = " ".join(launcher["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options
    ((remote, local),) = launcher["file_mounts"].items()
    assert not Path(local).expanduser().resolve().is_relative_to(ROOT), "secrets must live outside the repo"
    for cmd in (head_cmd, worker_cmd):
        assert f". {remote}/cluster.env" in cmd, "ray start must load the node env file"
    assert f"RAY_AUTH_TOKEN_PATH={remote}/auth_token" in run_options


def test_launcher_image_matches_installed_ray(launcher: dict[str, Any]) -> None:
    """The container tag carries the installed Ray version and Python tag."""
    tag = image_tag(launcher["docker"]["image"])
    assert tag.split("-")[0] == ray.__version__, f"image tag {tag} != ray {ray.__version__}"
    assert PY_TAG in tag.split("-")
    assert launcher["docker"]["container_name"]


# ----------------------------------------------------------------------------- KubeRay
@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    """The parsed cluster/kuberay/raycluster.yaml."""
    return load_one(KUBERAY / "raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    """The parsed cluster/kuberay/rayjob.yaml."""
    return load_one(KUBERAY / "rayjob.yaml")


def _all_ray_start_params(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in spec["workerGroupSpecs"]]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def check_ray_cluster_spec(spec: dict[str, Any]) -> None:
    """Assert the RayCluster spec invariants shared by RayCluster and RayJob."""
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for params in _all_ray_start_params(spec):
        bad = {k: v for k, v in params.items() if not isinstance(v, str)}
        assert not bad, f"rayStartParams values must be strings: {bad}"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert ray_start_custom_resources(head["rayStartParams"]).get(DRIVER_RESOURCE, 0) >= 1
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu = {n: g for n, g in groups.items() if _gpu_limit(g) >= 1}
    cpu_drivers = {n: g for n, g in groups.items() if ray_start_custom_resources(g["rayStartParams"])}
    assert gpu and cpu_drivers and not set(gpu) & set(cpu_drivers)
    for name, group in groups.items():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        if name in gpu:
            container = group["template"]["spec"]["containers"][0]
            assert (
                container["resources"]["requests"].get("nvidia.com/gpu")
                == container["resources"]["limits"]["nvidia.com/gpu"]
            )
        else:
            assert DRIVER_RESOURCE in ray_start_custom_resources(group["rayStartParams"]), name
    for container in _containers(spec):
        assert image_tag(container["image"]).split("-")[0] == ray.__version__, container["name"]
        refs = {next(iter(ref.values()))["name"] for ref in container.get("envFrom", [])}
        assert refs == {"sp3d-platform", "sp3d-s3-credentials"}, container["name"]
        for env in container.get("env", []):
            assert not SECRET_KEY.search(env["name"]), f"{env['name']} must come from a Secret"


def _gpu_limit(group: dict[str, Any]) -> int:
    limits = group["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_raycluster_manifest(raycluster: dict[str, Any]) -> None:
    """RayCluster: apiVersion/kind, groups, GPU limits, token auth, autoscaling, string params."""
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    check_ray_cluster_spec(raycluster["spec"])


def test_rayjob_manifest(rayjob: dict[str, Any], raycluster: dict[str, Any]) -> None:
    """RayJob: K8sJobMode, cleans up after itself, embeds exactly the RayCluster's groups."""
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] == "K8sJobMode"
    check_ray_cluster_spec(spec["rayClusterSpec"])
    assert spec["rayClusterSpec"] == raycluster["spec"], "rayjob.yaml drifted from raycluster.yaml"


def test_rayjob_entrypoint(rayjob: dict[str, Any]) -> None:
    """Entrypoint is `sp3d sweep <known space> --samples N --concurrent K --scheduler asha --storage s3://`."""
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["sp3d", "sweep"]
    space = Path(argv[2])
    assert space.parent == Path("search_spaces") and space.suffix == ".yaml"
    assert (ROOT / space).is_file() or space.stem in SPACE_NAMES, f"unknown search space {space}"
    opts = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert int(opts["--samples"]) >= int(opts["--concurrent"]) >= 1
    assert opts["--scheduler"] == "asha" and opts["--storage"].startswith("s3://")


def test_rayjob_entrypoint_parses_with_sp3d_cli(rayjob: dict[str, Any]) -> None:
    """Once `sp3d sweep` exists, the entrypoint's arguments parse with it (nothing is run)."""
    typer = pytest.importorskip("typer")
    try:
        from sp3d.cli import app
    except Exception as exc:  # the CLI is developed in parallel; its own tests cover import errors
        pytest.skip(f"sp3d CLI not importable yet: {exc}")
    group = typer.main.get_command(app)
    if "sweep" not in getattr(group, "commands", {}):
        pytest.skip("`sp3d sweep` is not registered yet")
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    group.commands["sweep"].make_context("sweep", argv[2:], resilient_parsing=False)


def test_kuberay_specs_translate_with_ray_autoscaler(
    raycluster: dict[str, Any], rayjob: dict[str, Any]
) -> None:
    """Ray's own KubeRay autoscaler turns both specs into a valid config with our resources."""
    module = pytest.importorskip("ray.autoscaler._private.kuberay.autoscaling_config")
    for spec in (raycluster["spec"], rayjob["spec"]["rayClusterSpec"]):
        cr = {"metadata": {"name": "sp3d", "namespace": "default"}, "spec": copy.deepcopy(spec)}
        config = module._derive_autoscaling_config_from_ray_cr(cr)
        types = config["available_node_types"]
        assert types["headgroup"]["resources"][DRIVER_RESOURCE] >= 1
        assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
        assert all(DRIVER_RESOURCE not in t["resources"] for t in types.values() if t["resources"].get("GPU"))


def test_configmap_and_secret_example(raycluster: dict[str, Any]) -> None:
    """ConfigMap carries the non-secret env; the Secret example only placeholders."""
    configmap = load_one(KUBERAY / "configmap.yaml")
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "sp3d-platform"
    assert {"MLFLOW_TRACKING_URI", "SP3D_S3_ENDPOINT", "AWS_DEFAULT_REGION"} <= set(configmap["data"])
    assert not [k for k in configmap["data"] if SECRET_KEY.search(k)]
    secret = load_one(KUBERAY / "secrets.example.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "sp3d-s3-credentials"
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(re.fullmatch(r"<[^<>]+>", v) for v in secret["stringData"].values())


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
