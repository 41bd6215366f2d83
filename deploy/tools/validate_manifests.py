"""Validate rendered Kubernetes manifests offline: ``validate_manifests.py FILE...`` (``-`` is
stdin; each file may hold several YAML documents, as ``kubectl kustomize`` prints them).

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields fail)
against each Kubernetes version in ``KUBERNETES_VERSIONS``. Custom resources are checked
against the JSON Schemas vendored in deploy/schemas/crds (made strict by
deploy/schemas/crd_to_jsonschema.py). A kind that neither knows is an error, not a skip: a
manifest nobody checked is what this is here to prevent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# The oldest minor version the manifests promise to work on, and the newest known here.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "crds"


def documents(name: str) -> Iterator[dict[str, Any]]:
    text = sys.stdin.read() if name == "-" else Path(name).read_text()
    for doc in yaml.safe_load_all(text):
        if doc:
            yield doc


def crd_schema(resource: dict[str, Any]) -> dict[str, Any] | None:
    group, _, version = resource["apiVersion"].rpartition("/")
    path = CRD_SCHEMAS / f"{resource['kind'].lower()}_{group}_{version}.json"
    if not group or not path.exists():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def check(resource: dict[str, Any]) -> list[str]:
    """The problems of one resource (empty when it is valid)."""
    schema = crd_schema(resource)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(resource), key=lambda e: list(e.path))
        ]
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(map(str, e.path)) or "<root>"
            problems.append(f"Kubernetes {version}: {where}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError:
            problems.append(
                f"no schema for {resource['apiVersion']} {resource['kind']} (Kubernetes "
                f"{version}, or deploy/schemas/crds): vendor one or drop the resource"
            )
    return problems


def main(argv: list[str]) -> int:
    failed = checked = 0
    for name in argv or ["-"]:
        for resource in documents(name):
            checked += 1
            label = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
            for problem in check(resource):
                failed += 1
                print(f"{name}: {label}: {problem}")  # noqa: T201 - a command-line tool
    status = "FAILED" if failed else "ok"
    versions = ", ".join(KUBERNETES_VERSIONS)
    print(f"{status}: {checked} resources, {failed} problems (Kubernetes {versions})")  # noqa: T201
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
