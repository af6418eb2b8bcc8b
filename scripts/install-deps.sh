#!/bin/bash
# Install everything compute-agent needs to build, run and test (Debian 12). Idempotent.
# Must run as root. Only Debian's mirrors are needed. When every package is already
# installed it skips apt-get entirely (works offline); CA_FORCE_APT=1 forces it.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi

PKGS=(
    # build
    build-essential pkg-config
    libvirt-dev libuv1-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev
    librdkafka-dev libmicrohttpd-dev libssl-dev libsystemd-dev libxml2-dev libcmocka-dev
    libnl-route-3-dev libnftables-dev
    # guest networking: DHCP server per network (dnsmasq), config drives (xorriso)
    dnsmasq-base
    # hypervisor (libvirtd + QEMU; TCG is enough)
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
    # test guest
    busybox-static cpio
    # test tooling and services
    kcat python3 python3-jsonschema python3-yaml python3-confluent-kafka
    nginx placement-api glance-api prometheus prometheus-libvirt-exporter xorriso iproute2 curl
    # metadata service tests and benchmark: cloud-init's own code as the client, wrk
    cloud-init wrk nftables
    # operators' own tools (issue 11): the openstack client with osc-placement,
    # os-traits' names, ceilometer's meter definitions, expect for the console
    python3-openstackclient python3-osc-placement python3-os-traits python3-ceilometer expect
)

missing=()
for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done

# CA_FORCE_APT=1 runs apt-get update/install even when everything is present.
if [ ${#missing[@]} -gt 0 ] || [ "${CA_FORCE_APT:-0}" = 1 ]; then
    echo "install-deps.sh: installing: ${missing[*]}"
    apt-get update
    # Do not let package postinst scripts start services (nginx, prometheus, ...)
    # on machines without a policy-rc.d; the test harness starts its own.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${PKGS[@]}" || rc=$?
    [ $created_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || exit $rc
else
    echo "install-deps.sh: all ${#PKGS[@]} packages already installed"
fi

# libvirt's QEMU driver resolves its compiled-in default user/group even when
# qemu.conf says root; Debian creates them in libvirt-daemon-system, which we
# do not need.
getent group kvm >/dev/null || groupadd -r kvm
getent passwd libvirt-qemu >/dev/null || \
    useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu

echo "install-deps.sh: done"
