#!/bin/bash
# tests/env/build-guest.sh OUTDIR [PROGRAM...]
#
# Builds the tiny bootable test guest from Debian packages (no internet needed
# beyond Debian's mirrors): Debian's cloud kernel + a busybox initramfs.
#
# Outputs in OUTDIR:
#   vmlinuz     linux-image-6.1.0-N-cloud-amd64 (newest N that apt-cache knows)
#   initrd.gz   busybox-static + virtio (pci, blk, net, balloon, mem) + ACPI button/evdev modules,
#               and, loaded on demand by /bin/ca-net: CD-ROM (IDE, virtio-scsi, sr/sd, isofs), 8021q,
#               net-plug's (8021q, bridge, tun, veth, nf_tables, nft_objref, nft_meta_bridge)
#   disk.raw    16 MiB raw disk; its first 16 bytes are "CA-TEST-DISK-01\n"
#   cmdline     "console=ttyS0 panic=-1 quiet" (no trailing newline)
#   programs    the PROGRAMs included in /opt/bin with their shared libraries (for ca.exec;
#               e.g. a test program linked with net-plug, for the in-guest VLAN path)
# Outputs are reused when all exist and are newer than this script (and the PROGRAMs, which
# must be the same list).
#
# Guest behaviour (serial console ttyS0; boot with direct kernel boot):
#   COMPUTE-AGENT-GUEST: booted                      once user space runs
#   COMPUTE-AGENT-GUEST: cmdline <kernel cmdline>
#   COMPUTE-AGENT-GUEST: vda present, first 16 bytes: CA-TEST-DISK-01
#     (or "COMPUTE-AGENT-GUEST: vda absent")
#   COMPUTE-AGENT-GUEST: acpid ready                 power button handler running
#   COMPUTE-AGENT-GUEST: tick N                      every 2 s, N = 0, 1, ...
#   COMPUTE-AGENT-GUEST: size cpus=<cpu/online> memtotal_kb=<MemTotal>
#                                                    at boot and whenever either changes
#   COMPUTE-AGENT-GUEST: vda size_bytes=N            at boot and whenever it changes
#                                                    (/sys/block/vda/size * 512; cold resize)
# Hot-plug (live resize, issue 12): as a cloud image's udev rules do, the guest onlines what
# is plugged into it. At boot it sets /sys/devices/system/memory/auto_online_blocks to
# online_movable (the kernel then onlines virtio-mem's and DIMMs' blocks as they come; movable,
# so they can be unplugged again), and a background onliner started from /init writes 1 to
# every offline /sys/devices/system/cpu/cpuN/online and online_movable to every offline
# memory block's state every 0.3 s, then prints the size lines above when they changed.
# virtio_mem is loaded at boot with the other virtio modules; the balloon (virtio_balloon)
# lowers MemTotal when it inflates (no deflate-on-oom), so a shrink shows there too.
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
#
# Networking, metadata and config drive (only when the kernel command line has ca.*
# parameters; the Debian cloud kernel has CONFIG_IP_PNP unset, so `ip=` is ignored). After
# the lines above, /init starts /bin/ca-net in the background (the ticks go on) which
# acts on these parameters, in this order:
#   ca.net=IP/PREFIX,GW     static address on eth0 + default route via GW
#   ca.net=dhcp             busybox udhcpc on eth0 (address, router, option 121 routes asked for)
#   ca.md=ADDR[:PORT]       metadata service (default 169.254.169.254:80)
#   ca.imds=v2|v1|none      v2 (default): PUT /latest/api/token (busybox nc: busybox wget
#                           cannot PUT) then every GET with X-aws-ec2-metadata-token;
#                           v1: GETs without a token; none: no metadata fetches
#   ca.fetch=P1,P2,...      more metadata paths to GET after the three default ones
#   ca.udp=IP:PORT          where the UDP probes go (busybox tftp read requests, file
#                           name = the probe's name), for a host-side listener
#   ca.peer=IP[,IP...]      ping the peers (in parallel), each retried for ca.peerwait
#                           seconds (default 30)
#   ca.spoof=PHASE[,PHASE]  each of mac | ip | both: take MAC ca.spoofmac (default
#                           52:54:00:66:66:66) and/or address ca.spoofip (IP/PREFIX, default
#                           .66 in our subnet); at once: ping the gateway, send UDP probe
#                           "ca-probe-spoof-PHASE", PUT a token, GET instance-id without one
#                           (3 s each); then restore the real MAC and IP and, as a control,
#                           ping, probe "ca-probe-restored-PHASE", token + instance-id (v2)
#   ca.cd=1                 load the CD-ROM modules (ata_piix/IDE, virtio_scsi, sr_mod,
#                           sd_mod, isofs), find the filesystem labelled config-2 (or cidata)
#                           with findfs, mount it (iso9660) and print its meta data
#   ca.vlan=ID,IP/PREFIX[,PEER]  load 8021q, make eth0.ID with IP/PREFIX, ping PEER
#   ca.mods=cd|vlan|netplug[,...]  load that module set (cd, vlan: as for ca.cd / ca.vlan;
#                           netplug: what net-plug needs for a vlan network with its filter,
#                           tests/tools/netplug_vlan_probe) and do nothing else
#   ca.exec=PROG[,ARG...]   run /opt/bin/PROG ARG... last (a program given to this script
#                           after OUTDIR, copied in with its shared libraries), output as a block;
#                           alone it does not wait for eth0 (a guest without a NIC is fine)
#   ca.end=poweroff         power off when done (default: keep running)
# Disk and network traffic (/bin/ca-io, started by /init beside ca-net when ca.io= is given):
#   ca.io=SECONDS           for SECONDS seconds, every 0.25 s: write 64 KiB of zeros to /dev/vda
#                           and read 64 KiB back, both O_DIRECT (no page cache: the device sees
#                           every byte at once), cycling through 2-4 MiB of the disk (the disk's
#                           first MiB, with its header, is never written): about 256 KiB/s each way
#   ca.iopeer=IP            meanwhile ping IP (1000-byte payload, every 0.2 s), from the time eth0
#                           can reach it (ca.net= configures it)
#   markers: CA-IO: start seconds=N peer=IP|none, CA-IO: done writes=N reads=N errors=N
# Markers (serial console; every line starts with "CA-NET"):
#   CA-NET: start <params>
#   CA-NET: dmi FIELD=VALUE                        FIELD: sys_vendor product_name product_serial
#                                                  product_uuid product_family (/sys/class/dmi/id)
#   CA-NET: eth0 mac=MAC                           once eth0 exists (or "CA-NET: no eth0")
#   CA-NET: net static ip=IP/PREFIX gw=GW          | CA-NET: net dhcp ip=IP/PREFIX gw=GW
#                                                    | CA-NET: net dhcp FAIL
#   CA-NET: routes <ip route, one ';' after each route>
#   CA-NET: ping gw GW OK | FAIL
#   CA-NET: token OK len=N | CA-NET: token FAIL status=<HTTP status line or none>
#   CA-NET-BEGIN NAME                              a fetched document, its raw body, then
#   <body lines>
#   CA-NET-B64 NAME <body in base64, one line>
#   CA-NET-END NAME rc=RC [err=<wget's message>]   RC 0 = fetched
#     NAME is the metadata path (latest/meta-data/instance-id, latest/user-data,
#     openstack/latest/meta_data.json, then ca.fetch's), "spoof-PHASE:PATH" and
#     "restored-PHASE:PATH" in the spoof runs, "cd:PATH" for the config drive files.
#     Each block is written with one write(2), so the ticks do not interleave.
#   CA-NET: udp-probe NAME sent
#   CA-NET: spoof PHASE mac=MAC ip=IP/PREFIX       | CA-NET: restored PHASE mac=MAC ip=IP/PREFIX
#   CA-NET: spoof PHASE ping gw GW OK|FAIL         | CA-NET: restored PHASE ping gw GW OK|FAIL
#   CA-NET: peer IP OK after Ns | FAIL after Ns
#   CA-NET: config-drive dev=DEV label=LABEL files=<list> | CA-NET: config-drive NONE
#   CA-NET: config-drive uuid=UUID                 (from openstack/latest/meta_data.json)
#   CA-NET: vlan eth0.ID ip=IP/PREFIX | CA-NET: vlan peer PEER OK|FAIL | CA-NET: vlan FAIL <why>
#   CA-NET: modules SET loaded [(failed: MOD...)]
#   CA-NET: kernel requested module ARGS          (after ca.mods: the kernel's request_module)
#   CA-NET-BEGIN exec:PROG ... CA-NET-END exec:PROG rc=RC, then CA-NET: exec PROG rc=RC
#   CA-NET: done
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [PROGRAM...]" >&2; exit 2; }
SELF=$(readlink -f "${BASH_SOURCE[0]}")
OUT=$1
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "build-guest.sh: $*" >&2; }
PROGS=()
for p in "$@"; do
    [ -f "$p" ] && [ -x "$p" ] || { echo "build-guest.sh: $p is not an executable file" >&2; exit 2; }
    PROGS+=("$(readlink -f "$p")")
done
PROGLIST=$(printf '%s\n' "${PROGS[@]+"${PROGS[@]}"}")

OUTPUTS=(vmlinuz initrd.gz disk.raw cmdline)
is_fresh() {
    local f
    for f in "${OUTPUTS[@]}"; do
        if [ ! -s "$OUT/$f" ] || [ ! "$OUT/$f" -nt "$SELF" ]; then return 1; fi
    done
    [ "$(cat "$OUT/programs" 2>/dev/null)" = "$PROGLIST" ] || return 1
    for f in "${PROGS[@]+"${PROGS[@]}"}"; do [ "$OUT/initrd.gz" -nt "$f" ] || return 1; done
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
      virtio_blk failover net_failover virtio_net virtio_balloon virtio_mem button evdev"
for m in $MODS; do
    p=$(find "$KMOD" -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)
    [ -n "$p" ] || { log "module $m not found in $KPKG"; exit 1; }
    case $p in
        *.xz) xz -dc "$p" > "$R/mods/$m.ko" ;;
        *) cp "$p" "$R/mods/$m.ko" ;;
    esac
done
echo "$MODS" | tr -s ' \n' '  ' > "$R/mods/order"
# Loaded by /bin/ca-net on demand only (not at every boot), each after its dependencies
# (modinfo -F depends): CD-ROM / config drive, 802.1Q for the in-guest VLAN test, and what
# net-plug's VLAN path uses (tests/tools/netplug_vlan_probe: taps, veth ports and parents, the
# bridge-family nft filter; crc32c, which libcrc32c needs, is built in).
# (af_packet, which udhcpc needs, is built in: CONFIG_PACKET=y.)
MODS_CD="scsi_common scsi_mod cdrom sr_mod sd_mod libata ata_piix ata_generic virtio_scsi isofs"
MODS_VLAN="llc stp garp mrp 8021q bridge"
MODS_NETPLUG="$MODS_VLAN tun veth nfnetlink libcrc32c nf_tables nft_objref nft_meta_bridge"
for m in $MODS_CD $MODS_NETPLUG; do
    p=$(find "$KMOD" -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)
    [ -n "$p" ] || { log "module $m not found in $KPKG"; exit 1; }
    case $p in
        *.xz) xz -dc "$p" > "$R/mods/$m.ko" ;;
        *) cp "$p" "$R/mods/$m.ko" ;;
    esac
done
echo $MODS_CD > "$R/mods/order-cd"
echo $MODS_VLAN > "$R/mods/order-vlan"
echo $MODS_NETPLUG > "$R/mods/order-netplug"

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

# Networking / metadata / config drive, only when asked for (see build-guest.sh's header).
case " $(cat /proc/cmdline) " in *" ca."*) /bin/ca-net & ;; esac
case " $(cat /proc/cmdline) " in *" ca.io="*) /bin/ca-io & ;; esac

# Hot-plugged CPUs and memory: onlined and reported (see build-guest.sh's header).
/bin/ca-size &

n=0
while :; do
    echo "COMPUTE-AGENT-GUEST: tick $n"
    n=$((n+1))
    sleep 2
done
EOF
chmod 0755 "$R/init"

# The onliner: hot-plugged CPUs and memory blocks online, their sum (and the disk's size)
# printed when it changes.
cat > "$R/bin/ca-size" <<'EOF'
#!/bin/sh
# Shell builtins only in the loop (read, not cat): it runs every 0.3 s on an emulated CPU.
export PATH=/bin:/sbin
M=/sys/devices/system/memory
[ -w $M/auto_online_blocks ] && echo online_movable > $M/auto_online_blocks 2>/dev/null
last=""; lastd=""
while :; do
    for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
        [ -w "$c" ] && read -r v < "$c" && [ "$v" = 0 ] && echo 1 > "$c" 2>/dev/null
    done
    for b in $M/memory[0-9]*/state; do
        read -r v < "$b" && [ "$v" = offline ] && echo online_movable > "$b" 2>/dev/null
    done
    read -r cpus < /sys/devices/system/cpu/online
    mt=""
    while read -r k v u; do [ "$k" = MemTotal: ] && { mt=$v; break; }; done < /proc/meminfo
    now="cpus=$cpus memtotal_kb=$mt"
    [ "$now" != "$last" ] && { echo "COMPUTE-AGENT-GUEST: size $now"; last=$now; }
    if [ -r /sys/block/vda/size ] && read -r d < /sys/block/vda/size; then
        d=$((d * 512))
        [ "$d" != "$lastd" ] && { echo "COMPUTE-AGENT-GUEST: vda size_bytes=$d"; lastd=$d; }
    fi
    usleep 300000
done
EOF
chmod 0755 "$R/bin/ca-size"

# The kernel's modprobe helper after ca.mods: says what was asked for, loads nothing.
cat > "$R/bin/ca-modprobe" <<'EOF'
#!/bin/sh
echo "CA-NET: kernel requested module $*" > /dev/console
exit 1
EOF
chmod 0755 "$R/bin/ca-modprobe"

# udhcpc's event script: configure eth0 from the lease.
cat > "$R/bin/ca-udhcpc" <<'EOF'
#!/bin/sh
case $1 in
    deconfig) ip addr flush dev "$interface" 2>/dev/null; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface" 2>/dev/null
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface" 2>/dev/null; break; done
        set -- $staticroutes    # option 121: "dest/len gw dest/len gw ..."
        while [ $# -ge 2 ]; do ip route add "$1" via "$2" dev "$interface" 2>/dev/null; shift 2; done
        echo "$ip/${mask:-24} ${router%% *}" > /tmp/lease ;;
esac
exit 0
EOF
chmod 0755 "$R/bin/ca-udhcpc"

cat > "$R/bin/ca-net" <<'EOF'
#!/bin/sh
# compute-agent test guest: networking, metadata and config drive (see build-guest.sh)
export PATH=/bin:/sbin
say() { echo "CA-NET: $*"; }
CA_net=""; CA_md=169.254.169.254; CA_imds=v2; CA_fetch=""; CA_udp=""; CA_peer=""; CA_peerwait=30
CA_spoof=""; CA_spoofmac=52:54:00:66:66:66; CA_spoofip=""; CA_cd=""; CA_vlan=""; CA_end=""
CA_mods=""; CA_exec=""
params=""
for x in $(cat /proc/cmdline); do
    case $x in
        ca.*=*)
            k=${x%%=*}; k=${k#ca.}
            case $k in *[!a-z]*) continue ;; esac
            eval "CA_$k=\${x#*=}"
            params="$params $x" ;;
    esac
done
say "start$params"
# SMBIOS as the guest sees it (cloud-init's ds-identify reads the same files)
for f in sys_vendor product_name product_serial product_uuid product_family; do
    [ -r "/sys/class/dmi/id/$f" ] && say "dmi $f=$(cat "/sys/class/dmi/id/$f" 2>/dev/null)"
done
MDH=${CA_md%:*}; MDP=80; case $CA_md in *:*) MDP=${CA_md##*:} ;; esac
GW=""; IP0=""

# block NAME FILE RC [ERR]: one write of the whole block
block() {
    { echo "CA-NET-BEGIN $1"; cat "$2"; echo
      echo "CA-NET-B64 $1 $(base64 -w 0 "$2")"
      if [ -n "${4:-}" ]; then echo "CA-NET-END $1 rc=$3 err=$4"; else echo "CA-NET-END $1 rc=$3"; fi
    } > /tmp/block 2>/dev/null
    cat /tmp/block
}

TOKEN=""
TMO=5   # seconds for each metadata request (3 while spoofing: no answer is expected)
get_token() {
    TOKEN=""
    printf 'PUT /latest/api/token HTTP/1.0\r\nHost: %s\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\nContent-Length: 0\r\n\r\n' \
        "$MDH" | timeout "$TMO" nc "$MDH" "$MDP" > /tmp/put 2>/dev/null
    st=$(head -n 1 /tmp/put | tr -d '\r')
    case $st in
        "HTTP/1."?" 200"*) TOKEN=$(sed '1,/^\r*$/d' /tmp/put | tr -d '\r\n')
                           say "token OK len=${#TOKEN}"; return 0 ;;
    esac
    say "token FAIL status=${st:-none}"
    return 1
}

# fetch NAME PATH: GET (with the token when there is one), printed as a block
fetch() {
    rm -f /tmp/body /tmp/err
    if [ -n "$TOKEN" ]; then
        timeout "$TMO" wget -q -O /tmp/body --header "X-aws-ec2-metadata-token: $TOKEN" \
            "http://$CA_md/$2" 2>/tmp/err
    else
        timeout "$TMO" wget -q -O /tmp/body "http://$CA_md/$2" 2>/tmp/err
    fi
    rc=$?
    [ -f /tmp/body ] || : > /tmp/body
    block "$1" /tmp/body $rc "$(head -c 200 /tmp/err | tr '\n\r' '  ')"
}

metadata() { # PREFIX: token (v2) + the documents
    [ "$CA_imds" = none ] && return 0
    TOKEN=""
    [ "$CA_imds" = v2 ] && get_token
    for p in latest/meta-data/instance-id latest/user-data openstack/latest/meta_data.json \
             $(echo "$CA_fetch" | tr ',' ' '); do
        fetch "$1$p" "$p"
    done
}

ping_gw() { # LABEL: ping the gateway, up to 10 tries of 1 s
    [ -n "$GW" ] || return 0
    i=0
    while [ $i -lt ${2:-10} ]; do
        if ping -c 1 -W 1 "$GW" >/dev/null 2>&1; then say "${1}ping gw $GW OK"; return 0; fi
        i=$((i+1))
    done
    say "${1}ping gw $GW FAIL"
    return 1
}

probe() { # NAME: one UDP datagram (a tftp read request) to ca.udp
    [ -n "$CA_udp" ] || return 0
    timeout 1 tftp -g -r "$1" -l /tmp/probe "${CA_udp%:*}" "${CA_udp##*:}" >/dev/null 2>&1
    say "udp-probe $1 sent"
}

setip() { # IP/PREFIX
    ip addr flush dev eth0 2>/dev/null
    ip addr add "$1" dev eth0
    ip link set eth0 up
    [ -n "$GW" ] && ip route add default via "$GW" dev eth0 2>/dev/null
    ip neigh flush dev eth0 2>/dev/null
}
setmac() { ip link set eth0 down; ip link set eth0 address "$1"; ip link set eth0 up; }

ldmods() { # SET: its modules, each unless loaded; $MODS_BAD: those that failed
    MODS_BAD=""
    for m in $(cat "/mods/$1"); do
        [ -d "/sys/module/$m" ] && continue
        insmod "/mods/$m.ko" 2>/dev/null || MODS_BAD="$MODS_BAD $m"
    done
}

if [ -n "$CA_net$CA_vlan$CA_peer$CA_spoof" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
fi
ip link set lo up
MAC0=""
if [ -e /sys/class/net/eth0 ]; then
    MAC0=$(cat /sys/class/net/eth0/address)
    say "eth0 mac=$MAC0"
elif [ -n "$CA_net" ]; then
    say "no eth0"
fi

if [ -n "$MAC0" ]; then
    case $CA_net in
        "") ;;
        dhcp)
            ip link set eth0 up
            if udhcpc -i eth0 -n -q -t 5 -T 1 -A 1 -O staticroutes -s /bin/ca-udhcpc >/tmp/udhcpc.log 2>&1 &&
               [ -s /tmp/lease ]; then
                read -r IP0 GW < /tmp/lease
                say "net dhcp ip=$IP0 gw=$GW"
            else
                say "net dhcp FAIL $(tail -n 1 /tmp/udhcpc.log)"
            fi ;;
        *)
            IP0=${CA_net%%,*}; case $CA_net in *,*) GW=${CA_net#*,} ;; esac
            setip "$IP0"
            say "net static ip=$IP0 gw=$GW" ;;
    esac
fi

if [ -n "$IP0" ]; then
    say "routes $(ip route | tr -s ' ' | sed 's/ $//' | tr '\n' ';')"
    ping_gw ""
    probe ca-probe-own
    metadata ""
fi

ping_peer() { # IP: retry until ca.peerwait seconds have passed
    t0=$(cut -d. -f1 /proc/uptime); ok=0
    while :; do
        if ping -c 1 -W 1 "$1" >/dev/null 2>&1; then ok=1; break; fi
        [ $(( $(cut -d. -f1 /proc/uptime) - t0 )) -ge "$CA_peerwait" ] && break
    done
    dt=$(( $(cut -d. -f1 /proc/uptime) - t0 ))
    if [ $ok = 1 ]; then say "peer $1 OK after ${dt}s"; else say "peer $1 FAIL after ${dt}s"; fi
}
n=0
for peer in $(echo "$CA_peer" | tr ',' ' '); do   # all at once, printed in order
    ping_peer "$peer" > "/tmp/peer.$n" &
    n=$((n+1))
done
wait
i=0; while [ $i -lt $n ]; do cat "/tmp/peer.$i"; i=$((i+1)); done

if [ -n "$CA_spoof" ] && [ -n "$IP0" ]; then
    SIP=${CA_spoofip:-${IP0%.*}.66/${IP0#*/}}
    for ph in $(echo "$CA_spoof" | tr ',' ' '); do
        case $ph in
            mac) setmac "$CA_spoofmac"; setip "$IP0"; m=$CA_spoofmac; a=$IP0 ;;
            ip) setip "$SIP"; m=$MAC0; a=$SIP ;;
            both) setmac "$CA_spoofmac"; setip "$SIP"; m=$CA_spoofmac; a=$SIP ;;
            *) say "spoof $ph unknown"; continue ;;
        esac
        say "spoof $ph mac=$m ip=$a"
        # at once (nothing is expected to answer), printed in order
        TMO=3; TOKEN=""
        ping_gw "spoof $ph " 2 > /tmp/sp.1 &
        probe "ca-probe-spoof-$ph" > /tmp/sp.2 &
        get_token > /tmp/sp.3 &
        fetch "spoof-$ph:latest/meta-data/instance-id" latest/meta-data/instance-id > /tmp/sp.4 &
        wait
        cat /tmp/sp.1 /tmp/sp.2 /tmp/sp.3 /tmp/sp.4 > /tmp/sp.all; cat /tmp/sp.all
        TMO=5; TOKEN=""
        setmac "$MAC0"; setip "$IP0"
        say "restored $ph mac=$MAC0 ip=$IP0"
        ping_gw "restored $ph "
        probe "ca-probe-restored-$ph"
        TOKEN=""; get_token
        fetch "restored-$ph:latest/meta-data/instance-id" latest/meta-data/instance-id
    done
fi

if [ -n "$CA_cd" ]; then
    ldmods order-cd
    dev=""; label=""; i=0
    while [ $i -lt 100 ]; do
        for l in config-2 cidata; do
            if dev=$(findfs "LABEL=$l" 2>/dev/null); then label=$l; break 2; fi
        done
        dev=""; usleep 100000; i=$((i+1))
    done
    mkdir -p /mnt/cd
    if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt/cd; then
        say "config-drive dev=$dev label=$label files=$(cd /mnt/cd && find . -type f | sort | tr '\n' ' ')"
        for f in openstack/latest/meta_data.json openstack/latest/user_data meta-data user-data; do
            [ -f "/mnt/cd/$f" ] && block "cd:$f" "/mnt/cd/$f" 0
        done
        if [ -f /mnt/cd/openstack/latest/meta_data.json ]; then
            say "config-drive uuid=$(sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p' /mnt/cd/openstack/latest/meta_data.json | head -n 1)"
        fi
        umount /mnt/cd
    else
        say "config-drive NONE (block devices: $(ls /sys/block | tr '\n' ' '))"
    fi
fi

# Modules the kernel asks for (request_module) are not loaded: only named, so that a set
# missing one shows in the log.
[ -n "$CA_mods" ] && echo /bin/ca-modprobe > /proc/sys/kernel/modprobe
for s in $(echo "$CA_mods" | tr ',' ' '); do
    [ -f "/mods/order-$s" ] || { say "modules $s unknown"; continue; }
    ldmods "order-$s"
    say "modules $s loaded${MODS_BAD:+ (failed:$MODS_BAD)}"
done

if [ -n "$CA_vlan" ] && [ -n "$MAC0" ]; then
    ldmods order-vlan
    vid=${CA_vlan%%,*}; rest=${CA_vlan#*,}; vip=${rest%%,*}; vpeer=""
    case $rest in *,*) vpeer=${rest#*,} ;; esac
    ip link set eth0 up
    if ip link add link eth0 name "eth0.$vid" type vlan id "$vid" 2>/tmp/vlan.err &&
       ip addr add "$vip" dev "eth0.$vid" && ip link set "eth0.$vid" up; then
        say "vlan eth0.$vid ip=$vip"
        if [ -n "$vpeer" ]; then
            i=0; ok=0
            while [ $i -lt 30 ]; do
                if ping -c 1 -W 1 "$vpeer" >/dev/null 2>&1; then ok=1; break; fi
                i=$((i+1))
            done
            if [ $ok = 1 ]; then say "vlan peer $vpeer OK"; else say "vlan peer $vpeer FAIL"; fi
        fi
    else
        say "vlan FAIL $(tr '\n' ' ' < /tmp/vlan.err)"
    fi
fi

if [ -n "$CA_exec" ]; then
    prog=${CA_exec%%,*}; args=""
    case $CA_exec in *,*) args=$(echo "${CA_exec#*,}" | tr ',' ' ') ;; esac
    # shellcheck disable=SC2086 # the arguments are split on purpose
    "/opt/bin/${prog##*/}" $args > /tmp/exec.out 2>&1
    rc=$?
    block "exec:${prog##*/}" /tmp/exec.out $rc
    say "exec ${prog##*/} rc=$rc"
fi

say "done"
[ "$CA_end" = poweroff ] && { sync; poweroff -f; }
exit 0
EOF
chmod 0755 "$R/bin/ca-net"

# ca.io= (see the header): steady disk (and ping) traffic for the metrics comparisons.
cat > "$R/bin/ca-io" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
io=""; peer=""
for x in $(cat /proc/cmdline); do
    case $x in ca.io=*) io=${x#ca.io=} ;; ca.iopeer=*) peer=${x#ca.iopeer=} ;; esac
done
case $io in ""|*[!0-9]*) echo "CA-IO: bad ca.io=$io"; exit 0 ;; esac
[ -b /dev/vda ] || { echo "CA-IO: no vda"; exit 0; }
echo "CA-IO: start seconds=$io peer=${peer:-none}"
up() { cut -d. -f1 /proc/uptime; }
end=$(( $(up) + io ))
if [ -n "$peer" ]; then
    ( while [ "$(up)" -lt "$end" ]; do
          ping -q -s 1000 -i 0.2 -w $(( end - $(up) )) "$peer" >/dev/null 2>&1 || usleep 500000
      done ) &
fi
n=0; w=0; r=0; e=0
while [ "$(up)" -lt "$end" ]; do
    b=$(( 32 + n % 32 ))   # 64 KiB blocks 32..63: 2-4 MiB
    if dd if=/dev/zero of=/dev/vda bs=64k count=1 seek=$b oflag=direct conv=notrunc status=none 2>/dev/null
    then w=$((w+1)); else e=$((e+1)); fi
    if dd if=/dev/vda of=/dev/null bs=64k count=1 skip=$b iflag=direct status=none 2>/dev/null
    then r=$((r+1)); else e=$((e+1)); fi
    n=$((n+1))
    usleep 250000
done
wait
echo "CA-IO: done writes=$w reads=$r errors=$e"
EOF
chmod 0755 "$R/bin/ca-io"

# Extra programs (arguments after OUTDIR) in /opt/bin (not to shadow busybox's applets), with
# the shared libraries they need, for ca.exec.
for p in "${PROGS[@]+"${PROGS[@]}"}"; do
    install -D -m 0755 "$p" "$R/opt/bin/${p##*/}"
    for l in $(ldd "$p" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
        [ -e "$R$l" ] && continue
        mkdir -p "$R$(dirname "$l")"
        cp -L "$l" "$R$l"
    done
done

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
printf '%s' "$PROGLIST" > "$OUT/programs"
rm -rf "$WORK/kx" "$WORK/bb" "$R"
log "built in $OUT ($KPKG): $(du -h "$OUT/vmlinuz" "$OUT/initrd.gz" | awk '{print $2"="$1}' | tr '\n' ' ')"
