#!/usr/bin/env bash
# slipway with a real Linux guest in QEMU (Debian kernel, busybox initramfs, virtio-net, udhcpc),
# once on `--qemu` (QEMU `-netdev stream`) and once on `--dgram` (QEMU `-netdev dgram`).
#
# Runs inside a loopback-only namespace (lib.sh). The guest reaches the test's servers on
# 127.0.0.1 only through slipway's host-loopback alias 192.168.127.254; DNS goes to slipway's
# gateway, which forwards to a dnsmasq on 127.0.0.1. slipway runs with --egress-allow 127.0.0.0/8.
#
# A third run uses --mtu 65520 with virtio-net's host_mtu: the lease and the interface carry it.
#
# Checks in the guest: DHCP lease (address, router, DNS, MTU), ping of the gateway, a local
# name and a forwarded name, HTTP download (by address and by name) and upload of a random
# multi-MiB file with sha256, iperf3 both directions.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-8}

mkdir -p "$E2E_WORK/www"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
e2e_http_server_start "$E2E_WORK/www"
dns_port=$(e2e_free_port)
e2e_dnsmasq_start "$dns_port" "web.e2e.test=192.168.127.254"
iperf_port=$(e2e_free_port)
e2e_iperf3_server_start "$iperf_port"

script="$E2E_WORK/guest-script.sh"
cat >"$script" <<EOF2
HTTP_PORT=$E2E_HTTP_PORT
IPERF_PORT=$iperf_port
BLOB_SHA=$blob_sha
EOF2
cat >>"$script" <<'EOF2'
e2e_check lease test "$E2E_LEASE_OK" = 1
e2e_result if_mtu "$(cat /sys/class/net/eth0/mtu)"
e2e_check ping_gateway ping -c 2 -W 3 192.168.127.1
e2e_check ping_alias ping -c 1 -W 3 192.168.127.254
lookup() {
    nslookup "$1" >/tmp/ns.out 2>&1 || { cat /tmp/ns.out; return 1; }
    cat /tmp/ns.out
    grep -q "Address:.*$2" /tmp/ns.out
}
e2e_check dns_local lookup host.slipway.internal 192.168.127.254
e2e_check dns_forwarded lookup web.e2e.test 192.168.127.254
http_get() {
    wget -q -O /tmp/blob "http://$1:$HTTP_PORT/blob.bin" || return 1
    got=$(sha256sum /tmp/blob | cut -d' ' -f1)
    rm -f /tmp/blob
    [ "$got" = "$BLOB_SHA" ] || { echo "sha256 $got, want $BLOB_SHA"; return 1; }
}
e2e_check http_get http_get 192.168.127.254
e2e_check http_get_by_name http_get host.slipway.internal
http_put() {
    e2e_random_text_file /tmp/up 4096
    want="$(sha256sum /tmp/up | cut -d' ' -f1) $(wc -c </tmp/up)"
    got=$(e2e_http_put /tmp/up 192.168.127.254 "$HTTP_PORT")
    rm -f /tmp/up
    [ "$got" = "$want" ] || { echo "server saw '$got', want '$want'"; return 1; }
}
e2e_check http_put http_put
iperf() {
    iperf3 -c 192.168.127.254 -p "$IPERF_PORT" -t 3 -f m "$@" >/tmp/iperf.out 2>&1 || { cat /tmp/iperf.out; return 1; }
    mbps=$(awk '/receiver/ {print $7}' /tmp/iperf.out)
    e2e_result "iperf3${1:-}_mbps" "$mbps"
    [ -n "$mbps" ]
}
e2e_check iperf3_up iperf
e2e_check iperf3_down iperf -R
EOF2

run_guest() { # LINK [MTU]: boot a guest on slipway's LINK (qemu|dgram)
    local link=$1 mtu=${2:-1500}
    local name=$link
    [ "$mtu" = 1500 ] || name="$link-mtu$mtu"
    local sock="$E2E_WORK/$name.sock" log="$E2E_WORK/guest-$name.log" netdev rc=0
    e2e_spawn "slipway-$name" "$SLIPWAY" serve "--$link" "$sock" --mtu "$mtu" \
        --dns-upstream "127.0.0.1:$dns_port" --egress-allow 127.0.0.0/8 -v
    local pid=$E2E_PID
    e2e_wait_path "$sock" 10
    case $link in
    qemu) netdev="stream,id=n0,server=off,addr.type=unix,addr.path=$sock" ;;
    dgram) netdev="dgram,id=n0,local.type=unix,local.path=$E2E_WORK/guest.sock,remote.type=unix,remote.path=$sock" ;;
    esac
    # virtio-net learns the large MTU from the device (host_mtu) as QEMU users configure it.
    local nic_opts=""
    [ "$mtu" = 1500 ] || nic_opts="host_mtu=$mtu"
    E2E_NIC_OPTS=$nic_opts e2e_boot_guest "$netdev" "$script" "$log" 300 || rc=$?
    link=$name
    if [ "$rc" = 0 ]; then e2e_ok "$link:guest_boot"; else e2e_not_ok "$link:guest_boot" "rc $rc, see $log"; fi
    local m
    for m in lease ping_gateway ping_alias dns_local dns_forwarded http_get http_get_by_name http_put iperf3_up iperf3_down; do
        if e2e_marker_passed "$log" "$m"; then e2e_ok "$link:$m"; else e2e_not_ok "$link:$m" "see $log"; fi
    done
    local ip router dns lease_mtu
    ip=$(e2e_marker_lease "$log" ip)
    router=$(e2e_marker_lease "$log" router)
    dns=$(e2e_marker_lease "$log" dns)
    lease_mtu=$(e2e_marker_lease "$log" mtu)
    if [ "$ip" = 192.168.127.2 ] && [ "$router" = 192.168.127.1 ] && [ "$dns" = 192.168.127.1 ] &&
        [ "$lease_mtu" = "$mtu" ]; then
        e2e_ok "$link:lease_values"
    else
        e2e_not_ok "$link:lease_values" "$(grep -a '^E2E-LEASE' "$log" || echo 'no E2E-LEASE line')"
    fi
    echo "$link: QEMU start -> lease ${E2E_BOOT_LEASE_S:-none} s; iperf3 up $(e2e_marker_result "$log" iperf3_mbps) Mbit/s," \
        "down $(e2e_marker_result "$log" iperf3-R_mbps) Mbit/s (accel $(e2e_qemu_accel))"
    if [ "$mtu" != 1500 ]; then
        if grep -aq "E2E-RESULT if_mtu=$mtu" "$log"; then e2e_ok "$link:interface_mtu"; else e2e_not_ok "$link:interface_mtu" "eth0 does not have MTU $mtu"; fi
    fi
    e2e_stop_pid "$pid"
    rm -f "$E2E_WORK/guest.sock"
    if [ "$E2E_FAILED" != 0 ]; then
        echo "--- guest log ($log) ---"
        tail -n 60 "$log"
        echo "--- slipway log ---"
        tail -n 30 "$E2E_WORK/slipway-$name.log"
    fi
}

run_guest qemu
run_guest dgram
run_guest qemu 65520
e2e_summary
