#!/usr/bin/env bash
# Make sure the local RabbitMQ node answers AMQP on 127.0.0.1:5672, starting it if needed.
#
# It never resets or deletes anything on the broker, because other sessions and tests share it
# (they isolate themselves by AMQP namespace). It restarts the node only when the node runs but
# cannot serve AMQP even after `rabbitmqctl start_app`: such a node serves nobody.
set -euo pipefail

host=127.0.0.1
port=${RABBITMQ_NODE_PORT:-5672}
wait_seconds=${RABBITMQ_WAIT_SECONDS:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The Debian package installs its commands in /usr/sbin, which non-root users lack on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

# True when the port answers the AMQP 0-9-1 protocol header with a method frame
# (Connection.Start). A bare TCP accept is not enough: the listener of a booting node
# may refuse the handshake.
amqp_answers() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        IFS= read -r -N 1 -t 2 frame_type <&3 || exit 1
        [[ $frame_type == $'"'"'\x01'"'"' ]]
    ' _ "$host" "$port" 2>/dev/null
}

wait_until_ready() {
    local deadline=$((SECONDS + $1))
    while ((SECONDS < deadline)); do
        amqp_answers && return 0
        sleep 1
    done
    return 1
}

amqp_answers && exit 0

if ! command -v rabbitmq-server >/dev/null || ! command -v rabbitmqctl >/dev/null; then
    say "nothing answers AMQP on $host:$port and rabbitmq-server is not installed;" \
        "run scripts/bootstrap.sh or set RABBITMQ_URL"
    exit 1
fi

mkdir -p "$root/.run"
start_log="$root/.run/rabbitmq-start.log"

start_node() {
    say "starting the local RabbitMQ broker (rabbitmq-server -detached; output in $start_log)"
    # The daemon must not inherit our stdout/stderr: a caller reading them through a pipe
    # (CI, subprocess.run) would otherwise wait for an EOF that never comes.
    if ! as_root rabbitmq-server -detached </dev/null >"$start_log" 2>&1; then
        say "rabbitmq-server -detached failed:"
        cat "$start_log" >&2
        exit 1
    fi
}

node_log_tail() {
    local log
    for log in /var/log/rabbitmq/rabbit@*.log; do
        [[ -r $log && $log != *_upgrade.log ]] || continue
        say "last lines of $log:"
        tail -n 25 "$log" | cut -c1-240 >&2
    done
}

if as_root timeout 20 rabbitmqctl -q ping </dev/null >/dev/null 2>&1; then
    # The Erlang node runs but the broker does not answer yet: it is booting, or someone ran
    # `rabbitmqctl stop_app`. Give a booting node time first, then start the application
    # (start_app is a no-op on a running one).
    if ! wait_until_ready 15; then
        say "starting the RabbitMQ application on the running node (rabbitmqctl start_app)"
        if ! as_root timeout "$wait_seconds" rabbitmqctl -q start_app </dev/null >"$start_log" 2>&1; then
            say "rabbitmqctl start_app did not succeed:"
            cat "$start_log" >&2
        fi
    fi
else
    start_node
fi

if wait_until_ready "$wait_seconds"; then
    say "RabbitMQ is ready on $host:$port"
    exit 0
fi

# A node that runs but cannot start its broker (for instance one left waiting for cluster
# peers that are gone, or wedged mid-boot) serves nobody, so restarting it takes nothing from
# anyone. force_boot makes the next boot skip waiting for former peers.
node_log_tail
say "the node does not serve AMQP; restarting it (rabbitmqctl stop, force_boot, rabbitmq-server -detached)"
as_root timeout 60 rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || true
if as_root timeout 5 rabbitmqctl -q ping </dev/null >/dev/null 2>&1; then
    say "the node did not stop; killing its processes"
    as_root pkill -KILL -u rabbitmq -f beam || true
    sleep 2
fi
as_root timeout 30 rabbitmqctl -q force_boot </dev/null >/dev/null 2>&1 || true
start_node
if ! wait_until_ready $((wait_seconds * 2)); then
    node_log_tail
    say "RabbitMQ did not answer on $host:$port after a restart;" \
        "see /var/log/rabbitmq/ for the node's log"
    exit 1
fi
say "RabbitMQ is ready on $host:$port"
