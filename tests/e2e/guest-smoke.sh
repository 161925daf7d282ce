#!/usr/bin/env bash
# Proves the e2e harness against a known-good stack: passt (Debian's, 2023-03) on a unix socket,
# QEMU's `-netdev stream` client, the busybox guest. Run as root:
#
#     scripts/install-deps.sh && tests/e2e/guest-smoke.sh
#
# Everything runs in a loopback-only network namespace (see lib.sh). passt copies its guest
# addresses from the namespace's fake uplink (192.0.2.1/24, gateway 192.0.2.254) and, by default,
# maps the gateway address to the namespace's loopback: the guest's connections to
# 192.0.2.254:PORT arrive at 127.0.0.1:PORT, where the test's HTTP server, dnsmasq and iperf3
# listen.
#
# Checks, in the guest: DHCP lease (address, router, DNS, MTU), a ping relayed by passt, DNS of a
# .test name through dnsmasq, an HTTP download of a random multi-MiB file by address and by name
# (sha256 compared), an upload (sha256 computed by the server), a short iperf3 run.
# Prints boot -> lease time. Ends with "e2e: N passed, N failed".
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

command -v passt >/dev/null || e2e_die "passt missing: run scripts/install-deps.sh"
e2e_uplink_create
gateway=$E2E_UPLINK_GATEWAY4
blob_mib=${E2E_SMOKE_BLOB_MIB:-8}

# Servers on 127.0.0.1.
mkdir -p "$E2E_WORK/www"
e2e_on_exit rm -rf "$E2E_WORK/www"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
e2e_http_server_start "$E2E_WORK/www"
e2e_dnsmasq_start 53 "e2e.test=$gateway"
iperf_port=$(e2e_free_port)
e2e_iperf3_server_start "$iperf_port"

# passt, serving one QEMU on a unix socket. -D: the DNS server it hands out is the gateway
# (mapped to 127.0.0.1:53, our dnsmasq); never the machine's own resolver.
# passt drops root for "nobody" before it binds the socket: give it a directory it can write.
mkdir -p "$E2E_WORK/passt"
chmod 1777 "$E2E_WORK/passt"
sock="$E2E_WORK/passt/passt.sock"
passt_args=(--foreground --socket "$sock" --one-off
    --dns "$gateway" --no-dhcp-search)
if [ "${E2E_PCAP:-0}" = 1 ]; then passt_args+=(--pcap "$E2E_WORK/passt/passt.pcap"); fi
e2e_spawn passt passt "${passt_args[@]}"
e2e_wait_path "$sock" 10

script="$E2E_WORK/guest-script.sh"
cat >"$script" <<EOF
GW=$gateway
ECHO_ADDR=$E2E_UPLINK_ECHO4
HTTP_PORT=$E2E_HTTP_PORT
IPERF_PORT=$iperf_port
BLOB_SHA=$blob_sha
BLOB_BYTES=$((blob_mib * 1024 * 1024))
EOF
cat >>"$script" <<'EOF'
e2e_check lease test "$E2E_LEASE_OK" = 1
e2e_result guest_ip "$E2E_IP"
e2e_result guest_gateway "$E2E_GATEWAY"
e2e_result guest_dns "$E2E_DNS"
e2e_result guest_mtu "$E2E_MTU"
ip -4 route
cat /etc/resolv.conf

# passt 2023-03 relays guest pings to the real destination with a ping socket (no gateway
# mapping for ICMP): ping an address of the isolated namespace; the gateway is only reported.
e2e_check ping_relay ping -c 3 -W 3 "$ECHO_ADDR"
if ping -c 1 -W 2 "$E2E_GATEWAY" >/dev/null 2>&1; then
    e2e_result ping_gateway yes
else
    e2e_result ping_gateway no
fi

dns_check() {
    nslookup e2e.test >/tmp/ns.out 2>&1 || { cat /tmp/ns.out; return 1; }
    cat /tmp/ns.out
    grep -q "Address:.*$GW" /tmp/ns.out
}
e2e_check dns dns_check

http_get() {
    t0=$(e2e_uptime_ms)
    wget -q -O /tmp/blob "http://$1:$HTTP_PORT/blob.bin" || return 1
    t1=$(e2e_uptime_ms)
    got=$(sha256sum /tmp/blob | cut -d' ' -f1)
    rm -f /tmp/blob
    e2e_result "$2_ms" $((t1 - t0))
    [ "$got" = "$BLOB_SHA" ] || { echo "sha256 $got, want $BLOB_SHA"; return 1; }
}
e2e_check http_get http_get "$GW" http_get
e2e_check http_get_by_name http_get e2e.test http_get_by_name

http_put() {
    e2e_random_text_file /tmp/up 4096
    want="$(sha256sum /tmp/up | cut -d' ' -f1) $(wc -c </tmp/up)"
    got=$(e2e_http_put /tmp/up "$GW" "$HTTP_PORT")
    rm -f /tmp/up
    [ "$got" = "$want" ] || { echo "server saw '$got', want '$want'"; return 1; }
}
e2e_check http_put http_put

iperf() {
    iperf3 -c "$GW" -p "$IPERF_PORT" -t 3 -f m >/tmp/iperf.out 2>&1 || { cat /tmp/iperf.out; return 1; }
    tail -n 4 /tmp/iperf.out
    mbps=$(awk '/receiver/ {print $7}' /tmp/iperf.out)
    e2e_result iperf3_mbps "$mbps"
    [ -n "$mbps" ]
}
e2e_check iperf3 iperf
EOF

log="$E2E_WORK/guest.log"
boot_rc=0
e2e_boot_guest "stream,id=n0,server=off,addr.type=unix,addr.path=$sock" "$script" "$log" 300 ||
    boot_rc=$?
if [ "$boot_rc" = 0 ]; then e2e_ok guest_boot; else e2e_not_ok guest_boot "rc $boot_rc, see $log"; fi

e2e_expect_guest_pass "$log" lease ping_relay dns http_get http_get_by_name http_put iperf3

lease_ip=$(e2e_marker_lease "$log" ip)
if [ "$lease_ip" = "$E2E_UPLINK_ADDR4" ] && [ "$(e2e_marker_lease "$log" router)" = "$gateway" ] &&
    [ "$(e2e_marker_lease "$log" dns)" = "$gateway" ]; then
    e2e_ok lease_values
else
    e2e_not_ok lease_values "$(grep -a '^E2E-LEASE' "$log" || echo 'no E2E-LEASE line')"
fi

get_ms=$(e2e_marker_result "$log" http_get_ms)
echo "accel $(e2e_qemu_accel): QEMU start -> lease ${E2E_BOOT_LEASE_S:-none} s," \
    "whole run ${E2E_BOOT_TOTAL_S} s; guest uptime at lease $(e2e_marker_lease "$log" uptime) s"
echo "download ${blob_mib} MiB: ${get_ms:-?} ms; iperf3: $(e2e_marker_result "$log" iperf3_mbps) Mbit/s"
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- guest log ($log) ---"
    cat "$log"
fi
e2e_summary
