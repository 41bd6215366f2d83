"""Turn a CustomResourceDefinition into one strict JSON Schema per served version.

Used once, when a CRD is vendored (see README.md beside this file), not at check time:

    python deploy/schemas/crd_to_jsonschema.py <crd.yaml> deploy/schemas/crds

The schema is the CRD's own ``openAPIV3Schema`` with what the API server does and JSON
Schema does not: ``x-kubernetes-int-or-string`` becomes integer-or-string, ``nullable``
admits null, and every object with ``properties`` that does not preserve unknown fields
rejects unknown ones (the API server prunes them silently; a typo in a manifest should fail
the check instead of vanishing at apply time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def convert(crd_path: Path, out_dir: Path) -> list[Path]:
    crd = yaml.safe_load(crd_path.read_text())
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    written = []
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = _strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["title"] = f"{kind} {group}/{version['name']}"
        path = out_dir / f"{kind.lower()}_{group}_{version['name']}.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written in convert(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written)  # noqa: T201 - a command-line tool
