#!/bin/sh
# One session with a USB stick on a host whose HOME is read-only, inside a private mount namespace
# (unshare -m) whose /tmp is a fresh tmpfs: init --seal, run the node, publish, verify, stop. Then
# HOME and /tmp must be exactly as before. Run by tests/packaging/test_stick.py.
#   stick-session.sh STICK HOST_HOME
set -eu
stick=$1 hosthome=$2
mount -t tmpfs -o size=16m,mode=1777 ark-stick-tmp /tmp
mount --bind "$hosthome" "$hosthome"
mount -o remount,bind,ro "$hosthome"
if (: >"$hosthome/.write-probe") 2>/dev/null; then echo "HOME is writable" >&2; exit 3; fi

snapshot() {  # every entry with its size and mode, and the directories' own change times
    for dir in "$hosthome" /tmp; do
        stat -c '%n %s %a %y' "$dir"
        find "$dir" -mindepth 1 -exec stat -c '%n %s %a %y' {} + | sort
    done
}
before=$(snapshot)

# The host's user: HOME read-only, the usual variables pointing into it, started from it.
export HOME="$hosthome" XDG_CONFIG_HOME="$hosthome/.config" XDG_CACHE_HOME="$hosthome/.cache"
unset XDG_DATA_HOME XDG_STATE_HOME XDG_RUNTIME_DIR TMPDIR
export ARK_LATTICE_PASSPHRASE="stick passphrase"
cd "$hosthome"

"$stick/start.sh" init --seal --name stick-node >/dev/null
# (exec: $! is the node, so SIGTERM reaches it)
(exec "$stick/start.sh" federation start --bind 127.0.0.1 --port 0 --no-mdns --no-multicast) \
    >"$stick/host/node.out" 2>&1 &
node=$!
deadline=$(( $(date +%s) + 90 ))
until "$stick/start.sh" federation status --json >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$node" 2>/dev/null; then
        echo "the node did not serve:" >&2; cat "$stick/host/node.out" >&2; exit 4
    fi
    sleep 0.1
done
packet=$(printf 'written on the stick\n' | "$stick/start.sh" packets publish --topic stick/test -)
"$stick/start.sh" packets list --json | grep -q "$packet"
"$stick/start.sh" ledger verify >/dev/null
kill -TERM "$node"
wait "$node"

after=$(snapshot)
if [ "$before" != "$after" ]; then
    echo "written outside the stick:" >&2
    printf '%s\n' "$before" >"$stick/host/before"; printf '%s\n' "$after" >"$stick/host/after"
    diff "$stick/host/before" "$stick/host/after" >&2 || true
    exit 5
fi
echo "published $packet; HOME and /tmp unchanged"
