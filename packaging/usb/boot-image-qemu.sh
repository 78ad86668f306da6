#!/bin/sh
# Boot the image (make-image.sh) headless under QEMU and wait until systemd reports the node
# started: with Type=notify, "Started ark-lattice…" on the serial console means the node sent
# READY=1, i.e. it listens. The kernel and initrd are taken from the ISO and booted directly, so
# no boot menu waits for a key; the rest (live-boot, squashfs, systemd, the unit) is the image's.
# The guest gets QEMU's user-mode network (no host port is forwarded: nothing reaches it).
#
#   sh packaging/usb/boot-image-qemu.sh [ISO] [SECONDS]     (defaults: dist/ark-lattice-live.iso, 600)
#
# Needs qemu-system-x86_64 and xorriso (apt-get install qemu-system-x86 xorriso); uses KVM when
# /dev/kvm is writable (QEMU_ACCEL=tcg: never).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd -P)
iso=${1:-$root/dist/ark-lattice-live.iso}
limit=${2:-600}
work=$(mktemp -d)
qemu=""
cleanup() {
    if [ -n "$qemu" ]; then kill "$qemu" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
xorriso -osirrox on -indev "$iso" -extract /live/vmlinuz "$work/vmlinuz" \
    -extract /live/initrd.img "$work/initrd.img" >/dev/null 2>&1

accel=""  # QEMU_ACCEL=tcg forces emulation (nested KVM in a container can hang the guest)
if [ "${QEMU_ACCEL:-kvm}" = kvm ] && [ -w /dev/kvm ]; then accel="-enable-kvm"; fi
: >"$work/console.log"
# shellcheck disable=SC2086  # $accel is a list of options
qemu-system-x86_64 $accel -m 2048 -smp 2 -nographic -no-reboot \
    -cdrom "$iso" -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "boot=live components hostname=ark-node console=ttyS0,115200n8 systemd.show_status=1 systemd.journald.forward_to_console=1" \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
    >"$work/console.log" 2>&1 &
qemu=$!
start=$(date +%s)
# (the journal goes to the console too, so the node's own lines show there)
until grep -a -q "Started.*ark-lattice" "$work/console.log"; do
    if ! kill -0 "$qemu" 2>/dev/null || [ $(( $(date +%s) - start )) -ge "$limit" ]; then
        tail -40 "$work/console.log" >&2
        echo "boot-image-qemu: no 'Started ark-lattice' on the console after $(( $(date +%s) - start )) s" >&2
        exit 1
    fi
    sleep 1
done
grep -a -E "ark-lattice|listening on" "$work/console.log" | tail -8
echo "boot-image-qemu: the node started (READY=1) $(( $(date +%s) - start )) s after power-on"
