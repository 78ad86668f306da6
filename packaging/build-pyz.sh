#!/bin/sh
# Build dist/ark-lattice.pyz: one file holding ark-lattice and its dependencies (shiv), run with
# `python3 ark-lattice.pyz …`. Dependencies with compiled parts (pynacl, cbor2, numpy, cel) are
# wheels for the building machine's platform and Python: build on the kind of machine you run on.
set -eu
cd "$(dirname "$0")/.."
python3 -m venv .build-venv
.build-venv/bin/pip install -q 'shiv>=1.0'
mkdir -p dist
.build-venv/bin/shiv --compressed -c ark-lattice -o dist/ark-lattice.pyz .
echo "built dist/ark-lattice.pyz"
