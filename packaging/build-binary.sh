#!/bin/sh
# Build the single binary: ark-lattice with its own Python (PyInstaller), for the machine kind it
# is built on (Linux x86_64 here). It needs no Python on the host and ignores the host's Python.
#
#   sh packaging/build-binary.sh            one folder: dist/ark-lattice/ark-lattice (+ _internal/)
#   sh packaging/build-binary.sh --onefile  also dist/ark-lattice-onefile (unpacks to $TMPDIR at
#                                           every start; the stick uses the one-folder build)
#
# Versions are pinned in packaging/binary/constraints.txt. The build venv is build/binary-venv
# (reused when its constraints are unchanged); BUILD_PYTHON picks the interpreter (a CPython built
# with --enable-shared, as distributions' and pyenv's are).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${BUILD_PYTHON:-python3}
venv=build/binary-venv
constraints=packaging/binary/constraints.txt
onefile=no
for arg in "$@"; do
    case $arg in
        --onefile) onefile=yes ;;
        *) echo "usage: $0 [--onefile]" >&2; exit 2 ;;
    esac
done

if ! cmp -s "$constraints" "$venv/constraints.txt" 2>/dev/null; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" \
        pyinstaller pyinstaller-hooks-contrib
    cp "$constraints" "$venv/constraints.txt"
fi
# The program itself (not editable: PyInstaller must see it as an installed package).
"$venv/bin/pip" install -q --disable-pip-version-check -c "$constraints" "$root[metrics]"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$root"

# Modules loaded by name at run time, which PyInstaller's import scan cannot see:
# websockets and rich import submodules lazily; zeroconf's and cbor2's compiled modules replace
# pure ones when they import; ark_lattice imports commands and engines inside functions and ships
# data (default policy, scenarios). libsodium comes with PyNaCl's cffi extension (nacl._sodium).
collect="--collect-submodules ark_lattice --collect-data ark_lattice
    --collect-submodules websockets --collect-submodules rich --collect-submodules zeroconf
    --collect-submodules cbor2 --collect-submodules cel --collect-submodules nacl
    --collect-submodules prometheus_client --hidden-import _cffi_backend"
if "$venv/bin/python" -c "import segno" 2>/dev/null; then
    collect="$collect --collect-all segno"
fi

build() {  # $1: --onedir or --onefile, $2: output name
    # shellcheck disable=SC2086  # $collect is a list of options
    "$venv/bin/pyinstaller" --noconfirm --clean --log-level WARN "$1" --name "$2" \
        --distpath dist --workpath "build/pyinstaller-$2" --specpath "build/pyinstaller-$2" \
        --exclude-module tkinter --exclude-module pytest $collect \
        packaging/binary/entry.py
}

build --onedir ark-lattice
echo "built dist/ark-lattice/ark-lattice ($(du -sh dist/ark-lattice | cut -f1))"
if [ "$onefile" = yes ]; then
    build --onefile ark-lattice-onefile
    echo "built dist/ark-lattice-onefile ($(du -sh dist/ark-lattice-onefile | cut -f1))"
fi
