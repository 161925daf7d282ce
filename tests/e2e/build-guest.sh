#!/usr/bin/env bash
# Build the e2e test guest: .build/e2e/initramfs.cpio.gz, booted with Debian's kernel
# (unpacked by scripts/install-deps.sh) through .build/e2e/boot-kernel, a link to the kernel's
# uncompressed ELF (.build/e2e/vmlinux, PVH entry) or, failing that, its bzImage (vmlinuz).
#
# The initramfs holds:
#   - busybox (busybox-static) with one symlink per applet
#   - the modules the NIC and the script channel need, in dependency order (/etc/e2e/modules):
#       virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci
#       failover net_failover virtio_net qemu_fw_cfg
#     (the Debian 6.1 kernel builds all of them as modules; af_packet, which udhcpc needs, is
#     built in)
#   - iperf3 and the shared libraries ldd names for it
#   - tests/e2e/guest/{init,udhcpc.script,guest-lib.sh}
#
# Cached: rebuilt only when an input changes (this script, the guest files, busybox, iperf3 and
# its libraries, the kernel's modules). Prints the archive's path. Set SLIPWAY_E2E_FORCE_BUILD=1
# to rebuild anyway.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
out_dir="${SLIPWAY_E2E_BUILD_DIR:-$repo_root/.build/e2e}"
kernel_root="$out_dir/kernel/current"

modules_wanted=(virtio_pci virtio_net qemu_fw_cfg)
extra_binaries=(/usr/bin/iperf3)
busybox_bin=/bin/busybox

die() {
    echo "build-guest: $*" >&2
    exit 1
}

[ -x "$busybox_bin" ] || die "$busybox_bin missing: run scripts/install-deps.sh"
vmlinuz=$(find "$kernel_root/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | head -n1 || true)
[ -n "$vmlinuz" ] || die "no guest kernel under $kernel_root: run scripts/install-deps.sh"
kver=${vmlinuz##*/vmlinuz-}
moddir="$kernel_root/lib/modules/$kver"
for b in "${extra_binaries[@]}"; do
    [ -x "$b" ] || die "$b missing: run scripts/install-deps.sh"
done

modlist=$(python3 "$here/mkinitramfs.py" moddeps "$moddir" "${modules_wanted[@]}")

# Shared libraries of the extra binaries, loader included, resolved to real files.
libs=$(for b in "${extra_binaries[@]}"; do ldd "$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)

# Everything that goes into the archive; the cache key is the hash of their paths and contents.
inputs=(
    "$here/build-guest.sh" "$here/mkinitramfs.py"
    "$here/guest/init" "$here/guest/udhcpc.script" "$here/guest/guest-lib.sh"
    "$busybox_bin" "$vmlinuz" "${extra_binaries[@]}"
)
while read -r _name path; do inputs+=("$path"); done <<<"$modlist"
while read -r l; do inputs+=("$(readlink -f "$l")"); done <<<"$libs"

key=$({
    printf '%s\n' "$kver" "${inputs[@]}"
    sha256sum "${inputs[@]}"
} | sha256sum | cut -d' ' -f1)

mkdir -p "$out_dir"

# The kernel QEMU boots: the bzImage's ELF, unpacked once, when it has a PVH entry point (saves
# the guest's own decompression, ~3 s under TCG); else the bzImage. .build/e2e/boot-kernel
# points at the one to use.
ln -sfn "$vmlinuz" "$out_dir/vmlinuz"
vkey=$(cat "$vmlinuz" "$here/mkinitramfs.py" | sha256sum | cut -d' ' -f1)
if [ "${SLIPWAY_E2E_FORCE_BUILD:-0}" = 1 ] || [ "$(cat "$out_dir/vmlinux.key" 2>/dev/null)" != "$vkey" ]; then
    rm -f "$out_dir/vmlinux" "$out_dir/vmlinux.key"
    if python3 "$here/mkinitramfs.py" vmlinux "$vmlinuz" "$out_dir/vmlinux"; then
        echo "$vkey" >"$out_dir/vmlinux.key"
    else
        echo "build-guest: booting the compressed kernel (slower)" >&2
        echo "$vkey" >"$out_dir/vmlinux.key"
    fi
fi
if [ -f "$out_dir/vmlinux" ]; then
    ln -sfn vmlinux "$out_dir/boot-kernel"
else
    ln -sfn vmlinuz "$out_dir/boot-kernel"
fi

archive="$out_dir/initramfs.cpio.gz"
stamp="$out_dir/initramfs.key"
if [ "${SLIPWAY_E2E_FORCE_BUILD:-0}" != 1 ] && [ -f "$archive" ] && [ -f "$stamp" ] &&
    [ "$(cat "$stamp")" = "$key" ]; then
    echo "$archive"
    exit 0
fi

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,etc/e2e,lib/modules,proc,sys,dev,run,tmp,root,var}
chmod 1777 "$staging/tmp"

cp "$busybox_bin" "$staging/bin/busybox"
# One relative link per applet (bin/sh -> busybox, usr/sbin/x -> ../../bin/busybox), computed
# in bash: ~270 links, no process per link.
while read -r applet; do
    case "$applet" in
    bin/busybox) continue ;;
    bin/*) target=busybox ;;
    */*)
        dir=${applet%/*}
        [ -d "$staging/$dir" ] || mkdir -p "$staging/$dir"
        up=${dir//[!\/]/}
        target="../${up//\//../}bin/busybox"
        ;;
    *) target=bin/busybox ;; # linuxrc, at the top
    esac
    ln -s "$target" "$staging/$applet"
done < <("$busybox_bin" --list-full)

: >"$staging/etc/e2e/modules"
while read -r name path; do
    cp "$path" "$staging/lib/modules/$name.ko"
    echo "$name" >>"$staging/etc/e2e/modules"
done <<<"$modlist"

for b in "${extra_binaries[@]}"; do
    cp "$b" "$staging/usr/bin/"
done
while read -r l; do
    mkdir -p "$staging/$(dirname "$l")"
    cp -L "$l" "$staging/$l"
done <<<"$libs"
# The loader is asked for as /lib64/ld-linux-x86-64.so.2; /lib64 may be a real dir or a link.
[ -e "$staging/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied (ldd output changed?)"

install -m 0755 "$here/guest/init" "$staging/init"
install -m 0755 "$here/guest/udhcpc.script" "$staging/etc/e2e/udhcpc.script"
install -m 0644 "$here/guest/guest-lib.sh" "$staging/etc/e2e/guest-lib.sh"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$staging/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$staging/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$staging/etc/hosts"
: >"$staging/etc/resolv.conf"
echo "$kver" >"$staging/etc/e2e/kernel-version"

python3 "$here/mkinitramfs.py" cpio "$staging" "$archive"
echo "$key" >"$stamp"
echo "build-guest: built $archive ($(du -k "$archive" | cut -f1) KiB, kernel $kver)" >&2
echo "$archive"
