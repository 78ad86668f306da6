#!/bin/sh
# Launch the node on this stick with its home beside the program (portable mode).
here=$(cd "$(dirname "$0")" && pwd)
export ARK_LATTICE_HOME="$here/home"
if [ "$#" -eq 0 ]; then
    set -- federation start
fi
exec python3 "$here/ark-lattice.pyz" "$@"
