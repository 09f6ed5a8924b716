"""Schema/key checks of the Ray cluster deployment files under cluster/ (offline, no Docker/kubectl).

The Ray launcher config is validated with Ray's own schema and config preparation, the KubeRay
manifests with Ray's own RayCluster -> autoscaler translation. Compose and Dockerfiles: test_stack_files.py.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
from cluster_file_checks import (
    AWS_KEY_ID,
    AWS_SECRET,
    CLUSTER,
    DRIVER_RESOURCE,
    KUBERAY,
    LITERAL_PASSWORD,
    LOCAL_ONLY,
    PY_TAG,
    REFERENCE,
    ROOT,
    SECRET_KEY,
    SPACE_NAMES,
    image_tag,
    load_docs,
    load_one,
    ray_start_custom_resources,
    secret_values,
)


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
