#!/usr/bin/env bash
# slipway's main job, end to end, on this machine: build it, start a web server on the host's
# 127.0.0.1, give a fresh network namespace and a real Linux VM in QEMU a network
# through slipway, and fetch the page from inside the guest via host.slipway.internal.
#
#   ./scripts/demo.sh           # as root: a network namespace and a QEMU VM (Debian kernel + busybox)
#   ./scripts/demo.sh --no-vm   # as root: only the namespace
#
# Everything runs inside a network namespace that holds only loopback, so nothing leaves the
# machine: the "host" server, slipway and the guests all live there.
set -euo pipefail
cd "$(dirname "$0")/.."
want_vm=1
[ "${1:-}" = --no-vm ] && want_vm=0

if [ -z "${SLIPWAY_DEMO_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root (network namespaces): $0 $*" >&2; exit 2; }
    ./scripts/install-deps.sh
    echo "== building slipway (cargo build --release)"
    cargo build --release --locked 2>&1 | tail -n 1
fi

# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
export SLIPWAY_DEMO_INNER=1
e2e_enter_isolated_netns "$@"
SLIPWAY=$E2E_ROOT/target/release/slipway

mkdir -p "$E2E_WORK/www"
cat >"$E2E_WORK/www/index.html" <<'HTML'
<h1>Hello from the host's 127.0.0.1</h1>
<p>This page crossed slipway: guest TCP, translated onto an ordinary host socket.</p>
HTML
e2e_http_server_start "$E2E_WORK/www"
echo "== host: web server on 127.0.0.1:$E2E_HTTP_PORT"

e2e_netns_create demo
ns=$E2E_NETNS
mkdir -p "/etc/netns/$ns"
e2e_on_exit rm -rf "/etc/netns/$ns"
echo "nameserver 192.168.127.1" >"/etc/netns/$ns/resolv.conf"
sock="$E2E_WORK/qemu.sock"
args=(serve --netns "/run/netns/$ns" --egress-allow 127.0.0.0/8 -v)
[ "$want_vm" = 1 ] && args+=(--qemu "$sock")
echo "== slipway ${args[*]}"
e2e_spawn slipway "$SLIPWAY" "${args[@]}"
for _ in $(seq 50); do
    ip -n "$ns" -o -4 addr show dev tap0 2>/dev/null | grep -q inet && break
    sleep 0.1
done

echo "== namespace: its network, configured by slipway"
ip -n "$ns" -4 -br addr show
ip -n "$ns" route
echo "== namespace: curl http://host.slipway.internal:$E2E_HTTP_PORT/"
ip netns exec "$ns" curl -sS --max-time 10 "http://host.slipway.internal:$E2E_HTTP_PORT/"

if [ "$want_vm" = 1 ]; then
    cat >"$E2E_WORK/vm.sh" <<EOF2
echo "== VM: DHCP lease \$E2E_IP via \$E2E_GATEWAY, DNS \$E2E_DNS, MTU \$E2E_MTU"
echo "== VM: wget http://host.slipway.internal:$E2E_HTTP_PORT/"
wget -q -O - "http://host.slipway.internal:$E2E_HTTP_PORT/"
EOF2
    echo "== booting a VM (QEMU, $(e2e_qemu_accel)) on slipway's --qemu socket"
    rc=0
    e2e_boot_guest "stream,id=n0,server=off,addr.type=unix,addr.path=$sock" "$E2E_WORK/vm.sh" \
        "$E2E_WORK/vm.log" 180 || rc=$?
    grep -a -v '^E2E-' "$E2E_WORK/vm.log" | grep -a -E '^(==|<)' || true
    [ "$rc" = 0 ] || { echo "the VM run failed; see $E2E_WORK/vm.log" >&2; exit 1; }
fi
echo "== done; logs in $E2E_WORK"
