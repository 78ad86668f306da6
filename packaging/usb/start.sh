#!/bin/sh
# Launch the node on this stick. Every path the program may write to is on the stick: the node home
# (key, ledger, policy, logs), and HOME, the XDG directories, caches and TMPDIR, so nothing lands
# in the host's home. The binary is one folder and unpacks nothing. Only the control socket may
# leave the stick: where the stick's file system cannot hold a socket (FAT/exFAT), the node puts it
# in the host's runtime directory ($XDG_RUNTIME_DIR, a tmpfs) or the abstract namespace instead.
# With no arguments: run the node (`federation start`); otherwise any ark-lattice command.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
host="$here/host"
export ARK_LATTICE_HOME="$here/home"
export HOME="$host/home"
export XDG_CONFIG_HOME="$host/config"
export XDG_CACHE_HOME="$host/cache"
export XDG_DATA_HOME="$host/data"
export XDG_STATE_HOME="$host/state"
export TMPDIR="$host/tmp"
mkdir -p "$ARK_LATTICE_HOME" "$HOME" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME" "$XDG_DATA_HOME" \
    "$XDG_STATE_HOME" "$TMPDIR"
if [ "$#" -eq 0 ]; then
    set -- federation start
fi
exec "$here/ark-lattice/ark-lattice" "$@"
