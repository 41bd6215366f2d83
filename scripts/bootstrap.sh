#!/usr/bin/env bash
# Prepare this machine to run and test the workspace. Idempotent: installs only what is
# missing, says one line per thing it installs, and is silent when everything is present.
#
#   python3 >= 3.11   apt-get install python3 python3-venv
#   uv                pip install uv into .tools/uv (a venv, so PEP 668 does not apply),
#                     linked as .tools/bin/uv; the Makefile puts .tools/bin on PATH
#   rabbitmq-server   apt-get install rabbitmq-server   (skipped when RABBITMQ_URL is set)
#   .venv             uv sync --locked
#   local broker      scripts/ensure-rabbitmq.sh        (skipped when RABBITMQ_URL is set)
#   wrk               apt-get install wrk, only with --bench or BOOTSTRAP_BENCH=1 (make bench):
#                     the benchmark's HTTP load generator
#   promtool, prometheus, caddy
#                     the binaries of Debian's prometheus and caddy packages, extracted into
#                     .tools/bin (apt-get download + dpkg-deb -x: no daemon is installed or
#                     started): make lint-deploy and tests/deploy
set -euo pipefail

bench=${BOOTSTRAP_BENCH:-0}
for arg in "$@"; do
    case $arg in
    --bench) bench=1 ;;
    *)
        printf 'bootstrap: unknown argument %s (usage: scripts/bootstrap.sh [--bench])\n' "$arg" >&2
        exit 2
        ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$root/.tools/bin:$HOME/.local/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_updated=false
apt_install() {
    command -v apt-get >/dev/null || die "cannot install $* here: no apt-get; install it by hand"
    say "installing $* (apt-get)"
    if ! $apt_updated; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=true
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python_ok() {
    command -v python3 >/dev/null &&
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

ensure_python() {
    python_ok && return
    apt_install python3 python3-venv
    python_ok || die "python3 >= 3.11 is required; found: $(python3 --version 2>&1 || echo none)"
}

ensure_uv() {
    command -v uv >/dev/null && return
    say "installing uv (pip, into .tools/uv)"
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    rm -rf .tools/uv
    python3 -m venv .tools/uv
    .tools/uv/bin/python -m pip install --quiet --disable-pip-version-check uv
    mkdir -p .tools/bin
    ln -sf ../uv/bin/uv .tools/bin/uv
    command -v uv >/dev/null || die "uv was installed but is not on PATH"
}

ensure_rabbitmq_installed() {
    command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null && return
    apt_install rabbitmq-server
}

ensure_wrk() {
    command -v wrk >/dev/null && return
    apt_install wrk
    command -v wrk >/dev/null || die "wrk was installed but is not on PATH"
}

# Debian's prometheus and caddy are single static binaries; taking them out of the .deb
# keeps the machine free of a system Prometheus listening on :9090.
ensure_deb_binaries() {
    local package=$1
    shift
    local missing=false binary
    for binary in "$@"; do
        [[ -x .tools/bin/$binary ]] || command -v "$binary" >/dev/null || missing=true
    done
    $missing || return 0
    command -v apt-get >/dev/null || die "cannot install $package here: no apt-get; install $* by hand"
    say "installing $* (from Debian's $package package, into .tools/bin)"
    local work
    work=$(mktemp -d)
    if ! (cd "$work" && apt-get download -qq "$package" >/dev/null 2>&1); then
        if ! $apt_updated; then
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            apt_updated=true
        fi
        (cd "$work" && apt-get download -qq "$package" >/dev/null) ||
            die "apt-get download $package failed"
    fi
    dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
    mkdir -p .tools/bin
    for binary in "$@"; do
        install -m 755 "$work/root/usr/bin/$binary" ".tools/bin/$binary"
    done
    rm -rf "$work"
}

sync_venv() {
    if [[ ! -f uv.lock ]]; then
        say "creating uv.lock and syncing .venv (uv sync)"
        uv sync --quiet
    elif ! uv sync --locked --check --quiet 2>/dev/null; then
        say "syncing .venv with uv.lock (uv sync --locked)"
        uv sync --locked --quiet
    fi
}

ensure_python
ensure_uv
if [[ -z ${RABBITMQ_URL:-} ]]; then
    ensure_rabbitmq_installed
fi
if [[ $bench == 1 ]]; then
    ensure_wrk
fi
ensure_deb_binaries prometheus prometheus promtool
ensure_deb_binaries caddy caddy
sync_venv
if [[ -z ${RABBITMQ_URL:-} ]]; then
    "$root/scripts/ensure-rabbitmq.sh"
fi
