#!/bin/sh
# Lay out a USB sovereign-node stick in TARGET_DIR (the stick's mount point, or a folder on it):
#
#   TARGET_DIR/ark-lattice/        the single binary, one folder (packaging/build-binary.sh)
#   TARGET_DIR/start.sh            the launcher: every path on the stick (see start.sh)
#   TARGET_DIR/home/               the node home: key (sealed), ledger, policy, logs
#   TARGET_DIR/host/               HOME, XDG dirs, caches and TMPDIR while the node runs
#   TARGET_DIR/ark-lattice.desktop an XDG autostart entry with this stick's absolute path
#   TARGET_DIR/README.md           how to use it
#
#   sh packaging/usb/make-stick.sh TARGET_DIR [BINARY_DIR]     (BINARY_DIR: dist/ark-lattice)
#
# Re-running it updates the program and launcher and keeps home/. Symbolic links are copied as
# files (FAT/exFAT sticks hold none).
set -eu
usage() { echo "usage: $0 TARGET_DIR [BINARY_DIR]" >&2; exit 2; }
[ "$#" -ge 1 ] && [ "$#" -le 2 ] || usage
here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
bindir=${2:-$root/dist/ark-lattice}
if [ ! -x "$bindir/ark-lattice" ]; then
    echo "make-stick: no binary in $bindir: run packaging/build-binary.sh first" >&2
    exit 1
fi
mkdir -p "$1"
target=$(cd "$1" && pwd -P)

rm -rf "$target/ark-lattice.new"
cp -RL "$bindir" "$target/ark-lattice.new"
rm -rf "$target/ark-lattice"
mv "$target/ark-lattice.new" "$target/ark-lattice"
cp "$here/start.sh" "$target/start.sh"
cp "$here/README.md" "$target/README.md"
chmod 755 "$target/start.sh" "$target/ark-lattice/ark-lattice" 2>/dev/null || true
mkdir -p "$target/home" "$target/host/home" "$target/host/config" "$target/host/cache" \
    "$target/host/data" "$target/host/state" "$target/host/tmp"
chmod 700 "$target/home" 2>/dev/null || true

# The autostart entry names the launcher by its absolute path: `%k` would name the copy in
# ~/.config/autostart. Desktop Entry quoting: inside "…", escape \ " ` $ with a backslash, and % as %%.
exec_path=$(printf '%s' "$target/start.sh" | sed -e 's/[\\"`$]/\\&/g' -e 's/%/%%/g')
cat >"$target/ark-lattice.desktop" <<DESKTOP
[Desktop Entry]
Type=Application
Name=ark-lattice (USB node)
Comment=Run the sovereign node on the stick at $target
Exec="$exec_path"
Terminal=true
X-GNOME-Autostart-enabled=true
DESKTOP

# Can this file system keep a key private? (FAT/exFAT: no; every file shows 0777.)
probe="$target/home/.mode-probe"
: >"$probe"
chmod 600 "$probe" 2>/dev/null || true
mode=$(stat -c %a "$probe")
rm -f "$probe"
if [ "$mode" != 600 ]; then
    echo "make-stick: $target keeps no file permissions (mode $mode): the node takes only a sealed key there (init --seal; see README.md)" >&2
fi
echo "stick ready: $target/start.sh init --seal, then $target/start.sh"
