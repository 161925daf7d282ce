#!/usr/bin/env bash
# slipway as a CNI plugin (`slipway-cni`, a symlink to slipway, and `slipway cni`), driven as a
# container runtime drives a plugin: a clean environment with only the CNI_* variables, the
# network configuration on stdin, the result or error object read from stdout. No QEMU: the
# "containers" are namespaces made with `ip netns add` (unique names, deleted at exit).
#
# Runs inside a loopback-only namespace (lib.sh): the supervisors and their `slipway serve`, the
# HTTP server and dnsmasq all live there; every configuration has "egressAllow": ["127.0.0.0/8"],
# so even a wrong test could not dial out. The plugin binary is a copy of target/release/slipway
# in the test's temp dir (CNI_PATH), so that a rebuild during the run does not pull the file from
# under running supervisors; the state directory ("stateDir") is in that temp dir too. Every
# supervisor and serve the test sees is recorded and, if still running at exit, stopped by PID.
#
# Checks: VERSION (exact; as slipway-cni, `slipway cni` and the type name `slipway` with no
# arguments, which is how a runtime finds it in CNI_PATH); ADD (1.0.0): the result's shape
# (interface name, MAC as inside the namespace, sandbox, address, gateway, route, DNS, search
# domains as the host's), address, default route and MTU inside the namespace, the state directory,
# the supervisor in its own session running serve on CNI_NETNS/CNI_IFNAME; a random multi-MiB
# download from the host's 127.0.0.1 through 192.168.127.254 (sha256); a name answered by the
# "dnsUpstreams" dnsmasq, asked at 192.168.127.1; a portMappings port serving a server in the
# namespace on 127.0.0.1, the client seen as 192.168.127.254; CHECK; a second ADD refused with code
# 100 (the first untouched); serve killed with SIGKILL restarted by the supervisor (same interface,
# address and MAC, CHECK and a download work again); DEL (supervisor and serve gone, not even a
# zombie, state directory and interface gone), DEL again, CHECK then an error; the namespace
# deleted under a running attachment: the supervisor exits by itself, DEL without CNI_NETNS
# succeeds; ADD and DEL with cniVersion 0.4.0 by the type name (ips[].version "4"); error objects
# with exit 1 (codes 1, 3, 4, 6, 7); nothing left behind (processes, state).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-8}
mtu=65520
net=e2e-cni
gw=192.168.127.1
alias_addr=192.168.127.254
guest_addr=192.168.127.2
container_port=8080
dns_name=web.e2e.test
dns_addr=198.51.100.7
check() { e2e_check_cmd "$@"; }

# Short paths: the API socket lives in the state directory (unix socket paths are limited).
tmp=$(mktemp -d /tmp/e2e-cni.XXXXXX)
e2e_on_exit rm -rf "$tmp"
bindir=$tmp/bin
state=$tmp/state
mkdir -p "$bindir"
cp "$SLIPWAY" "$bindir/slipway"
ln -s slipway "$bindir/slipway-cni"

mkdir -p "$E2E_WORK/www" "$E2E_WORK/pub"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
echo "small file" >"$E2E_WORK/www/small.txt"
echo "hello from the container" >"$E2E_WORK/pub/hello.txt"
e2e_http_server_start "$E2E_WORK/www"
http_port=$E2E_HTTP_PORT
dns_port=$(e2e_free_port)
e2e_dnsmasq_start "$dns_port" "$dns_name=$dns_addr"
e2e_pick_port
host_port=$E2E_PORT

# ---------------------------------------------------------------- processes

# Every supervisor and serve seen, for the cleanup and the last check.
supervisors=()
serves=()
# 0 if PID runs (exists, is not a zombie) and is one of ours (its command line names $tmp).
ours_running() {
    local st
    st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$tmp"
}
# Waits up to SECONDS for PID to stop running; 0 if it did.
wait_stopped() { # PID SECONDS
    local deadline=$(($(date +%s%N) + $2 * 1000000000))
    while ours_running "$1"; do
        [ "$(date +%s%N)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
# SIGTERM, up to 6 s (DEL's own SIGKILL comes after 5 s), then SIGKILL; only while still ours.
stop_ours() {
    local pid
    ours_running "$1" || return 0
    kill -TERM "$1" 2>/dev/null || true
    wait_stopped "$1" 6 && return 0
    ours_running "$1" && kill -KILL "$1" 2>/dev/null || true
    wait_stopped "$1" 2 || true
}
stop_all_ours() {
    local f p
    for f in "$state"/*/supervisor.pid; do
        [ -e "$f" ] && supervisors+=("$(cat "$f")")
    done
    for p in "${supervisors[@]}" "${serves[@]}"; do
        stop_ours "$p"
    done
}
# Records the supervisor of attachment DIR (and its serve) after an ADD; sets SUP and SERVE.
record() { # DIR
    SUP=$(cat "$1/supervisor.pid" 2>/dev/null || true)
    SERVE=""
    [ -n "$SUP" ] || return 0
    supervisors+=("$SUP")
    SERVE=$(pgrep -P "$SUP" | head -n 1 || true)
    [ -z "$SERVE" ] || serves+=("$SERVE")
}

# ---------------------------------------------------------------- namespaces

# Registered before the supervisors' cleanup, so they are stopped first and the namespaces
# deleted after.
e2e_netns_create c1
ns1=$E2E_NETNS
ns1_path=/run/netns/$ns1
# The namespace the test deletes itself (check 9): a quiet cleanup in case it never gets there.
ns2=e2e-$$-gone
ns2_path=/run/netns/$ns2
netns_del_quiet() { ip netns del "$1" 2>/dev/null || true; }
ip netns add "$ns2"
e2e_on_exit netns_del_quiet "$ns2"
ip -n "$ns2" link set lo up
e2e_on_exit stop_all_ours

in_ns() { ip netns exec "$ns1" "$@"; }

# ---------------------------------------------------------------- the plugin

# conf [KEY=JSON | KEY=-]...: the network configuration, with keys replaced (or removed with -).
conf() {
    python3 - "$net" "$mtu" "$dns_port" "$state" "$host_port" "$container_port" "$@" <<'PY'
import json, sys
net, mtu, dns_port, state, host_port, container_port, *changes = sys.argv[1:]
c = {
    "cniVersion": "1.0.0", "name": net, "type": "slipway", "mtu": int(mtu),
    "subnet": "192.168.127.0/24", "egressAllow": ["127.0.0.0/8"], "disableHostLoopback": False,
    "dnsUpstreams": [f"127.0.0.1:{dns_port}"], "stateDir": state,
    "runtimeConfig": {"portMappings": [{"hostPort": int(host_port),
        "containerPort": int(container_port), "protocol": "tcp", "hostIP": "127.0.0.1"}]},
}
for ch in changes:
    k, v = ch.split("=", 1)
    if v == "-":
        c.pop(k, None)
    else:
        c[k] = json.loads(v)
print(json.dumps(c))
PY
}

# cni NAME COMMAND CONTAINERID NETNS IFNAME STDIN [PROGRAM...]: one plugin run, as a runtime does
# it: a clean environment with PATH, CNI_PATH, CNI_ARGS and the CNI_* variables given non-empty,
# STDIN on stdin (at most 30 s). stdout to NAME.json, stderr to NAME.err; sets RC and OUT.
cni() {
    local name=$1 cmd=$2 cid=$3 ns=$4 ifn=$5 input=$6
    shift 6
    local prog=("$@")
    [ "${#prog[@]}" -gt 0 ] || prog=("$bindir/slipway-cni")
    local envs=(PATH="$PATH" CNI_PATH="$bindir" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=e2e")
    [ -z "$cmd" ] || envs+=(CNI_COMMAND="$cmd")
    [ -z "$cid" ] || envs+=(CNI_CONTAINERID="$cid")
    [ -z "$ns" ] || envs+=(CNI_NETNS="$ns")
    [ -z "$ifn" ] || envs+=(CNI_IFNAME="$ifn")
    RC=0
    timeout 30 env -i "${envs[@]}" "${prog[@]}" <<<"$input" \
        >"$E2E_WORK/$name.json" 2>"$E2E_WORK/$name.err" || RC=$?
    OUT=$(cat "$E2E_WORK/$name.json")
    echo "$name: $cmd exit $RC: $(head -c 300 "$E2E_WORK/$name.json")" >>"$E2E_WORK/plugin-runs.txt"
}
# Exit 0 and nothing on stdout (DEL, CHECK).
ok_empty() { # NAME
    [ "$RC" = 0 ] && [ -z "$OUT" ] || { echo "exit $RC, stdout '$OUT', stderr $(head -c 300 "$E2E_WORK/$1.err")"; return 1; }
}
# Exit 1 and stdout one error object (cniVersion, code, msg, details) with code WANT.
is_error() { # NAME WANT_CODE [WANT_VERSION]
    [ "$RC" = 1 ] || { echo "exit $RC, want 1; stdout '$OUT'"; return 1; }
    python3 - "$E2E_WORK/$1.json" "$2" "${3:-}" <<'PY'
import json, sys
path, want, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(path).read()
e = json.loads(text)
assert isinstance(e, dict), f"not an object: {text!r}"
assert set(e) == {"cniVersion", "code", "msg", "details"}, f"keys {sorted(e)}"
assert isinstance(e["cniVersion"], str) and e["cniVersion"], e
assert not version or e["cniVersion"] == version, f"cniVersion {e['cniVersion']!r}, want {version}"
assert isinstance(e["code"], int) and e["code"] == want, f"code {e['code']!r}, want {want}"
assert isinstance(e["msg"], str) and e["msg"], "empty msg"
assert isinstance(e["details"], str), "details not a string"
print(f"code {e['code']}: {e['msg']} ({e['details']})")
PY
}
same_json() { # FILE JSON
    python3 -c 'import json, sys; a = json.load(open(sys.argv[1])); b = json.loads(sys.argv[2]); sys.exit(a != b and print(f"got {a}, want {b}") is None)' "$@"
}
link_mac() { # NETNS IFNAME
    ip -n "$1" -o link show "$2" 2>/dev/null | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'
}
# Waits up to 5 s for IFNAME in NETNS to have the guest address.
wait_configured() { # NETNS IFNAME
    local i
    for i in $(seq 50); do
        ip -n "$1" -o -4 addr show dev "$2" 2>/dev/null | grep -q "inet $guest_addr/24" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- 1. VERSION

cni version VERSION "" "" "" '{"cniVersion":"1.0.0"}'
version_exact() {
    [ "$RC" = 0 ] || { echo "exit $RC"; return 1; }
    same_json "$E2E_WORK/$1.json" '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
}
check version_exact version_exact version
cni version-subcommand VERSION "" "" "" '{"cniVersion":"1.0.0"}' "$bindir/slipway" cni
check version_via_slipway_cni version_exact version-subcommand
# A runtime runs the plugin named by the network's "type": $CNI_PATH/slipway, no arguments.
cni version-type-name VERSION "" "" "" '{"cniVersion":"1.0.0"}' "$bindir/slipway"
check version_via_type_name version_exact version-type-name

# ---------------------------------------------------------------- 2. ADD

conf_full=$(conf)
att1=$state/$net-cont1-eth0
cni add ADD cont1 "$ns1_path" eth0 "$conf_full"
record "$att1"
sup1=$SUP
serve1=$SERVE
check add_exit_0 bash -c "[ $RC = 0 ] || { cat '$E2E_WORK/add.json' '$E2E_WORK/add.err'; exit 1; }"
mac1=$(link_mac "$ns1" eth0)
result_shape() { # FILE VERSION NETNS IFNAME MAC
    python3 - "$@" <<'PY'
import json, sys
path, version, netns, ifname, mac = sys.argv[1:]
r = json.load(open(path))
want_search = []
for line in open("/etc/resolv.conf"):
    w = line.split()
    if w and w[0] in ("search", "domain"):
        want_search = [d.rstrip(".").lower() for d in w[1:] if d.rstrip(".")]
keys = {"cniVersion", "interfaces", "ips", "routes", "dns"}
assert set(r) == keys, f"keys {sorted(r)}, want {sorted(keys)}"
assert r["cniVersion"] == version, r["cniVersion"]
assert r["interfaces"] == [{"name": ifname, "mac": mac, "sandbox": netns}], \
    f"interfaces {r['interfaces']}, want name {ifname} mac {mac} (inside the namespace) sandbox {netns}"
import ipaddress
ip = {"address": "192.168.127.2/24", "gateway": "192.168.127.1", "interface": 0}
# The interface's IPv6 address: its SLAAC (EUI-64) address in fd00:5119::/64.
m = bytes.fromhex(mac.replace(":", ""))
iid = bytes([m[0] ^ 2]) + m[1:3] + b"\xff\xfe" + m[3:]
ip6_addr = ipaddress.IPv6Address(ipaddress.IPv6Address("fd00:5119::").packed[:8] + iid)
gw6 = "fe80::5894:efff:fee4:cdd"
ip6 = {"address": f"{ip6_addr}/64", "gateway": gw6, "interface": 0}
if version == "0.4.0":
    ip["version"] = "4"
    ip6["version"] = "6"
assert r["ips"] == [ip, ip6], f"ips {r['ips']}, want [{ip}, {ip6}]"
assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "192.168.127.1"}, {"dst": "::/0", "gw": gw6}], \
    f"routes {r['routes']}"
dns = r["dns"]
assert dns.get("nameservers") == ["192.168.127.1"], f"dns {dns}"
assert set(dns) <= {"nameservers", "search"}, f"dns keys {sorted(dns)}"
if want_search:
    assert dns.get("search") and all(d in want_search for d in dns["search"]), \
        f"dns search {dns.get('search')}, host has {want_search}"
else:
    assert "search" not in dns, f"dns search {dns['search']} but the host's resolv.conf has none"
print("ok", json.dumps(r))
PY
}
check add_result_shape result_shape "$E2E_WORK/add.json" 1.0.0 "$ns1_path" eth0 "$mac1"
ns_configured() { # NETNS IFNAME
    local a a6 r r6 l
    a=$(ip -n "$1" -o -4 addr show dev "$2" 2>&1)
    a6=$(ip -n "$1" -o -6 addr show dev "$2" scope global 2>&1)
    r=$(ip -n "$1" route show default 2>&1)
    r6=$(ip -n "$1" -6 route show default 2>&1)
    l=$(ip -n "$1" -o link show "$2" 2>&1)
    echo "addr: $a; addr6: $a6; route: $r; route6: $r6; link: $l"
    grep -q "inet $guest_addr/24" <<<"$a" && grep -q "^default via $gw dev $2" <<<"$r" &&
        grep -q "inet6 fd00:5119::[0-9a-f:]*/64" <<<"$a6" &&
        grep -q "^default via fe80::5894:efff:fee4:cdd dev $2" <<<"$r6" &&
        grep -q "mtu $mtu " <<<"$l" && grep -q '[<,]UP[,>]' <<<"$l"
}
check add_interface_configured ns_configured "$ns1" eth0
state_dir_ok() {
    local f bad=0
    for f in supervisor.pid api.sock log result.json; do
        [ -e "$att1/$f" ] || { echo "no $att1/$f"; bad=1; }
    done
    [ -S "$att1/api.sock" ] || { echo "api.sock is not a socket"; bad=1; }
    same_json "$att1/result.json" "$OUT_ADD" || bad=1
    return "$bad"
}
OUT_ADD=$(cat "$E2E_WORK/add.json")
check add_state_dir state_dir_ok
supervisor_shape() {
    local sid args
    ours_running "$sup1" || { echo "supervisor ${sup1:-?} not running"; return 1; }
    sid=$(sed -n 's/^[0-9]* (.*) [A-Za-z] [0-9]* [0-9]* \([0-9]*\) .*/\1/p' "/proc/$sup1/stat")
    [ "$sid" = "$sup1" ] || { echo "supervisor $sup1 in session $sid, not its own"; return 1; }
    args=$(tr '\0' ' ' <"/proc/$sup1/cmdline")
    [[ $args == *" __cni-supervise $att1 $ns1_path -- serve "* ]] || { echo "supervisor: $args"; return 1; }
    [ -n "$serve1" ] || { echo "no serve under supervisor $sup1"; return 1; }
    args=$(tr '\0' ' ' <"/proc/$serve1/cmdline")
    echo "serve $serve1: $args"
    [[ $args == *" serve --netns $ns1_path --tap-name eth0 "* ]] && [[ $args == *"--egress-allow 127.0.0.0/8"* ]]
}
check add_supervisor_runs_serve supervisor_shape

# ---------------------------------------------------------------- 3-5. traffic

download() { # FILE SHA
    local got
    got=$(in_ns curl -sS --max-time 30 "http://$alias_addr:$http_port/$1" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$2" ] || { echo "sha256 $got, want $2"; return 1; }
}
check download_via_alias download blob.bin "$blob_sha"

lookup() { # NAME WANT
    in_ns python3 "$E2E_DIR/dns_lookup.py" 192.168.127.1 "$@"
}
dns_forwarded() {
    lookup "$dns_name" "$dns_addr" || return 1
    grep -q "query\[A\] $dns_name from 127.0.0.1" "$E2E_WORK/dnsmasq.$dns_port.log" ||
        { echo "dnsmasq did not see the query"; return 1; }
}
check dns_via_upstream dns_forwarded

e2e_spawn ns-http ip netns exec "$ns1" python3 -m http.server "$container_port" --bind 0.0.0.0 \
    --directory "$E2E_WORK/pub"
ns_http_pid=$E2E_PID
for _ in $(seq 100); do
    [ -n "$(in_ns ss -Hltn "sport = :$container_port")" ] && break
    sleep 0.05
done
published() {
    local got="" i
    for i in $(seq 20); do
        got=$(curl -sS --max-time 3 "http://127.0.0.1:$host_port/hello.txt" 2>/dev/null || true)
        [ -n "$got" ] && break
        sleep 0.1
    done
    echo "got '$got' after $i tries"
    [ "$got" = "hello from the container" ]
}
check port_mapping_serves published
client_seen() {
    grep '"GET /hello.txt' "$E2E_WORK/ns-http.log" | tail -n 1
    grep '"GET /hello.txt' "$E2E_WORK/ns-http.log" | tail -n 1 | grep -q "^$alias_addr "
}
check port_mapping_client_is_alias client_seen

# ---------------------------------------------------------------- 6. CHECK, ADD twice

cni check CHECK cont1 "$ns1_path" eth0 "$conf_full"
check check_running ok_empty check
cni add-twice ADD cont1 "$ns1_path" eth0 "$conf_full"
check add_twice_code_100 is_error add-twice 100 1.0.0
first_untouched() {
    ours_running "$sup1" && [ "$(cat "$att1/supervisor.pid")" = "$sup1" ] &&
        [ "$(pgrep -P "$sup1")" = "$serve1" ] && [ "$(link_mac "$ns1" eth0)" = "$mac1" ] ||
        { echo "supervisor $sup1 / serve $serve1 / mac $mac1 changed"; return 1; }
}
check add_twice_first_untouched first_untouched

# ---------------------------------------------------------------- 7. supervision

[ -z "$serve1" ] || kill -KILL "$serve1"
t0=$(date +%s%N)
serve_restarted() {
    local c=""
    for _ in $(seq 100); do
        c=$(pgrep -P "$sup1" | head -n 1 || true)
        [ -n "$c" ] && [ "$c" != "$serve1" ] && ours_running "$c" && break
        c=""
        sleep 0.05
    done
    [ -n "$c" ] || { echo "no new serve under supervisor $sup1 after 5 s"; return 1; }
    serves+=("$c")
    echo "new serve $c after $((($(date +%s%N) - t0) / 1000000)) ms"
}
check serve_restarted serve_restarted
interface_back() {
    wait_configured "$ns1" eth0 || { echo "eth0 not configured again"; return 1; }
    ns_configured "$ns1" eth0 || return 1
    [ "$(link_mac "$ns1" eth0)" = "$mac1" ] || { echo "mac $(link_mac "$ns1" eth0), was $mac1"; return 1; }
}
check restart_interface_back interface_back
check_again() {
    local i
    for i in $(seq 30); do
        cni check-restart CHECK cont1 "$ns1_path" eth0 "$conf_full"
        [ "$RC" = 0 ] && break
        sleep 0.1
    done
    echo "try $i"
    ok_empty check-restart
}
check restart_check_passes check_again
check restart_download download small.txt "$(sha256sum "$E2E_WORK/www/small.txt" | cut -d' ' -f1)"
check restart_port_mapping published

# ---------------------------------------------------------------- 8. DEL

serve_now=$(pgrep -P "$sup1" | head -n 1 || true)
t0=$(date +%s%N)
cni del DEL cont1 "$ns1_path" eth0 "$conf_full"
del_ms=$((($(date +%s%N) - t0) / 1000000))
check del_exit_0_empty ok_empty del
del_stopped() {
    echo "DEL took $del_ms ms"
    local st
    st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$sup1/stat" 2>/dev/null || true)
    ! ours_running "$sup1" || { echo "supervisor $sup1 still running (state $st)"; return 1; }
    echo "supervisor $sup1: ${st:-gone}"
    [ -z "$serve_now" ] || ! ours_running "$serve_now" || { echo "serve $serve_now still running"; return 1; }
}
check del_supervisor_and_serve_stopped del_stopped
check del_state_dir_removed bash -c "! [ -e '$att1' ]"
check del_interface_gone bash -c "! ip -n '$ns1' link show eth0 >/dev/null 2>&1"
check del_unpublished bash -c "[ -z \"\$(ss -Hltn 'sport = :$host_port')\" ]"
cni del-again DEL cont1 "$ns1_path" eth0 "$conf_full"
check del_twice_ok ok_empty del-again
cni check-after-del CHECK cont1 "$ns1_path" eth0 "$conf_full"
check_after_del() {
    [ "$RC" = 1 ] || { echo "exit $RC, want 1"; return 1; }
    local code
    code=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["code"])' "$E2E_WORK/check-after-del.json") ||
        { echo "stdout '$OUT'"; return 1; }
    is_error check-after-del "$code" 1.0.0
}
check check_after_del_error check_after_del
e2e_stop_pid "$ns_http_pid"

# ---------------------------------------------------------------- 9. the namespace goes away

conf_plain=$(conf runtimeConfig=-)
att2=$state/$net-cont2-net1
cni add-gone ADD cont2 "$ns2_path" net1 "$conf_plain"
record "$att2"
sup2=$SUP
serve2=$SERVE
gone_attached() {
    [ "$RC" = 0 ] || { echo "ADD exit $RC: $OUT"; return 1; }
    result_shape "$E2E_WORK/add-gone.json" 1.0.0 "$ns2_path" net1 "$(link_mac "$ns2" net1)" &&
        ours_running "$sup2" && ours_running "$serve2"
}
check netns_gone_add gone_attached
ip netns del "$ns2"
t0=$(date +%s%N)
supervisor_exits() {
    wait_stopped "$sup2" 5 || { echo "supervisor $sup2 still running 5 s after the namespace went"; return 1; }
    echo "supervisor $sup2 stopped after $((($(date +%s%N) - t0) / 1000000)) ms"
    ! ours_running "${serve2:-0}" || { echo "serve $serve2 still running"; return 1; }
}
check netns_gone_supervisor_exits supervisor_exits
# A runtime may no longer have the namespace: DEL without CNI_NETNS.
cni del-gone DEL cont2 "" net1 "$conf_plain"
check netns_gone_del_ok ok_empty del-gone
check netns_gone_state_removed bash -c "! [ -e '$att2' ]"

# ---------------------------------------------------------------- 10. cniVersion 0.4.0

conf_04=$(conf cniVersion='"0.4.0"' runtimeConfig=-)
att3=$state/$net-cont3-eth1
# By the type name this time, as a runtime finds the plugin in CNI_PATH.
cni add-040 ADD cont3 "$ns1_path" eth1 "$conf_04" "$bindir/slipway"
record "$att3"
sup3=$SUP
add_040() {
    [ "$RC" = 0 ] || { echo "ADD exit $RC: $OUT"; return 1; }
    result_shape "$E2E_WORK/add-040.json" 0.4.0 "$ns1_path" eth1 "$(link_mac "$ns1" eth1)"
}
check add_0_4_0_ips_version_4 add_040
cni del-040 DEL cont3 "$ns1_path" eth1 "$conf_04" "$bindir/slipway"
del_040() {
    ok_empty del-040 || return 1
    ! ours_running "${sup3:-0}" && ! [ -e "$att3" ] || { echo "supervisor $sup3 or $att3 left"; return 1; }
}
check del_0_4_0 del_040

# ---------------------------------------------------------------- 11. error objects

errors_before=$(ls -A "$state" 2>/dev/null || true)
err() { # NAME WANT_CODE WANT_VERSION COMMAND CONTAINERID NETNS IFNAME STDIN
    local name=$1 want=$2 version=$3
    shift 3
    cni "$name" "$@"
    check "$name" is_error "$name" "$want" "$version"
}
err error_version_0_2_0 1 0.2.0 ADD cerr "$ns1_path" eth0 "$(conf cniVersion='"0.2.0"' runtimeConfig=-)"
err error_netns_missing 3 1.0.0 ADD cerr "/run/netns/e2e-$$-no-such-netns" eth0 "$conf_plain"
err error_no_cni_command 4 1.0.0 "" cerr "$ns1_path" eth0 "$conf_plain"
err error_no_cni_netns_on_add 4 1.0.0 ADD cerr "" eth0 "$conf_plain"
err error_ifname_20_chars 4 1.0.0 ADD cerr "$ns1_path" abcdefghijklmnopqrst "$conf_plain"
err error_stdin_not_json 6 1.0.0 ADD cerr "$ns1_path" eth0 "not json"
err error_type_bridge 7 1.0.0 ADD cerr "$ns1_path" eth0 "$(conf type='"bridge"' runtimeConfig=-)"
err error_name_missing 7 1.0.0 ADD cerr "$ns1_path" eth0 "$(conf name=- runtimeConfig=-)"
err error_mtu_100 7 1.0.0 ADD cerr "$ns1_path" eth0 "$(conf mtu=100 runtimeConfig=-)"
errors_started_nothing() {
    local now
    now=$(ls -A "$state" 2>/dev/null || true)
    [ "$now" = "$errors_before" ] || { echo "state dir now: $now"; return 1; }
    ! ip -n "$ns1" link show eth0 >/dev/null 2>&1 || { echo "eth0 appeared in $ns1"; return 1; }
}
check errors_started_nothing errors_started_nothing

# ---------------------------------------------------------------- 12. nothing left

nothing_running() {
    local p bad=0 left
    echo "supervisors: ${supervisors[*]}; serves: ${serves[*]}"
    [ "${#supervisors[@]}" -ge 3 ] && [ "${#serves[@]}" -ge 4 ] || { echo "too few recorded"; bad=1; }
    for p in "${supervisors[@]}" "${serves[@]}"; do
        ! ours_running "$p" || { echo "$p still running: $(tr '\0' ' ' <"/proc/$p/cmdline")"; bad=1; }
    done
    # Any process whose command line names the temp dir (the plugin binary and state are there).
    for p in /proc/[0-9]*; do
        left=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        [[ $left == *"$tmp"* ]] || continue
        ours_running "${p#/proc/}" || continue
        echo "process ${p#/proc/} left: $left"
        bad=1
    done
    return "$bad"
}
check nothing_left_running nothing_running
check nothing_left_in_state bash -c "[ ! -e '$state' ] || [ -z \"\$(ls -A '$state')\" ]"

if [ "$E2E_FAILED" != 0 ]; then
    echo "--- plugin runs"
    cat "$E2E_WORK/plugin-runs.txt"
    for f in "$E2E_WORK"/*.err "$state"/*/log; do
        [ -s "$f" ] && { echo "--- $f"; tail -n 10 "$f"; }
    done
fi
e2e_summary
