#!/bin/sh
# Build a bootable hybrid ISO/USB image of a sovereign node with Debian's live-build:
#  - Debian 12 (bookworm), amd64; boots on BIOS and UEFI, Secure Boot through Debian's signed shim
#    and GRUB (--uefi-secure-boot enable);
#  - the single binary in /opt/ark-lattice, started at boot by the systemd unit (Type=notify,
#    watchdog; packaging/systemd/ with binary.conf);
#  - the node home /var/lib/ark-lattice on a LUKS2-encrypted persistence partition (live-boot's
#    persistence-encryption=luks: the passphrase is asked at boot); without one, the node runs
#    from RAM and forgets everything at power-off;
#  - no other network service: no SSH server, no mDNS daemon, nothing else listening.
#
#   sudo sh packaging/usb/make-image.sh [OUTPUT_DIR]       (default: dist/)
#   sudo sh packaging/usb/make-image.sh --config-only      lay out build/live/config and stop
#
# Needs root, live-build (apt-get install live-build), network access to a Debian mirror, a built
# binary (packaging/build-binary.sh) and about 3 GB of disk; writes OUTPUT_DIR/ark-lattice-live.iso.
# Writing it to a stick, adding the persistence partition and first boot: packaging/usb/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
config_only=no
if [ "${1:-}" = --config-only ]; then config_only=yes; shift; fi
out=${1:-$root/dist}
bindir=${BINARY_DIR:-$root/dist/ark-lattice}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
work=$root/build/live

[ "$(id -u)" -eq 0 ] || { echo "make-image: run as root (live-build needs chroot and mounts)" >&2; exit 1; }
command -v lb >/dev/null || { echo "make-image: no live-build: apt-get install live-build" >&2; exit 1; }
[ -x "$bindir/ark-lattice" ] || { echo "make-image: no binary in $bindir: run packaging/build-binary.sh" >&2; exit 1; }

mkdir -p "$work" "$out"
cd "$work"
# A rebuild keeps live-build's package cache (cache/), nothing else.
[ -d config ] && lb clean >/dev/null
rm -rf config
lb config \
    --distribution bookworm --architectures amd64 \
    --mirror-bootstrap "$mirror" --mirror-chroot "$mirror" --mirror-binary "$mirror" \
    --mirror-chroot-security "$security" --mirror-binary-security "$security" \
    --archive-areas main --apt-recommends false \
    --binary-images iso-hybrid --bootloaders "grub-efi,syslinux" --uefi-secure-boot enable \
    --debian-installer none --memtest none --firmware-binary false --firmware-chroot false \
    --iso-volume ARK-LATTICE --iso-application "ark-lattice sovereign node" \
    --bootappend-live "boot=live components persistence persistence-encryption=luks hostname=ark-node console=tty0 console=ttyS0,115200n8"

# Packages: what live-boot needs to open a LUKS2 persistence partition, and nothing that listens.
cat >config/package-lists/ark-lattice.list.chroot <<'EOF'
live-boot
live-config
live-config-systemd
systemd-sysv
cryptsetup
cryptsetup-initramfs
e2fsprogs
ca-certificates
EOF

# The program and its unit.
mkdir -p config/includes.chroot/opt config/includes.chroot/etc/systemd/system/ark-lattice.service.d
cp -RL "$bindir" config/includes.chroot/opt/ark-lattice
cp "$root/packaging/systemd/ark-lattice.service" config/includes.chroot/etc/systemd/system/
cp "$root/packaging/systemd/binary.conf" config/includes.chroot/etc/systemd/system/ark-lattice.service.d/
# The network by DHCP on every wired and wireless interface (systemd-networkd: a client, it serves
# nothing).
mkdir -p config/includes.chroot/etc/systemd/network
cat >config/includes.chroot/etc/systemd/network/80-ark-lattice-dhcp.network <<'EOF'
[Match]
Name=en* eth* wl*

[Network]
DHCP=yes
EOF

cat >config/hooks/live/0500-ark-lattice.hook.chroot <<'EOF'
#!/bin/sh
set -e
useradd --system --home-dir /var/lib/ark-lattice --shell /usr/sbin/nologin ark-lattice
systemctl enable ark-lattice.service systemd-networkd.service
ln -s /opt/ark-lattice/ark-lattice /usr/local/bin/ark-lattice
# Nothing else may listen: mask what a Debian system could bring along.
for unit in ssh.service ssh.socket avahi-daemon.service avahi-daemon.socket cups.service \
        rpcbind.service rpcbind.socket systemd-resolved.service; do
    systemctl mask "$unit"
done
EOF
chmod 755 config/hooks/live/0500-ark-lattice.hook.chroot

if [ "$config_only" = yes ]; then
    echo "live-build configuration in $work (run \`lb build\` there)"
    exit 0
fi
lb build
cp "$work"/live-image-amd64.hybrid.iso "$out/ark-lattice-live.iso"
echo "built $out/ark-lattice-live.iso ($(du -h "$out/ark-lattice-live.iso" | cut -f1))"
