"""Constants and parsers shared by the offline checks of the deployment files under cluster/
(tests/test_cluster_files.py: Ray launcher, KubeRay; tests/test_stack_files.py: compose, Dockerfiles)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

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
