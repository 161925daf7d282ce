#!/usr/bin/env bash
# slipway as a slirp4netns drop-in: the binary started under the name `slirp4netns` (a symlink)
# with slirp4netns's command line against network namespaces held by `unshare --net sleep`, its
# JSON API socket driven by a small unix-socket client, and rootlesskit using it as its
# --slirp4netns-binary (network and port driver).
#
# Runs inside a loopback-only namespace (lib.sh). Each namespace gets slirp4netns's plan
# (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) and reaches the test's HTTP server on
# 127.0.0.1 only through the host loopback mapping 10.0.2.2; host clients reach it only through
# the forwards. Every slipway process runs with SLIPWAY_EGRESS_ALLOW=127.0.0.0/8 (exported below,
# so rootlesskit passes it on too): even a wrong test could not dial out. --enable-ipv6 is
# test-ipv6.sh's.
#
# Checks: -c/--mtu/-r: the ready fd gives "1" and is closed, tap0 has 10.0.2.100/24, MTU 65520,
# the default route via 10.0.2.2, lo up; a download from the host's 127.0.0.1 through 10.0.2.2
# (sha256); the built-in DNS names at 10.0.2.3 (raw UDP query, no upstream); the API:
# add_hostfwd (id 1), a namespace server reached from the host through it, seeing loopback
# clients as 10.0.2.2, list_hostfwd, remove_hostfwd, the port closed afterwards, errors for an
# unknown id, a malformed request and a host port in use; a client holding half a request stalls
# neither a download nor another API request; -e: closing the exit fd's writer stops
# it; refused options (an unusable --outbound-addr, an unknown one), --help, -v;
# --outbound-addr: a server in the test's namespace sees that address as the client; with
# --enable-sandbox --enable-seccomp: the root holds only etc and run, CapEff only
# CAP_NET_BIND_SERVICE, Seccomp 2, traffic still flows; rootlesskit (--net=slirp4netns
# --port-driver=slirp4netns, sandbox and seccomp on): its child downloads through 10.0.2.2 and
# serves on port 8000, reached from the host through -p, and every process it started is gone
# after it exits; as user nobody against nobody's own user and network namespace, given only its
# PID (slipway's helper joins that user namespace): ready, configured, a download, the API; and
# `slipway serve --netns PID` as nobody the same way.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
command -v rootlesskit >/dev/null || e2e_die "rootlesskit missing: run scripts/install-deps.sh"
command -v nsenter >/dev/null || e2e_die "nsenter missing: run scripts/install-deps.sh"
# For every slipway this test starts, directly or through rootlesskit.
export SLIPWAY_EGRESS_ALLOW=127.0.0.0/8
blob_mib=${E2E_BLOB_MIB:-8}
gateway=10.0.2.2
guest_addr=10.0.2.100

mkdir -p "$E2E_WORK/bin" "$E2E_WORK/www"
ln -sfn "$SLIPWAY" "$E2E_WORK/bin/slirp4netns"
S4=$E2E_WORK/bin/slirp4netns
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
e2e_http_server_start "$E2E_WORK/www"
e2e_pick_port; p_fwd=$E2E_PORT
e2e_pick_port; p_rk=$E2E_PORT

check() { e2e_check_cmd "$@"; }

# CMD... until it succeeds, at most SECONDS; the last attempt's output is printed.
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

# NAME: e2e_spawn a namespace holder (`unshare --net sleep 300`); sets NS_PID once it is in its
# own network namespace.
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
in_ns() { # PID CMD...: CMD in the network namespace of PID
    local pid=$1
    shift
    nsenter -t "$pid" -n "$@"
}

# NAME ARGS...: e2e_spawn `slirp4netns -r 3 ARGS...` with fd 3 the write end of a fifo, read
# here until slipway closes it; sets S4_PID, S4_READY (what came through the fd) and S4_READY_RC
# (124 if the fd was still open after 10 s). Extra
# redirections for the process: the array S4_REDIRS, applied before fd 3 (e.g. "7>&-").
S4_REDIRS=()
start_s4() {
    local name=$1 fifo="$E2E_WORK/$1.ready"
    shift
    rm -f "$fifo"
    mkfifo "$fifo"
    # Opening the fifo blocks until the reader below opens it; exec keeps the PID.
    e2e_spawn "$name" bash -c 'redirs=$1 fifo=$2; shift 2; eval "exec $redirs 3>\"\$fifo\""; exec "$@"' \
        bash "${S4_REDIRS[*]:-}" "$fifo" "$S4" -r 3 "$@"
    S4_PID=$E2E_PID
    S4_READY_RC=0
    S4_READY=$(timeout 10 cat "$fifo") || S4_READY_RC=$?
    S4_REDIRS=()
}

# SOCK JSON: one request on the API socket, half-close, print the reply.
slirp_api() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
buf = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
s.close()
sys.stdout.write(buf.decode(errors="replace"))
PY
}
# SOCK JSON WANT: the reply, parsed, must equal WANT (JSON).
api_is() {
    local got
    got=$(slirp_api "$1" "$2") || return 1
    echo "request $2 -> $got"
    python3 -c '
import json, sys
try:
    got = json.loads(sys.argv[1])
except ValueError as e:
    sys.exit(f"reply is not JSON: {e}")
want = json.loads(sys.argv[2])
if got != want:
    sys.exit(f"want {json.dumps(want)}")' "$got" "$3"
}
# SOCK JSON PREFIX: the reply must be exactly {"error":{"desc":"PREFIX..."}}.
api_error() {
    local got
    got=$(slirp_api "$1" "$2") || return 1
    echo "request $2 -> $got"
    python3 -c '
import json, sys
got = json.loads(sys.argv[1])
desc = got.get("error", {}).get("desc") if isinstance(got, dict) and len(got) == 1 else None
if not isinstance(desc, str) or not desc.startswith(sys.argv[2]) or len(got["error"]) != 1:
    sys.exit(f"want {{\"error\":{{\"desc\":\"{sys.argv[2]}...\"}}}}")' "$got" "$3"
}

# [-n PID] HOST PORT PATH SHA: GET http://HOST:PORT/PATH (from the network namespace of PID
# with -n) must have sha256 SHA.
fetch_sha() {
    local in=() got
    if [ "$1" = -n ]; then
        in=(nsenter -t "$2" -n)
        shift 2
    fi
    got=$("${in[@]}" curl -sS --max-time 30 "http://$1:$2/$3" | sha256sum | cut -d' ' -f1)
    echo "http://$1:$2/$3${in:+ (in the namespace of ${in[2]})}: sha256 $got"
    [ "$got" = "$4" ] || { echo "want $4"; return 1; }
}

# PID: no process PID, or only a zombie (an exited child this shell has not reaped yet).
gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# ------------------------------------------------ 1-4: direct use, the API
netns_holder ns-a
ns_a=$NS_PID
api_sock=$E2E_WORK/api.sock
start_s4 slirp4netns-a -c --mtu 65520 -a "$api_sock" "$ns_a" tap0
s4_a=$S4_PID

if [ "$S4_READY" = 1 ] && [ "$S4_READY_RC" = 0 ] && ! gone "$s4_a"; then
    e2e_ok s4_ready_fd
else
    e2e_not_ok s4_ready_fd "ready fd gave '$S4_READY' (reader's status $S4_READY_RC; 124: the fd stayed open), want '1' and closed by a running slipway; $(tail -n 3 "$E2E_WORK/slirp4netns-a.log" | tr '\n' ' ')"
fi
configured() {
    local addr route link lo
    addr=$(in_ns "$ns_a" ip -o -4 addr show dev tap0) || return 1
    route=$(in_ns "$ns_a" ip -4 route show default) || return 1
    link=$(in_ns "$ns_a" ip -o link show dev tap0) || return 1
    lo=$(in_ns "$ns_a" ip -o link show dev lo) || return 1
    printf '%s\n' "$addr" "$route" "$link" "$lo"
    grep -q "inet $guest_addr/24 " <<<"$addr" || { echo "no $guest_addr/24 on tap0"; return 1; }
    grep -q "^default via $gateway dev tap0" <<<"$route" || { echo "no default via $gateway"; return 1; }
    grep -q " mtu 65520 " <<<"$link" || { echo "tap0 MTU is not 65520"; return 1; }
    grep -q '<[^>]*\bUP\b' <<<"$link" || { echo "tap0 not up"; return 1; }
    grep -q '<[^>]*\bUP\b' <<<"$lo" || { echo "lo not up"; return 1; }
}
check s4_configure eventually 5 configured

check s4_download_via_gateway fetch_sha -n "$ns_a" "$gateway" "$E2E_HTTP_PORT" blob.bin "$blob_sha"

# Raw DNS queries to 10.0.2.3 from inside the namespace: NAME=WANT_A... (the A records, sorted,
# comma-separated). These names are slipway's own: no upstream is asked.
cat >"$E2E_WORK/dns-query.py" <<'PY'
import random, socket, struct, sys

def query(name):
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, ("10.0.2.3", 53))
    data, peer = s.recvfrom(4096)
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    if rid != qid:
        return f"reply id {rid} != query id {qid}"
    def skip(off):
        while True:
            n = data[off]
            if n == 0:
                return off + 1
            if n & 0xC0 == 0xC0:
                return off + 2
            off += 1 + n
    off = 12
    for _ in range(qd):
        off = skip(off) + 4
    addrs = []
    for _ in range(an):
        off = skip(off)
        typ, cls, ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        if typ == 1 and cls == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(data[off:off + 4]))
        off += rdlen
    return f"rcode={flags & 0xF} A={','.join(sorted(addrs))}"

bad = 0
for arg in sys.argv[1:]:
    name, want = arg.split("=", 1)
    try:
        got = query(name)
    except OSError as e:
        got = f"error {e}"
    want = f"rcode=0 A={want}"
    print(f"{name}: got '{got}', want '{want}'")
    bad += got != want
sys.exit(bad != 0)
PY
check s4_dns_local_names in_ns "$ns_a" python3 "$E2E_WORK/dns-query.py" \
    "host.slipway.internal=$gateway" "gateway.slipway.internal=$gateway"

# The namespace's server, on 10.0.2.100:80 only; its access log names the clients it saw.
e2e_spawn guest-http nsenter -t "$ns_a" -n python3 -u -m http.server 80 --bind "$guest_addr" \
    --directory "$E2E_WORK/www"
guest_http_pid=$E2E_PID
eventually 10 bash -c "[ -n \"\$(nsenter -t $ns_a -n ss -Hltn 'sport = :80')\" ]" >/dev/null ||
    e2e_log "the namespace's HTTP server does not listen yet"

add_req="{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":$p_fwd,\"guest_addr\":\"$guest_addr\",\"guest_port\":80}}"
check s4_api_add_hostfwd api_is "$api_sock" "$add_req" '{"return":{"id":1}}'
check s4_hostfwd_download eventually 5 fetch_sha 127.0.0.1 "$p_fwd" blob.bin "$blob_sha"
peer_is_gateway() {
    local log=$E2E_WORK/guest-http.log
    grep '"GET ' "$log" || { echo "no GET in $log"; return 1; }
    grep -q "^$gateway - - .*\"GET /blob.bin " "$log" || { echo "no GET /blob.bin from $gateway"; return 1; }
    ! grep '"GET ' "$log" | grep -v "^$gateway " || { echo "clients other than $gateway"; return 1; }
}
check s4_hostfwd_peer_is_gateway eventually 3 peer_is_gateway
check s4_api_list_hostfwd api_is "$api_sock" '{"execute":"list_hostfwd"}' \
    "{\"return\":{\"entries\":[{\"id\":1,\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":$p_fwd,\"guest_addr\":\"$guest_addr\",\"guest_port\":80}]}}"
check s4_api_remove_hostfwd api_is "$api_sock" '{"execute":"remove_hostfwd","arguments":{"id":1}}' \
    '{"return":{}}'
port_closed() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "127.0.0.1:$1 still accepts connections"
        return 1
    fi
    echo "127.0.0.1:$1 refused"
}
check s4_hostfwd_removed_port_closed eventually 3 port_closed "$p_fwd"
check s4_api_remove_unknown_id api_error "$api_sock" \
    '{"execute":"remove_hostfwd","arguments":{"id":1}}' "bad request: remove_hostfwd: bad arguments.id"
check s4_api_malformed api_error "$api_sock" '{"execute":' "bad request:"
check s4_api_add_port_in_use api_error "$api_sock" \
    "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":$E2E_HTTP_PORT,\"guest_port\":80}}" \
    "bad request: add_hostfwd"
e2e_stop_pid "$guest_http_pid"

# slirp4netns serves its API in its event loop; slipway must not: a client that sends half a
# request and then waits must stall neither traffic nor other API clients.
e2e_spawn stalled-api-client python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"{\"execute\":")
time.sleep(30)' "$api_sock"
stalled_client=$E2E_PID
sleep 0.3
api_not_stalled() {
    local t0 t1
    t0=$(e2e_now)
    fetch_sha -n "$ns_a" "$gateway" "$E2E_HTTP_PORT" blob.bin "$blob_sha" || return 1
    api_is "$api_sock" '{"execute":"list_hostfwd"}' '{"return":{"entries":[]}}' || return 1
    t1=$(e2e_now)
    echo "download and API request took $(e2e_elapsed "$t0" "$t1") s while another client held a half request"
    awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 5) }'
}
check s4_api_does_not_stall_traffic api_not_stalled
e2e_stop_pid "$stalled_client"

# ------------------------------------------------ 5: -e/--exit-fd
netns_holder ns-b
ns_b=$NS_PID
exit_fifo=$E2E_WORK/exit.fifo
rm -f "$exit_fifo"
mkfifo "$exit_fifo"
# The test holds the only writer (fd 7, opened read-write so that it does not block); slipway gets
# the read end as fd 4 and not fd 7.
exec 7<>"$exit_fifo"
S4_REDIRS=("7>&-" "4<\"$exit_fifo\"")
start_s4 slirp4netns-b -e 4 "$ns_b" tap0
s4_b=$S4_PID
sleep 0.5
if [ "$S4_READY" = 1 ] && ! gone "$s4_b"; then
    exec 7>&-
    t0=$(e2e_now)
    for _ in $(seq 50); do
        gone "$s4_b" && break
        sleep 0.1
    done
    if gone "$s4_b"; then
        rc=0
        wait "$s4_b" || rc=$?
        if [ "$rc" = 0 ]; then
            e2e_ok s4_exit_fd
        else
            e2e_not_ok s4_exit_fd "exited with status $rc after the exit fd closed (want 0)"
        fi
        echo "s4_exit_fd: exited $(e2e_elapsed "$t0" "$(e2e_now)") s after the writer closed"
    else
        e2e_not_ok s4_exit_fd "still running 5 s after the exit fd's writer closed"
    fi
else
    exec 7>&-
    e2e_not_ok s4_exit_fd "did not start: ready fd gave '$S4_READY'; $(tail -n 3 "$E2E_WORK/slirp4netns-b.log" | tr '\n' ' ')"
fi

# ------------------------------------------------ 6: refusals, --help, -v
refused() { # NAME WANT_IN_STDERR ARGS...: slirp4netns ARGS exits 1 within 5 s, saying WANT
    local name=$1 want=$2 rc=0 t0=$SECONDS
    shift 2
    timeout 10 "$S4" "$@" >"$E2E_WORK/$name.stdout" 2>"$E2E_WORK/$name.stderr" || rc=$?
    echo "slirp4netns $*: exit $rc after $((SECONDS - t0)) s; stderr: $(head -c 300 "$E2E_WORK/$name.stderr")"
    [ "$rc" = 1 ] || { echo "wanted exit status 1"; return 1; }
    [ $((SECONDS - t0)) -le 5 ] || { echo "took longer than 5 s"; return 1; }
    grep -qF -- "$want" "$E2E_WORK/$name.stderr" || { echo "no '$want' in stderr"; return 1; }
}

check s4_refuses_bad_outbound_addr refused outbound no-such-if0 --outbound-addr=no-such-if0 1 tap0
check s4_refuses_unknown_option refused unknown frobnicate --frobnicate 1 tap0
help_and_version() {
    local help version
    help=$(timeout 10 "$S4" --help) || { echo "--help failed"; return 1; }
    version=$(timeout 10 "$S4" -v) || { echo "-v failed"; return 1; }
    echo "-v: $version"
    grep -qF -- --netns-type <<<"$help" || { echo "no --netns-type in --help"; return 1; }
    grep -qF -- --api-socket <<<"$help" || { echo "no --api-socket in --help"; return 1; }
    [[ $version == "slirp4netns version "* ]] || { echo "-v does not start with 'slirp4netns version'"; return 1; }
}
check s4_help_version help_and_version

# ------------------------------------------------ 8: --enable-sandbox --enable-seccomp
netns_holder ns-c
ns_c=$NS_PID
start_s4 slirp4netns-c -c --enable-sandbox --enable-seccomp "$ns_c" tap0
s4_c=$S4_PID
sandboxed_root() {
    local got
    got=$(ls -A "/proc/$s4_c/root/" | tr '\n' ' ') || return 1
    echo "/proc/$s4_c/root: $got"
    [ "$got" = "etc run " ]
}
status_field() { # PID FIELD WANT
    local got
    got=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status") || return 1
    echo "$2 of $1: '$got'"
    [ "$got" = "$3" ]
}
if [ "$S4_READY" = 1 ]; then e2e_ok s4_sandbox_ready; else e2e_not_ok s4_sandbox_ready "ready fd gave '$S4_READY'"; fi
check s4_sandbox_root eventually 3 sandboxed_root
check s4_sandbox_capeff eventually 3 status_field "$s4_c" CapEff 0000000000000400
check s4_seccomp eventually 3 status_field "$s4_c" Seccomp 2
check s4_sandbox_forwards fetch_sha -n "$ns_c" "$gateway" "$E2E_HTTP_PORT" blob.bin "$blob_sha"

# ------------------------------------------------ 7: rootlesskit --net=slirp4netns
# rootlesskit maps root to the subordinate ids; as root it needs these lines.
for f in /etc/subuid /etc/subgid; do
    grep -q '^root:100000:65536$' "$f" 2>/dev/null || echo 'root:100000:65536' >>"$f"
done
# The child (root in a user namespace, so the test's files are not its own): downloads the blob
# through 10.0.2.2 into a directory anyone may write, serves it on port 8000 until the host has put
# /rk-stop on its HTTP server (at most 20 s), then stops that server itself. The server also
# exits as soon as its parent shell is gone (rootlesskit killed), so that it never outlives it.
cat >"$E2E_WORK/rk-server.py" <<'PY'
import functools, http.server, os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), handler).serve_forever()
PY
chmod 644 "$E2E_WORK/rk-server.py"
mkdir -m 1777 "$E2E_WORK/rk-tmp"
rk_child=$(
    cat <<EOF
set -u
d=$E2E_WORK/rk-tmp
/usr/bin/curl -sS --max-time 30 -o "\$d/blob.bin" "http://$gateway:$E2E_HTTP_PORT/blob.bin"
echo "E2E-RK-SHA \$(sha256sum "\$d/blob.bin" | cut -d' ' -f1)"
/usr/bin/python3 - "\$d" <"$E2E_WORK/rk-server.py" &
srv=\$!
i=0
while [ \$i -lt 50 ] && ! /usr/bin/curl -sf -o /dev/null http://127.0.0.1:8000/; do
    sleep 0.1
    i=\$((i + 1))
done
echo "E2E-RK-SERVER \$srv"
i=0
while [ \$i -lt 100 ] && ! /usr/bin/curl -sf -o /dev/null "http://$gateway:$E2E_HTTP_PORT/rk-stop"; do
    sleep 0.2
    i=\$((i + 1))
done
kill \$srv
wait \$srv
rm -f "\$d/blob.bin"
echo "E2E-RK-DONE"
EOF
)
rk_log=$E2E_WORK/rootlesskit.log
e2e_spawn rootlesskit rootlesskit --net=slirp4netns --slirp4netns-binary="$S4" \
    --port-driver=slirp4netns -p "127.0.0.1:$p_rk:8000/tcp" --copy-up=/etc \
    --slirp4netns-sandbox=true --slirp4netns-seccomp=true sh -c "$rk_child"
rk_pid=$E2E_PID

# Every process below rootlesskit, as "PID STARTTIME" (so that a reused PID is not mistaken).
starttime() { # PID: field 22 of /proc/PID/stat (counted after the command name, which may hold spaces)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    cut -d' ' -f20 <<<"$stat"
}
descendants() {
    ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]
              if (q == root && p != root) print p } }' |
        while read -r p; do
            # Gone already (a short-lived child): nothing to record.
            st=$(starttime "$p") || continue
            [ -z "$st" ] || echo "$p $st"
        done
}
rk_ready() {
    grep -q '^E2E-RK-SERVER ' "$rk_log" && _e2e_tcp_open "$p_rk" && grep -q "^E2E-RK-SHA" "$rk_log"
}
for _ in $(seq 200); do
    rk_ready && break
    gone "$rk_pid" && break
    sleep 0.1
done
rk_procs=$(descendants "$rk_pid")
rk_sha=$(sed -n 's/^E2E-RK-SHA //p' "$rk_log" | tail -n1)
if [ "$rk_sha" = "$blob_sha" ]; then
    e2e_ok rootlesskit_download_via_gateway
else
    e2e_not_ok rootlesskit_download_via_gateway "child got sha256 '$rk_sha', want $blob_sha"
fi
check rootlesskit_port_forward fetch_sha 127.0.0.1 "$p_rk" blob.bin "$blob_sha"
# rootlesskit's slirp4netns: the one descendant named so (comm is the symlink's name).
rk_s4=""
while read -r p _; do
    if [ -z "$rk_s4" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slirp4netns ]; then rk_s4=$p; fi
done <<<"$rk_procs"
rk_s4_sandboxed() {
    [ -n "$rk_s4" ] || { echo "no slirp4netns process under rootlesskit: $rk_procs"; return 1; }
    echo "rootlesskit's slirp4netns: $rk_s4 ($(tr '\0' ' ' <"/proc/$rk_s4/cmdline"))"
    status_field "$rk_s4" Seccomp 2 || return 1
    local root
    root=$(ls -A "/proc/$rk_s4/root/" | tr '\n' ' ')
    echo "/proc/$rk_s4/root: $root"
    [ "$root" = "etc run " ]
}
check rootlesskit_s4_sandbox_seccomp rk_s4_sandboxed

echo stop >"$E2E_WORK/www/rk-stop"
for _ in $(seq 150); do
    gone "$rk_pid" && break
    sleep 0.1
done
rk_rc=0
if gone "$rk_pid"; then
    wait "$rk_pid" || rk_rc=$?
else
    rk_rc="still running 15 s after /rk-stop"
    # What rootlesskit is waiting for: it and every process below it, with state and wait channel.
    echo "--- processes under rootlesskit $rk_pid, 15 s after /rk-stop ---"
    ps -o pid=,ppid=,stat=,wchan:24=,etime=,args= -p "$rk_pid" || true
    descendants "$rk_pid" | while read -r p _; do
        ps -o pid=,ppid=,stat=,wchan:24=,etime=,args= -p "$p" || true
    done
fi
if [ "$rk_rc" = 0 ] && grep -q '^E2E-RK-DONE' "$rk_log"; then
    e2e_ok rootlesskit_child_done
else
    e2e_not_ok rootlesskit_child_done "rootlesskit: $rk_rc; $(grep -v 'running as root' "$rk_log" | tail -n 3 | tr '\n' ' ')"
fi
all_gone() {
    local p st left=""
    [ -n "$1" ] || { echo "no processes recorded under rootlesskit"; return 1; }
    while read -r p st; do
        [ "$(starttime "$p" || true)" = "$st" ] &&
            left+="$p($(cat "/proc/$p/comm" 2>/dev/null)) "
    done <<<"$1"
    echo "rootlesskit's processes: $(cut -d' ' -f1 <<<"$1" | tr '\n' ' '); still running: ${left:-none}"
    [ -z "$left" ]
}
check rootlesskit_processes_gone eventually 5 all_gone "$rk_procs"

# ------------------------------------------------ --outbound-addr
# Two more addresses on the loopback interface of the test's own namespace: a server on 198.18.0.1
# must see the namespace's connection come from 198.18.0.2, the --outbound-addr. (198.18.0.0/15 is
# the benchmarking range; these addresses exist only inside the test's namespace. The interface
# form, --outbound-addr=IFACE, is covered by the unit tests.)
ip addr add 198.18.0.1/32 dev lo
ip addr add 198.18.0.2/32 dev lo
e2e_pick_port; p_out=$E2E_PORT
e2e_spawn out-http python3 -u -m http.server "$p_out" --bind 198.18.0.1 --directory "$E2E_WORK/www"
e2e_wait_tcp_on() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
e2e_wait_tcp_on 198.18.0.1 "$p_out" || e2e_die "the server on 198.18.0.1:$p_out did not start"
netns_holder ns-o
ns_o=$NS_PID
SLIPWAY_EGRESS_ALLOW=127.0.0.0/8,198.18.0.1/32 start_s4 slirp4netns-o -c --outbound-addr=198.18.0.2 "$ns_o" tap0
s4_o=$S4_PID
from_outbound_addr() {
    fetch_sha -n "$ns_o" 198.18.0.1 "$p_out" blob.bin "$blob_sha" || return 1
    local log="$E2E_WORK/out-http.log"
    grep '"GET /blob.bin ' "$log" | tail -n 1
    grep -q '^198\.18\.0\.2 - - .*"GET /blob.bin ' "$log" || { echo "the server did not see 198.18.0.2"; return 1; }
}
check s4_outbound_addr eventually 5 from_outbound_addr
e2e_stop_pid "$s4_o"
e2e_stop_pid "$ns_o"

# ------------------------------------------------ 9: unprivileged, joining the target's user namespace
# As slirp4netns does for rootless users: a normal user's namespace holder (its own user and
# network namespace), and slirp4netns run as that user with just the holder's PID. slipway cannot
# enter the namespace directly, so its helper joins /proc/PID/ns/user first. A normal user needs
# /dev/net/tun at mode 0666 (this machine ships 0600); the mode is restored on exit.
tun_mode=$(stat -c %a /dev/net/tun)
e2e_on_exit chmod "$tun_mode" /dev/net/tun
chmod 0666 /dev/net/tun
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
u_dir=$(mktemp -d /tmp/e2e-s4-nobody.XXXXXX)
e2e_on_exit rm -rf "$u_dir"
chown 65534:65534 "$u_dir"
ln -s "$SLIPWAY" "$u_dir/slirp4netns"
me=$(readlink /proc/self/ns/net)
e2e_spawn ns-u "${nobody[@]}" unshare --user --net --map-root-user sleep 300
ns_u=$E2E_PID
for _ in $(seq 100); do
    [ "$(readlink "/proc/$ns_u/ns/net" 2>/dev/null)" != "$me" ] && break
    sleep 0.05
done
S4_saved=$S4
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${nobody[*]}" "$u_dir/slirp4netns" >"$u_dir/as-nobody"
chmod 0755 "$u_dir/as-nobody"
S4=$u_dir/as-nobody
start_s4 slirp4netns-u -c -a "$u_dir/api.sock" "$ns_u" tap0
S4=$S4_saved
s4_u=$S4_PID
check s4_unprivileged_ready test "$S4_READY" = 1
configured_u() {
    local addr route
    addr=$(in_ns "$ns_u" ip -o -4 addr show dev tap0) || return 1
    route=$(in_ns "$ns_u" ip -4 route show default) || return 1
    printf '%s\n' "$addr" "$route"
    grep -q "inet $guest_addr/24 " <<<"$addr" && grep -q "^default via $gateway dev tap0" <<<"$route"
}
check s4_unprivileged_configured eventually 5 configured_u
check s4_unprivileged_download fetch_sha -n "$ns_u" 10.0.2.2 "$E2E_HTTP_PORT" blob.bin "$blob_sha"
runs_as_nobody_outside() {
    local uid userns
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$1/status")
    userns=$(readlink "/proc/$1/ns/user")
    echo "slipway $1: uid $uid, user namespace $userns (the test's: $(readlink /proc/self/ns/user))"
    [ "$uid" = 65534 ] && [ "$userns" = "$(readlink /proc/self/ns/user)" ]
}
check s4_unprivileged_helper_joined runs_as_nobody_outside "$s4_u"
check s4_unprivileged_api api_is "$u_dir/api.sock" '{"execute":"list_hostfwd"}' '{"return":{"entries":[]}}'
e2e_stop_pid "$s4_u"
# `slipway serve --netns PID` joins the same way.
e2e_spawn serve-u "${nobody[@]}" "$SLIPWAY" serve --netns "$ns_u" --egress-allow 127.0.0.0/8
serve_u=$E2E_PID
serve_configured_u() {
    local addr
    addr=$(in_ns "$ns_u" ip -o -4 addr show dev tap0 2>&1) || { echo "$addr"; return 1; }
    echo "$addr"
    grep -q "inet 192.168.127.2/24 " <<<"$addr"
}
check serve_unprivileged_netns_pid eventually 5 serve_configured_u
check serve_unprivileged_download fetch_sha -n "$ns_u" 192.168.127.254 "$E2E_HTTP_PORT" blob.bin "$blob_sha"
e2e_stop_pid "$serve_u"
e2e_stop_pid "$ns_u"
chmod "$tun_mode" /dev/net/tun

# ------------------------------------------------ the end
alive() {
    local p bad=0
    for p in "$@"; do gone "$p" && { echo "$p exited"; bad=1; }; done
    return "$bad"
}
check s4_alive alive "$s4_a" "$s4_c"
e2e_stop_pid "$s4_a"
e2e_stop_pid "$s4_c"
check s4_api_socket_removed test ! -e "$api_sock"

if [ "$E2E_FAILED" != 0 ]; then
    for l in slirp4netns-a slirp4netns-b slirp4netns-c slirp4netns-u rootlesskit; do
        echo "--- $l log ---"
        tail -n 20 "$E2E_WORK/$l.log"
    done
fi
e2e_summary
