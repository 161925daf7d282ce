#!/usr/bin/env bash
# Install what the end-to-end tests need, on a fresh Debian 12 (bookworm) machine.
#
# - Debian packages: installed only when missing; `apt-get update` runs only then.
# - The guest kernel: Debian's linux-image-6.1.0-N-amd64 is downloaded with `apt-get download` and
#   unpacked with `dpkg-deb -x` into .build/e2e/kernel/ (never installed into /boot). The version
#   follows what `linux-image-amd64` depends on today; an unpacked version is reused.
#
# Idempotent and quiet: a second run on a ready machine does nothing and prints one line.
# Must run as root (CI does). Usage: scripts/install-deps.sh [--kernel-only|--packages-only]
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kernel_cache="${SLIPWAY_E2E_KERNEL_DIR:-$repo_root/.build/e2e/kernel}"

packages=(
    qemu-system-x86  # the guest VM
    busybox-static   # the guest userland
    dnsmasq-base     # a DNS server on the host loopback
    iperf3           # throughput, in the guest and on the host
    passt            # the reference stack the harness is proven against
    slirp4netns      # comparison stack
    rootlesskit      # the slirp4netns drop-in is driven by it
    uidmap           # newuidmap/newgidmap, which rootlesskit needs
    iproute2         # ip netns, veth
    nftables         # random loss on a namespace's link (test-lossy-link; no netem here)
    util-linux       # unshare
    curl
    python3
    cpio             # inspecting the initramfs (the build writes it without cpio)
)

mode=${1:-all}
case "$mode" in
all | --kernel-only | --packages-only) ;;
*)
    echo "usage: $0 [--kernel-only|--packages-only]" >&2
    exit 2
    ;;
esac

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        quietly apt-get update -qq
        apt_updated=1
    fi
}

# Run a command with its output kept back; show it only when the command fails.
quietly() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$log" >&2
        echo "install-deps: '$*' failed (exit $rc)" >&2
    fi
    rm -f "$log"
    return "$rc"
}

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

if [ "$mode" != --kernel-only ]; then
    missing=()
    for p in "${packages[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "install-deps: installing ${missing[*]}"
        apt_update_once
        quietly apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi

if [ "$mode" != --packages-only ]; then
    # Which linux-image-6.1.0-N-amd64 does the meta package point at? apt-cache needs lists.
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
    if [ -z "$kpkg" ]; then
        apt_update_once
        kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$kpkg" ] || {
        echo "install-deps: cannot find the kernel package behind linux-image-amd64; run apt-get update" >&2
        exit 1
    }
    kver=${kpkg#linux-image-}
    if [ ! -f "$kernel_cache/$kver/boot/vmlinuz-$kver" ]; then
        echo "install-deps: fetching guest kernel $kpkg into $kernel_cache"
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        # _apt cannot write into a root-owned mktemp dir; let it, or apt warns and downloads as root.
        chmod 0777 "$tmp"
        if ! (cd "$tmp" && apt-get download -qq "$kpkg" >/dev/null 2>&1); then
            apt_update_once
            (cd "$tmp" && quietly apt-get download -qq "$kpkg")
        fi
        mkdir -p "$kernel_cache"
        rm -rf "$kernel_cache/$kver.partial"
        dpkg-deb -x "$tmp"/"$kpkg"_*.deb "$kernel_cache/$kver.partial"
        rm -rf "${kernel_cache:?}/${kver:?}"
        mv "$kernel_cache/$kver.partial" "$kernel_cache/$kver"
        # An unpacked kernel is ~400 MB: drop the versions this one replaces.
        for old in "$kernel_cache"/*-amd64; do
            [ "$old" = "$kernel_cache/$kver" ] || rm -rf "$old"
        done
    fi
    # A stable name for the build: .build/e2e/kernel/current -> 6.1.0-N-amd64
    if [ "$(readlink "$kernel_cache/current" 2>/dev/null || true)" != "$kver" ]; then
        ln -sfn "$kver" "$kernel_cache/current"
    fi
fi

echo "install-deps: ready"
