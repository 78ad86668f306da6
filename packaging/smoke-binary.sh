#!/bin/sh
# Smoke test of the single binary (packaging/build-binary.sh), run by CI after the test suite:
#  1. `--version` with an empty PATH, no PYTHONHOME and no Python anywhere it could look;
#  2. the same under a host Python of another version (PYTHONHOME/PYTHONPATH pointing at it), if
#     this machine has one (OTHER_PYTHON, or python3.13 / python3.12 on PATH);
#  3. `init --seal` from the binary (passphrase from a file);
#  4. a node started from the binary and a node started from the venv, on 127.0.0.1 only, sync
#     one packet published on the binary's node; both ledgers verify; both stop on SIGTERM.
# Every wait polls a condition under a deadline. Prints the binary's start-up times.
#
#   sh packaging/smoke-binary.sh [BINARY] [VENV_ARK_LATTICE]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$(dirname "${1:-$root/dist/ark-lattice/ark-lattice}")" && pwd)/$(basename "${1:-ark-lattice}")
venv_cli=${2:-$root/.venv/bin/ark-lattice}
venv_python=$(dirname "$venv_cli")/python
[ -x "$bin" ] || { echo "smoke: no binary at $bin (run packaging/build-binary.sh)" >&2; exit 2; }
[ -x "$venv_cli" ] || { echo "smoke: no venv ark-lattice at $venv_cli" >&2; exit 2; }

work=$(mktemp -d /tmp/ark-smoke-XXXXXX)  # short: control sockets live in the homes
pids=""
cleanup() {
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
fail() {
    echo "smoke: FAILED: $*" >&2
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }; done
    exit 1
}
now_ms() { date +%s%3N; }
# wait_until SECONDS WHAT COMMAND…: poll COMMAND (quietly) every 0.1 s until it succeeds.
wait_until() {
    limit=$1; what=$2; shift 2
    deadline=$(( $(now_ms) + limit * 1000 ))
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "timed out after ${limit} s waiting for $what"
        sleep 0.1
    done
}
json_field() {  # json_field FIELD: read a JSON object on stdin, print one field (the venv's Python)
    "$venv_python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# 1. No Python at all: empty PATH, empty environment, a HOME of its own.
mkdir -p "$work/host-home"
start=$(now_ms)
version=$(env -i PATH= HOME="$work/host-home" "$bin" --version) || fail "--version with an empty PATH"
echo "smoke: $version with an empty PATH and no PYTHONHOME ($(( $(now_ms) - start )) ms)"
start=$(now_ms)
env -i PATH= HOME="$work/host-home" "$bin" --help >/dev/null || fail "--help"
echo "smoke: --help in $(( $(now_ms) - start )) ms"

# 2. A host Python of another version must not leak in.
other=${OTHER_PYTHON:-}
if [ -z "$other" ]; then
    for candidate in python3.13 python3.12 /root/.pyenv/versions/3.1[23]*/bin/python3; do
        # (a pyenv shim is on PATH without a Python behind it: ask the candidate itself)
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] == (3, 11))' 2>/dev/null; then
            other=$(command -v "$candidate"); break
        fi
    done
fi
if [ -n "$other" ]; then
    other_home=$("$other" -c 'import sys; print(sys.base_prefix)')
    other_lib=$("$other" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    env -i PATH="$(dirname "$other")" PYTHONHOME="$other_home" PYTHONPATH="$other_lib" \
        HOME="$work/host-home" "$bin" --version >/dev/null \
        || fail "--version with $other's PYTHONHOME/PYTHONPATH set"
    echo "smoke: --version ignores $("$other" -V) (PYTHONHOME=$other_home)"
else
    echo "smoke: no other Python version on this machine; step 2 skipped"
fi

# 3. A sealed node from the binary.
printf 'smoke passphrase\n' >"$work/pass"
a="$work/a"; b="$work/b"
run_bin() { env -i PATH= HOME="$work/host-home" "$bin" --home "$a" --passphrase-file "$work/pass" "$@"; }
run_venv() { "$venv_cli" --home "$b" "$@"; }
run_bin init --seal --name smoke-binary >/dev/null || fail "init --seal from the binary"
[ "$(run_bin identity show --json | json_field sealed)" = True ] || fail "the binary's key is not sealed"
run_venv init --name smoke-venv --federation-key-file "$a/federation.key" >/dev/null || fail "venv init"
a_id=$(run_bin identity show --json | json_field node_id)
b_id=$(run_venv identity show --json | json_field node_id)
run_bin peers add "$b_id" --tier core >/dev/null || fail "peers add on the binary"
run_venv peers add "$a_id" --tier core >/dev/null || fail "peers add on the venv"
echo "smoke: init --seal from the binary, and a venv node of the same federation"

# 4. Both nodes on 127.0.0.1; the venv node dials the binary's.
start=$(now_ms)
# (exec: $! is then the node itself, not a subshell around it, and SIGTERM reaches it)
(exec env -i PATH= HOME="$work/host-home" "$bin" --home "$a" --passphrase-file "$work/pass" \
    federation start --bind 127.0.0.1 --port 0 --no-mdns --no-multicast) >"$work/a.log" 2>&1 &
pids="$pids $!"; a_pid=$!
# Asked through the venv's CLI, whose own start-up is the shorter: the time is the binary's.
wait_until 60 "the binary's node to serve" "$venv_cli" --home "$a" federation status --json
echo "smoke: the binary's node serves after $(( $(now_ms) - start )) ms (argon2id unlock included)"
(exec "$venv_cli" --home "$b" federation start --bind 127.0.0.1 --port 0 --no-mdns --no-multicast) \
    >"$work/b.log" 2>&1 &
pids="$pids $!"; b_pid=$!
wait_until 60 "the venv's node to serve" run_venv federation status --json
a_url=$(run_bin federation status --json | json_field listen)
case $a_url in ws://127.0.0.1:*) ;; *) fail "the binary's node listens on $a_url, not 127.0.0.1" ;; esac
run_venv federation add-peer "$a_url" >/dev/null || fail "add-peer"
packet=$(printf 'carried by the binary\n' | run_bin packets publish --topic smoke/binary -) \
    || fail "publish from the binary"
has_packet() { run_venv packets list --json | grep -q "$packet"; }
wait_until 60 "packet $packet to reach the venv's node" has_packet
[ "$(run_venv packets show "$packet" --body)" = "carried by the binary" ] || fail "the body differs"
echo "smoke: packet $packet published on the binary's node is on the venv's node"
run_bin ledger verify >/dev/null || fail "ledger verify on the binary's node"
run_venv ledger verify >/dev/null || fail "ledger verify on the venv's node"

for pid in $a_pid $b_pid; do kill -TERM "$pid"; done
stopped() { ! kill -0 "$a_pid" 2>/dev/null && ! kill -0 "$b_pid" 2>/dev/null; }
wait_until 30 "both nodes to stop on SIGTERM" stopped
wait "$a_pid" || fail "the binary's node exited with status $? on SIGTERM"
wait "$b_pid" || fail "the venv's node exited with status $? on SIGTERM"
pids=""
echo "smoke: both ledgers verify; both nodes stopped cleanly. OK"
