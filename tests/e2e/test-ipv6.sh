#!/usr/bin/env bash
# IPv6 on slipway's guest network, end to end: a network namespace on `slipway serve --netns`,
# one on the slirp4netns drop-in with --enable-ipv6 (configured only by the kernel's SLAAC), and
# a real Linux guest in QEMU (TCG) configuring eth0 from slipway's router advertisements.
#
# Runs inside a loopback-only namespace (lib.sh). The HTTP server listens on ::1 only, dnsmasq on
# 127.0.0.1 (the only DNS upstream, serving an AAAA record for v6.e2e.test); every slipway runs
# with the egress allow-list 127.0.0.0/8 and ::1/128 (plus one address of lib.sh's fake uplink,
# inside the isolated namespace, for the ICMP socket relay). Host clients are on ::1 or
# 127.0.0.1. Nothing else is reached.
#
# Checks:
#   serve --netns (TAP MAC 02:00:00:00:00:05): tap0 has the EUI-64 address fd00:5119::ff:fe00:5
#     and a default route via the gateway's link-local address; the kernel received router
#     advertisements; ping of the gateway fd00:5119::1 and the alias fd00:5119::fe, and of an
#     outside address through slipway's ICMP socket; AAAA of host.slipway.internal and
#     gateway.slipway.internal, AAAA of v6.e2e.test forwarded to dnsmasq (UDP and TCP);
#     download and upload of a random multi-MiB file (sha256) with the server on [::1] through
#     http://[fd00:5119::fe]:PORT/; an IPv6 destination outside the allow-list refused at once;
#     forwards into the namespace's server on [::]:80 from [::1] to the IPv6 guest address
#     (client seen as fd00:5119::fe), from [::1] to the default (IPv4) guest and from 127.0.0.1
#     to the IPv6 guest address.
#   serve --netns --ipv6 off: the kernel's router solicitations get no advertisement, tap0 has
#     no global IPv6 address and no IPv6 default route; IPv4 still answers (ping of the gateway).
#   slirp4netns --enable-ipv6 without -c: once the test brings tap0 up (as rootlesskit does), the
#     kernel's SLAAC gives it fd00::EUI-64(MAC)/64 and a default route via fe80::... learned from
#     the advertisement; ping of fd00::2, a download through http://[fd00::2]:PORT/, AAAA at
#     fd00::3 (a built-in name and one forwarded to dnsmasq).
#   QEMU guest (one boot, MAC 52:54:00:e2:e0:01): eth0 gets fd00:5119::5054:ff:fee2:e001 by
#     SLAAC (the guest counted an advertisement) and a default route via the gateway's link-local
#     address; pings of the gateway and the alias; AAAA of a built-in name and of v6.e2e.test
#     through fd00:5119::1 (busybox nslookup); download (sha256) and upload through
#     http://[fd00:5119::fe]:PORT/; a forward
#     [::1]:PORT -> [GUEST_ADDRESS]:80 to busybox httpd in the guest, reached from the host's ::1
#     (sha256), the guest seeing the client as fd00:5119::fe with the host client's own port.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
command -v nsenter >/dev/null || e2e_die "nsenter missing: run scripts/install-deps.sh"
blob_mib=${E2E_BLOB_MIB:-8}
prefix=fd00:5119::
gateway6=fd00:5119::1
alias6=fd00:5119::fe
# The gateway's link-local address: fe80:: + the EUI-64 of its MAC 5a:94:ef:e4:0c:dd.
gateway_ll=fe80::5894:efff:fee4:cdd
ns_mac=02:00:00:00:00:05
v6_name=v6.e2e.test
v6_name_addr=2001:db8::5119
www=$E2E_WORK/www
results=$E2E_WORK/host-checks.results

# PREFIX MAC: the SLAAC address of MAC in PREFIX (a /64), in the canonical form `ip` prints.
eui64() {
    python3 -c '
import ipaddress, sys
b = bytes.fromhex(sys.argv[2].replace(":", ""))
iid = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:6]
net = ipaddress.IPv6Address(sys.argv[1]).packed[:8]
print(ipaddress.IPv6Address(net + iid))' "$1" "$2"
}
ns_addr6=$(eui64 "$prefix" "$ns_mac")
guest_addr6=$(eui64 "$prefix" "$E2E_GUEST_MAC")

mkdir -p "$www"
blob_sha=$(e2e_random_file "$www/blob.bin" "$blob_mib")
e2e_http_server_start "$www" 0 ::1
dns_port=$(e2e_free_port)
e2e_dnsmasq_start "$dns_port" "$v6_name=$v6_name_addr"
# An outside address for the ICMP socket relay, and a destination that never answers.
e2e_uplink_create
egress=(--egress-allow 127.0.0.0/8 --egress-allow ::1/128 --egress-allow "$E2E_UPLINK_ECHO6/128")

check() { e2e_check_cmd "$@"; }

# SECONDS CMD...: CMD until it succeeds, at most SECONDS; the last attempt's output is printed.
eventually() {
    local secs=$1 deadline out rc
    shift
    deadline=$(($(date +%s%N) + secs * 1000000000))
    while :; do
        rc=0
        out=$("$@" 2>&1) || rc=$?
        if [ "$rc" = 0 ] || [ "$(date +%s%N)" -ge "$deadline" ]; then
            echo "$out"
            return "$rc"
        fi
        sleep 0.1
    done
}

# Namespaces are named by a path (/run/netns/NAME, /proc/PID/ns/net) in the helpers below.
in_net() { # NETNS CMD...: CMD in NETNS (nsenter: /sys is not remounted, /proc/net follows)
    local net=$1
    shift
    nsenter --net="$net" "$@"
}

# [-n NETNS] URL: GET URL (from NETNS with -n); the body's sha256 must be the blob's.
fetch_sha() {
    local in=() got
    if [ "$1" = -n ]; then
        in=(nsenter "--net=$2")
        shift 2
    fi
    got=$("${in[@]}" curl -gsS --max-time 30 "$1" | sha256sum | cut -d' ' -f1)
    echo "$1${in:+ (in ${in[1]#--net=})}: sha256 $got"
    [ "$got" = "$blob_sha" ] || { echo "want $blob_sha"; return 1; }
}

# NETNS NAME: the counter NAME of NETNS's /proc/net/snmp6.
snmp6() { in_net "$1" awk -v k="$2" '$1 == k { print $2 }' /proc/net/snmp6; }

# NETNS ADDRESS: ADDRESS/64 on tap0 in NETNS, no longer tentative.
has_addr6() {
    local out
    out=$(in_net "$1" ip -6 addr show dev tap0) || return 1
    echo "$out"
    grep -q "inet6 $2/64 scope global" <<<"$out" || { echo "no $2/64 on tap0"; return 1; }
    ! grep -q "inet6 $2/64 .*tentative" <<<"$out" || { echo "$2 still tentative"; return 1; }
}

# NETNS: the IPv6 default route of NETNS goes via the gateway's link-local address.
default_route6() {
    local out
    out=$(in_net "$1" ip -6 route show default) || return 1
    echo "default: ${out:-none}"
    grep -q "^default via $gateway_ll dev tap0" <<<"$out"
}

# A process holding a new network namespace (`unshare --net sleep`); sets NS_PID.
netns_holder() {
    local me
    me=$(readlink /proc/self/ns/net)
    e2e_spawn "$1" unshare --net sleep 300
    NS_PID=$E2E_PID
    for _ in $(seq 100); do
        [ "$(readlink "/proc/$NS_PID/ns/net" 2>/dev/null)" != "$me" ] && return 0
        sleep 0.05
    done
    e2e_die "namespace holder $1 ($NS_PID) never left the test's network namespace"
}

# ------------------------------------------------ 1: serve --netns, dual-stack
e2e_netns_create ns
ns=$E2E_NETNS
e2e_pick_port 3
p_fwd6=$E2E_PORT          # [::1] -> [IPv6 guest address]:80
p_fwd64=$((E2E_PORT + 1)) # [::1] -> default guest (192.168.127.2):80
p_fwd46=$((E2E_PORT + 2)) # 127.0.0.1 -> [IPv6 guest address]:80
e2e_spawn slipway-ns "$SLIPWAY" serve --netns "/run/netns/$ns" --tap-mac "$ns_mac" \
    --dns-upstream "127.0.0.1:$dns_port" "${egress[@]}" \
    -p "[::1]:$p_fwd6:[$ns_addr6]:80" -p "[::1]:$p_fwd64:80" -p "127.0.0.1:$p_fwd46:[$ns_addr6]:80" \
    --pcap "$E2E_WORK/slipway-ns.pcap" -v
slipway_ns=$E2E_PID
ns_net=/run/netns/$ns
in_ns() { in_net "$ns_net" "$@"; }

check ns_slaac_address eventually 5 has_addr6 "$ns_net" "$ns_addr6"
check ns_default_route6 eventually 5 default_route6 "$ns_net"
ra_received() {
    local n
    n=$(snmp6 "$1" Icmp6InRouterAdvertisements)
    echo "Icmp6InRouterAdvertisements: ${n:-none} (solicitations sent: $(snmp6 "$1" Icmp6OutRouterSolicits))"
    [ "${n:-0}" -ge 1 ]
}
check ns_router_advertisement eventually 5 ra_received "$ns_net"
check ns_ping6_gateway in_ns busybox ping -6 -c 2 -W 3 "$gateway6"
check ns_ping6_alias in_ns busybox ping -6 -c 2 -W 3 "$alias6"
# An address outside the guest network (one of the isolated namespace's own): slipway relays the
# echo through an unprivileged ICMPv6 socket.
check ns_ping6_outside in_ns busybox ping -6 -c 2 -W 3 "$E2E_UPLINK_ECHO6"

lookup6() { # NAME WANT [tcp]
    in_ns python3 "$E2E_DIR/dns_lookup.py" "$gateway6" "$@"
}
check ns_dns_aaaa_host lookup6 host.slipway.internal "$alias6"
check ns_dns_aaaa_gateway lookup6 gateway.slipway.internal "$gateway6"
check ns_dns_aaaa_forwarded lookup6 "$v6_name" "$v6_name_addr"
check ns_dns_aaaa_forwarded_tcp lookup6 "$v6_name" "$v6_name_addr" tcp

check ns_http6_get fetch_sha -n "$ns_net" "http://[$alias6]:$E2E_HTTP_PORT/blob.bin"
http6_put() {
    local want got
    want="$blob_sha $((blob_mib * 1024 * 1024))"
    got=$(in_ns curl -gsS --max-time 30 -T "$www/blob.bin" "http://[$alias6]:$E2E_HTTP_PORT/upload")
    echo "server saw '$got'"
    [ "$got" = "$want" ] || { echo "want '$want'"; return 1; }
}
check ns_http6_put http6_put
refused6() {
    # 2001:db8::200 is outside the allow-list: slipway answers with a RST at once. (Allowed, the
    # connect would hang: the fake uplink's neighbours never answer.)
    local t0=$SECONDS rc=0
    in_ns curl -gsS --max-time 10 "http://[2001:db8::200]:80/" || rc=$?
    echo "curl exit $rc after $((SECONDS - t0)) s"
    [ "$rc" = 7 ] && [ $((SECONDS - t0)) -lt 5 ]
}
check ns_egress6_refused refused6

# The namespace's server on [::]:80 (dual-stack); its access log names each client.
e2e_spawn ns-http nsenter --net="$ns_net" python3 -u -m http.server 80 --bind :: --directory "$www"
eventually 10 bash -c "[ -n \"\$(nsenter --net=$ns_net ss -Hltn 'sport = :80')\" ]" >/dev/null ||
    e2e_log "the namespace's HTTP server does not listen yet"
# URL PEER: a download through a forward; the namespace's server saw the client as PEER.
fwd_download() {
    local url=$1 peer=$2 log=$E2E_WORK/ns-http.log before
    before=$(grep -c '"GET /blob.bin ' "$log" || true)
    fetch_sha "$url" || return 1
    sleep 0.2
    local last
    last=$(grep '"GET /blob.bin ' "$log" | tail -n +$((before + 1)))
    echo "server log: ${last:-nothing}"
    [ -n "$last" ] || { echo "the namespace's server logged no GET"; return 1; }
    ! grep -v "^$peer - - " <<<"$last" || { echo "want client $peer"; return 1; }
}
check ns_fwd6_from_v6_loopback fwd_download "http://[::1]:$p_fwd6/blob.bin" "$alias6"
check ns_fwd6_to_v4_guest fwd_download "http://[::1]:$p_fwd64/blob.bin" "::ffff:192.168.127.254"
check ns_fwd4_to_v6_guest fwd_download "http://127.0.0.1:$p_fwd46/blob.bin" "$alias6"

if kill -0 "$slipway_ns" 2>/dev/null; then e2e_ok ns_slipway_alive; else e2e_not_ok ns_slipway_alive "slipway exited"; fi
e2e_stop_pid "$slipway_ns"

# ------------------------------------------------ 2: serve --netns --ipv6 off
e2e_netns_create off
off=$E2E_NETNS
e2e_spawn slipway-off "$SLIPWAY" serve --netns "/run/netns/$off" --ipv6 off "${egress[@]}" \
    --dns-upstream "127.0.0.1:$dns_port" -v
slipway_off=$E2E_PID
off_net=/run/netns/$off
configured4() {
    ip -n "$off" -o -4 addr show dev tap0 2>&1 | grep 'inet 192.168.127.2/24'
}
check off_configured4 eventually 5 configured4
# The kernel solicits routers when tap0 comes up (the first after up to 1 s); one second after
# the first solicitation, an advertisement would have arrived.
solicited() {
    local n
    n=$(snmp6 "$off_net" Icmp6OutRouterSolicits)
    echo "Icmp6OutRouterSolicits: ${n:-none}"
    [ "${n:-0}" -ge 1 ]
}
no_ipv6() {
    local ra addrs routes
    eventually 5 solicited || return 1
    sleep 1
    ra=$(snmp6 "$off_net" Icmp6InRouterAdvertisements)
    addrs=$(ip -n "$off" -6 addr show dev tap0 scope global)
    routes=$(ip -n "$off" -6 route show default)
    echo "Icmp6InRouterAdvertisements: ${ra:-none}; global addresses: ${addrs:-none}; default: ${routes:-none}"
    [ "$ra" = 0 ] && [ -z "$addrs" ] && [ -z "$routes" ]
}
check off_no_ipv6 no_ipv6
check off_ipv4_still_works in_net "$off_net" busybox ping -c 1 -W 3 192.168.127.1
e2e_stop_pid "$slipway_off"

# ------------------------------------------------ 3: the slirp4netns drop-in, --enable-ipv6, no -c
mkdir -p "$E2E_WORK/bin"
ln -sfn "$SLIPWAY" "$E2E_WORK/bin/slirp4netns"
netns_holder ns-s4
s4_ns=/proc/$NS_PID/ns/net
s4_holder=$NS_PID
s4_fifo=$E2E_WORK/s4.ready
mkfifo "$s4_fifo"
# -r 3: fd 3 is the fifo's write end; the reader below gets "1" once the network runs.
e2e_spawn slirp4netns env SLIPWAY_EGRESS_ALLOW=127.0.0.0/8,::1/128 \
    SLIPWAY_DNS_UPSTREAM="127.0.0.1:$dns_port" bash -c 'exec 3>"$1"; shift; exec "$@"' bash \
    "$s4_fifo" "$E2E_WORK/bin/slirp4netns" --enable-ipv6 -r 3 "$s4_holder" tap0
s4_pid=$E2E_PID
s4_ready=$(timeout 10 cat "$s4_fifo") || true
check s4_ready test "$s4_ready" = 1
# What rootlesskit does once slirp4netns runs: bring the TAP up. The kernel solicits a router and
# configures tap0 from the advertisement.
in_net "$s4_ns" ip link set tap0 up
s4_mac=$(in_net "$s4_ns" ip -br link show dev tap0 | awk '{ print $3 }')
s4_addr6=$(eui64 fd00:: "$s4_mac")
s4_slaac() {
    has_addr6 "$s4_ns" "$s4_addr6" || return 1
    # dynamic: a lifetime from the advertisement's prefix, i.e. the kernel's own SLAAC.
    in_net "$s4_ns" ip -6 addr show dev tap0 | grep -q "inet6 $s4_addr6/64 scope global dynamic" ||
        { echo "$s4_addr6 is not a SLAAC (dynamic) address"; return 1; }
}
check s4_slaac_address eventually 10 s4_slaac
s4_route() {
    local out
    out=$(in_net "$s4_ns" ip -6 route show default) || return 1
    echo "default: ${out:-none}"
    grep -q "^default via fe80::[0-9a-f:]* dev tap0 proto ra " <<<"$out"
}
check s4_default_route_from_ra eventually 5 s4_route
check s4_ping6_gateway in_net "$s4_ns" busybox ping -6 -c 2 -W 3 fd00::2
check s4_http6_get fetch_sha -n "$s4_ns" "http://[fd00::2]:$E2E_HTTP_PORT/blob.bin"
check s4_dns_aaaa_host in_net "$s4_ns" python3 "$E2E_DIR/dns_lookup.py" fd00::3 host.slipway.internal fd00::2
check s4_dns_aaaa_forwarded in_net "$s4_ns" python3 "$E2E_DIR/dns_lookup.py" fd00::3 "$v6_name" "$v6_name_addr"
if kill -0 "$s4_pid" 2>/dev/null; then e2e_ok s4_alive; else e2e_not_ok s4_alive "slirp4netns (slipway) exited"; fi
e2e_stop_pid "$s4_pid"
e2e_stop_pid "$s4_holder"

# ------------------------------------------------ 4: a QEMU guest
e2e_pick_port
p_guest=$E2E_PORT
script=$E2E_WORK/guest-script.sh
cat >"$script" <<EOF2
HTTP_PORT=$E2E_HTTP_PORT
BLOB_SHA=$blob_sha
ADDR6=$guest_addr6
GATEWAY6=$gateway6
ALIAS6=$alias6
GATEWAY_LL=$gateway_ll
V6_NAME=$v6_name
V6_NAME_ADDR=$v6_name_addr
EOF2
cat >>"$script" <<'EOF2'
slaac() {
    i=0
    while [ "$i" -lt 150 ]; do
        out=$(ip -6 addr show dev eth0)
        if echo "$out" | grep -q "inet6 $ADDR6/64 scope global" &&
            ! echo "$out" | grep -q "inet6 $ADDR6/64 .*tentative"; then
            echo "$out"
            e2e_result slaac_uptime_ms "$(e2e_uptime_ms)"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "$out"
    echo "no $ADDR6/64 (past DAD) on eth0 after 15 s"
    return 1
}
have_addr=0
e2e_check slaac_address slaac && have_addr=1
e2e_result ra_received "$(awk '$1 == "Icmp6InRouterAdvertisements" { print $2 }' /proc/net/snmp6)"
route6() {
    ip -6 route show
    ip -6 route show | grep -q "^default via $GATEWAY_LL dev eth0"
}
e2e_check default_route6 route6
e2e_check ping6_gateway ping -6 -c 2 -W 3 "$GATEWAY6"
e2e_check ping6_alias ping -6 -c 1 -W 3 "$ALIAS6"
lookup6() { # NAME WANT
    nslookup -type=aaaa "$1" "$GATEWAY6" >/tmp/ns.out 2>&1 || { cat /tmp/ns.out; return 1; }
    cat /tmp/ns.out
    # The answer, not the "Server:"/"Address:" lines naming the server.
    sed -n '/^Name:/,$p' /tmp/ns.out | grep -q "^Address: *$2\$"
}
e2e_check dns6_local lookup6 host.slipway.internal "$ALIAS6"
e2e_check dns6_forwarded lookup6 "$V6_NAME" "$V6_NAME_ADDR"
mkdir -p /srv
http6_get() {
    wget -q -O /srv/blob.bin "http://[$ALIAS6]:$HTTP_PORT/blob.bin" || return 1
    got=$(sha256sum /srv/blob.bin | cut -d' ' -f1)
    [ "$got" = "$BLOB_SHA" ] || { echo "sha256 $got, want $BLOB_SHA"; return 1; }
}
e2e_check http6_get http6_get
http6_put() {
    e2e_random_text_file /tmp/up 2048
    want="$(sha256sum /tmp/up | cut -d' ' -f1) $(wc -c </tmp/up)"
    got=$(e2e_http_put /tmp/up "[$ALIAS6]" "$HTTP_PORT")
    rm -f /tmp/up
    [ "$got" = "$want" ] || { echo "server saw '$got', want '$want'"; return 1; }
}
e2e_check http6_put http6_put
# The forward's target: busybox httpd on [::]:80; -vv logs each client as [ADDR]:PORT.
echo ready >/srv/ready
httpd -f -vv -p "[::]:80" -h /srv 2>/tmp/httpd.log &
hpid=$!
httpd_up() {
    i=0
    while [ "$i" -lt 30 ]; do
        kill -0 "$hpid" 2>/dev/null || { echo "httpd exited"; cat /tmp/httpd.log; return 1; }
        netstat -ltn 2>/dev/null | grep -q ':80 ' && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "nothing listens on port 80 after 3 s"
    return 1
}
# The host creates /done on its server once its forward checks are over; without an address it
# cannot reach the guest, so there is nothing to wait for.
wait_done() {
    i=0
    while [ "$i" -lt 120 ]; do
        wget -q -O /tmp/done "http://[$ALIAS6]:$HTTP_PORT/done" 2>/dev/null && return 0
        sleep 0.5
        i=$((i + 1))
    done
    echo "no /done from the host within 60 s"
    return 1
}
if e2e_check httpd_start httpd_up && [ "$have_addr" = 1 ]; then
    e2e_check host_done wait_done
else
    e2e_fail host_done "not waiting for the host: no address or no httpd"
fi
kill "$hpid" 2>/dev/null
sleep 0.2
sed 's/^/E2E-HTTPD /' /tmp/httpd.log
EOF2

qemu_sock=$E2E_WORK/qemu.sock
e2e_spawn slipway-qemu "$SLIPWAY" serve --qemu "$qemu_sock" --dns-upstream "127.0.0.1:$dns_port" \
    "${egress[@]}" -p "[::1]:$p_guest:[$guest_addr6]:80" -v
slipway_qemu=$E2E_PID
e2e_wait_path "$qemu_sock" 10

# The host side, in the background while the guest runs: "ok NAME" / "not ok NAME: REASON" lines
# in $results, counted after the guest is down. The guest is always released (/done).
record() { # NAME CMD [ARG...]
    local name=$1 rc=0
    shift
    "$@" >"$E2E_WORK/$name.out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        echo "ok $name" >>"$results"
    else
        echo "not ok $name: exit $rc: $(tail -n 5 "$E2E_WORK/$name.out" | tr '\n' ' ')" >>"$results"
    fi
    return "$rc"
}
guest_ready() { # the guest's /ready through the forward from ::1, within 60 s
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 60 ]; do
        if [ "$(curl -gsf --max-time 3 "http://[::1]:$p_guest/ready" 2>/dev/null)" = ready ]; then
            echo "ready after $((SECONDS - t0)) s"
            return 0
        fi
        sleep 0.3
    done
    echo "http://[::1]:$p_guest/ready did not answer 'ready' within 60 s"
    return 1
}
guest_download() { # the blob from the guest through the forward; remembers the client port
    local out=$E2E_WORK/dl-guest.bin w code lport got
    w=$(curl -gsS --max-time 60 -o "$out" -w '%{http_code} %{local_port}' "http://[::1]:$p_guest/blob.bin") ||
        { echo "curl failed: $w"; return 1; }
    read -r code lport <<<"$w"
    got=$(sha256sum "$out" | cut -d' ' -f1)
    rm -f "$out"
    echo "HTTP $code from [::1]:$lport, sha256 $got"
    echo "$lport" >"$E2E_WORK/guest-client.port"
    [ "$code" = 200 ] && [ "$got" = "$blob_sha" ]
}
host_checks() {
    trap 'touch "$www/done"' EXIT
    record guest_fwd6_reachable guest_ready || return 0
    record guest_fwd6_download guest_download || true
}
: >"$results"
e2e_spawn host-checks host_checks
checks_pid=$E2E_PID

log=$E2E_WORK/guest.log
rc=0
e2e_boot_guest "stream,id=n0,server=off,addr.type=unix,addr.path=$qemu_sock" "$script" "$log" 150 || rc=$?
if [ "$rc" = 0 ]; then e2e_ok guest_boot; else e2e_not_ok guest_boot "rc $rc, see $log"; fi
e2e_expect_guest_pass "$log" slaac_address default_route6 ping6_gateway ping6_alias dns6_local \
    dns6_forwarded http6_get http6_put httpd_start host_done
ra=$(e2e_marker_result "$log" ra_received)
if [ "${ra:-0}" -ge 1 ]; then
    e2e_ok guest_router_advertisement
else
    e2e_not_ok guest_router_advertisement "Icmp6InRouterAdvertisements in the guest: ${ra:-none}"
fi
for _ in $(seq 50); do kill -0 "$checks_pid" 2>/dev/null || break; sleep 0.1; done
e2e_stop_pid "$checks_pid"
while IFS= read -r line; do
    case $line in
    "ok "*) e2e_ok "${line#ok }" ;;
    "not ok "*)
        rest=${line#not ok }
        e2e_not_ok "${rest%%: *}" "${rest#*: }"
        ;;
    esac
done <"$results"
for name in guest_fwd6_reachable guest_fwd6_download; do
    grep -q "^\(not \)\?ok $name\b" "$results" ||
        e2e_not_ok "$name" "the host's check did not finish before the guest was down"
done
guest_peer() {
    local lport
    lport=$(cat "$E2E_WORK/guest-client.port" 2>/dev/null) || { echo "no download was made"; return 1; }
    grep -a '^E2E-HTTPD ' "$log" || true
    grep -qaF "E2E-HTTPD [$alias6]:$lport: url:/blob.bin" "$log" ||
        { echo "no 'E2E-HTTPD [$alias6]:$lport: url:/blob.bin' in $log"; return 1; }
}
check guest_fwd6_peer_is_alias guest_peer
if kill -0 "$slipway_qemu" 2>/dev/null; then e2e_ok guest_slipway_alive; else e2e_not_ok guest_slipway_alive "slipway exited"; fi
e2e_stop_pid "$slipway_qemu"

echo "guest: QEMU start -> lease ${E2E_BOOT_LEASE_S:-none} s, SLAAC at guest uptime" \
    "$(e2e_marker_result "$log" slaac_uptime_ms) ms, ran $E2E_BOOT_TOTAL_S s (accel $(e2e_qemu_accel))"
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- guest log ($log) ---"
    tail -n 50 "$log"
    for l in slipway-ns slipway-off slirp4netns slipway-qemu; do
        echo "--- $l log ---"
        tail -n 15 "$E2E_WORK/$l.log"
    done
fi
e2e_summary
