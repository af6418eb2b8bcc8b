#!/bin/bash
# tests/env/build-guest.sh OUTDIR
#
# Builds the tiny bootable test guest from Debian packages (no internet needed
# beyond Debian's mirrors): Debian's cloud kernel + a busybox initramfs.
#
# Outputs in OUTDIR:
#   vmlinuz     linux-image-6.1.0-N-cloud-amd64 (newest N that apt-cache knows)
#   initrd.gz   busybox-static + virtio (pci, blk, net, balloon) + ACPI button/evdev modules
#   disk.raw    16 MiB raw disk; its first 16 bytes are "CA-TEST-DISK-01\n"
#   cmdline     "console=ttyS0 panic=-1 quiet" (no trailing newline)
# Outputs are reused when all exist and are newer than this script.
#
# Guest behaviour (serial console ttyS0; boot with direct kernel boot):
#   COMPUTE-AGENT-GUEST: booted                      once user space runs
#   COMPUTE-AGENT-GUEST: cmdline <kernel cmdline>
#   COMPUTE-AGENT-GUEST: vda present, first 16 bytes: CA-TEST-DISK-01
#     (or "COMPUTE-AGENT-GUEST: vda absent")
#   COMPUTE-AGENT-GUEST: acpid ready                 power button handler running
#   COMPUTE-AGENT-GUEST: tick N                      every 2 s, N = 0, 1, ...
# Shutdown:
#   - Graceful (virDomainShutdown / `virsh shutdown`, ACPI power button): the
#     guest loads button.ko + evdev.ko and runs busybox acpid; its handler
#     /etc/acpi/PWRF/00000080 prints "COMPUTE-AGENT-GUEST: power button, powering off"
#     and runs `poweroff -f`. Measured here (QEMU TCG): the domain is shut off
#     about 1-2 s after `virsh shutdown`. `virsh reboot` (ACPI + fake reboot) works
#     the same way and the guest boots again. This needs ACPI in the domain XML:
#     <features><acpi/></features> (without it the power button never reaches the
#     guest and a graceful shutdown times out).
#   - Inside the guest, `poweroff` / `halt` / `reboot` (busybox signals PID 1 with
#     USR2/USR1/TERM) are trapped by /init, and `poweroff -f` / `reboot -f` work directly.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
SELF=$(readlink -f "${BASH_SOURCE[0]}")
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "build-guest.sh: $*" >&2; }

OUTPUTS=(vmlinuz initrd.gz disk.raw cmdline)
is_fresh() {
    local f
    for f in "${OUTPUTS[@]}"; do
        if [ ! -s "$OUT/$f" ] || [ ! "$OUT/$f" -nt "$SELF" ]; then return 1; fi
    done
}
if is_fresh; then
    log "up to date in $OUT"
    exit 0
fi
# Concurrent test runs share the cache dir: one builds, the others wait.
exec 9>"$OUT/.lock"
flock -w 600 9 || { log "could not lock $OUT/.lock"; exit 1; }
if is_fresh; then
    log "up to date in $OUT (built by a concurrent run)"
    exit 0
fi

for t in apt-get apt-cache dpkg-deb cpio gzip; do
    command -v "$t" >/dev/null || { log "missing tool: $t (scripts/install-deps.sh)"; exit 1; }
done

WORK=$OUT/.work
mkdir -p "$WORK/debs"

# Newest cloud kernel known to apt (exact names only: no -dbg / -unsigned).
KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' \
        | awk '{print $1}' | sort -V | tail -n 1)
[ -n "$KPKG" ] || { log "no linux-image-6.1.0-*-cloud-amd64 in apt-cache (apt-get update?)"; exit 1; }
KVER=${KPKG#linux-image-}
log "kernel package $KPKG"

fetch() { # package -> path of its .deb in $WORK/debs (downloads once)
    local pkg=$1 deb
    deb=$(ls "$WORK/debs/${pkg}_"*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        (cd "$WORK/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
        deb=$(ls "$WORK/debs/${pkg}_"*.deb | head -n 1)
    fi
    echo "$deb"
}
KDEB=$(fetch "$KPKG")
BDEB=$(fetch busybox-static)

rm -rf "$WORK/kx" "$WORK/bb"
dpkg-deb -x "$KDEB" "$WORK/kx"
dpkg-deb -x "$BDEB" "$WORK/bb"
KMOD=$WORK/kx/lib/modules/$KVER/kernel
[ -d "$KMOD" ] || { log "no modules dir $KMOD"; exit 1; }

R=$WORK/rootfs
rm -rf "$R"
mkdir -p "$R"/{bin,sbin,proc,sys,dev,mods,tmp,etc/acpi/PWRF,root,mnt}
install -m 0755 "$WORK/bb/bin/busybox" "$R/bin/busybox"
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 0600 "$R/dev/console" c 5 1
    mknod -m 0666 "$R/dev/null" c 1 3
fi

# Load order matters: virtio_ring before virtio, then the pci transports.
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
      virtio_blk failover net_failover virtio_net virtio_balloon button evdev"
for m in $MODS; do
    p=$(find "$KMOD" -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)
    [ -n "$p" ] || { log "module $m not found in $KPKG"; exit 1; }
    case $p in
        *.xz) xz -dc "$p" > "$R/mods/$m.ko" ;;
        *) cp "$p" "$R/mods/$m.ko" ;;
    esac
done
echo "$MODS" | tr -s ' \n' '  ' > "$R/mods/order"

# ACPI power button (busybox acpid runs /etc/acpi/<ACTION>/<PARAM>).
cat > "$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "COMPUTE-AGENT-GUEST: power button, powering off" > /dev/console
sync
poweroff -f
EOF
chmod 0755 "$R/etc/acpi/PWRF/00000080"

cat > "$R/init" <<'EOF'
#!/bin/busybox sh
# compute-agent test guest init (PID 1)
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>/dev/console
echo "COMPUTE-AGENT-GUEST: booted"
echo "COMPUTE-AGENT-GUEST: cmdline $(cat /proc/cmdline)"

# busybox poweroff/halt/reboot (without -f) signal PID 1.
trap 'echo "COMPUTE-AGENT-GUEST: poweroff"; sync; poweroff -f' USR2
trap 'echo "COMPUTE-AGENT-GUEST: halt"; sync; poweroff -f' USR1
trap 'echo "COMPUTE-AGENT-GUEST: reboot"; sync; reboot -f' TERM
trap '' INT HUP

for m in $(cat /mods/order); do
    insmod /mods/$m.ko 2>/dev/null || echo "COMPUTE-AGENT-GUEST: insmod $m failed"
done

# Wait (bounded) for the virtio disk to show up.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then
    echo "COMPUTE-AGENT-GUEST: vda present, first 16 bytes: $(head -c 16 /dev/vda | tr -d '\000-\037\177')"
else
    echo "COMPUTE-AGENT-GUEST: vda absent"
fi
echo "COMPUTE-AGENT-GUEST: block devices: $(ls /sys/block | tr '\n' ' ')"

if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -c /etc/acpi -l /tmp/acpid.log && echo "COMPUTE-AGENT-GUEST: acpid ready"
else
    echo "COMPUTE-AGENT-GUEST: no input event device, ACPI power button not handled"
fi

n=0
while :; do
    echo "COMPUTE-AGENT-GUEST: tick $n"
    n=$((n+1))
    sleep 2
done
EOF
chmod 0755 "$R/init"

TMP=$OUT/.tmp.$$
trap 'rm -f "$TMP".*' EXIT
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9n > "$TMP.initrd"
cp "$WORK/kx/boot/vmlinuz-$KVER" "$TMP.vmlinuz"
# 16 MiB raw disk with a recognisable header.
printf 'CA-TEST-DISK-01\n' > "$TMP.disk"
truncate -s 16M "$TMP.disk"
printf 'console=ttyS0 panic=-1 quiet' > "$TMP.cmdline"   # no trailing newline

mv -f "$TMP.vmlinuz" "$OUT/vmlinuz"
mv -f "$TMP.initrd" "$OUT/initrd.gz"
mv -f "$TMP.disk" "$OUT/disk.raw"
mv -f "$TMP.cmdline" "$OUT/cmdline"
echo "$KPKG" > "$OUT/kernel-package"
rm -rf "$WORK/kx" "$WORK/bb" "$R"
log "built in $OUT ($KPKG): $(du -h "$OUT/vmlinuz" "$OUT/initrd.gz" | awk '{print $2"="$1}' | tr '\n' ' ')"
