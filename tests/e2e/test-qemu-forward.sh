#!/usr/bin/env bash
# Port forwards into a real Linux guest in QEMU (TCG) on slipway's `--qemu` link: the guest runs
# a server, host clients reach it through a static `-p` forward and through forwards added at run
# time over the API (native POST /v1/forwards and gvproxy's /services/forwarder/expose).
#
# Runs inside a loopback-only namespace (lib.sh). slipway runs with --egress-allow 127.0.0.0/8;
# the guest reaches the test's HTTP server on 127.0.0.1 only through the host alias
# 192.168.127.254, host clients reach the guest only through the forwards on 127.0.0.1.
#
# The guest fetches a random multi-MiB file from the host (sha256 checked), serves it with
# `busybox httpd -f -vv` on port 80 (its log names each client's address and port), then polls
# http://192.168.127.254:PORT/done until the host has finished (bounded), prints the httpd log
# and powers off. While it runs, a background job on the host (host_checks below) downloads the
# file through each forward; its verdicts are counted once the guest is down.
#
# Checks: guest boot, lease, the guest's own fetch, httpd started, the guest saw the host's done
# signal; the forward answers once the guest's server is up; the file through the static forward,
# through a forward added with POST /v1/forwards (201, listed) and through one added with
# gvproxy's expose (200, listed in /services/forwarder/all), each with sha256; DELETE
# /v1/forwards/ID and unexpose close their ports while the static forward keeps working; the
# guest saw every download's client as 192.168.127.254 with the host client's own port, and no
# other peer; slipway stays alive. The API checks run only when `slipway serve --help` lists
# --api.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-16}
alias_addr=192.168.127.254
guest_addr=192.168.127.2
api_sock=$E2E_WORK/api.sock
qemu_sock=$E2E_WORK/qemu.sock
results=$E2E_WORK/host-checks.results
peers_want=$E2E_WORK/peers.want
www=$E2E_WORK/www

has_api=0
if "$SLIPWAY" serve --help 2>/dev/null | grep -q -- --api; then has_api=1; fi

mkdir -p "$www"
blob_sha=$(e2e_random_file "$www/blob.bin" "$blob_mib")
e2e_http_server_start "$www"

# Three different free host ports: the static forward, the /v1 one, the gvproxy one.
p_static=$(e2e_free_port)
p_api=$(e2e_free_port)
while [ "$p_api" = "$p_static" ]; do p_api=$(e2e_free_port); done
p_expose=$(e2e_free_port)
while [ "$p_expose" = "$p_static" ] || [ "$p_expose" = "$p_api" ]; do p_expose=$(e2e_free_port); done

script=$E2E_WORK/guest-script.sh
cat >"$script" <<EOF2
HTTP_PORT=$E2E_HTTP_PORT
BLOB_SHA=$blob_sha
ALIAS=$alias_addr
EOF2
cat >>"$script" <<'EOF2'
e2e_check lease test "$E2E_LEASE_OK" = 1
mkdir -p /srv
fetch() {
    wget -q -O /srv/blob.bin "http://$ALIAS:$HTTP_PORT/blob.bin" || return 1
    got=$(sha256sum /srv/blob.bin | cut -d' ' -f1)
    [ "$got" = "$BLOB_SHA" ] || { echo "sha256 $got, want $BLOB_SHA"; return 1; }
}
e2e_check guest_fetch fetch
echo ready >/srv/ready
# -f: foreground; -vv: one "IP:PORT: url:/path" line per request on stderr. IPv4 only, so
# that peers are logged as 192.168.127.254:PORT rather than [::ffff:192.168.127.254]:PORT.
httpd -f -vv -p 0.0.0.0:80 -h /srv 2>/tmp/httpd.log &
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
e2e_check httpd_start httpd_up
# The host creates /done on its HTTP server when its checks are over.
wait_done() {
    i=0
    while [ "$i" -lt 150 ]; do
        wget -q -O /tmp/done "http://$ALIAS:$HTTP_PORT/done" 2>/dev/null && return 0
        sleep 0.5
        i=$((i + 1))
    done
    echo "no /done from the host within 75 s"
    return 1
}
e2e_check host_done wait_done
kill "$hpid" 2>/dev/null
sleep 0.2
sed 's/^/E2E-HTTPD /' /tmp/httpd.log
EOF2

api_args=()
if [ "$has_api" = 1 ]; then api_args=(--api "$api_sock"); fi
e2e_spawn slipway "$SLIPWAY" serve --qemu "$qemu_sock" -p "$p_static:80" "${api_args[@]}" \
    --egress-allow 127.0.0.0/8 -v
slipway_pid=$E2E_PID
e2e_wait_path "$qemu_sock" 10
if [ "$has_api" = 1 ]; then e2e_wait_path "$api_sock" 10; fi

# ---------------------------------------------------------------- host side, in the background
# Verdicts go to $results as "ok NAME" / "not ok NAME: REASON" lines, replayed through
# e2e_ok/e2e_not_ok after the guest is down. Nothing here may exit the job early: every step is
# bounded and the guest is always released (/done) at the end.

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

# api METHOD PATH [BODY]: the body goes to $api_body, the status code to $status.
api() {
    local method=$1 path=$2 data=${3:-}
    api_body=$E2E_WORK/api.body
    local args=(-sS --max-time 10 --unix-socket "$api_sock" -X "$method" -o "$api_body" -w '%{http_code}')
    [ -z "$data" ] || args+=(-d "$data")
    status=$(curl "${args[@]}" "http://x$path") || status="curl-failed"
    echo "$method $path ${data:+$data }-> $status $(head -c 400 "$api_body" 2>/dev/null)"
}

wait_ready() { # PORT: the guest's /ready through the forward, within 60 s
    local port=$1 t0=$SECONDS tries=0
    while [ $((SECONDS - t0)) -lt 60 ]; do
        tries=$((tries + 1))
        if [ "$(curl -sf --max-time 3 "http://127.0.0.1:$port/ready" 2>/dev/null)" = ready ]; then
            echo "ready after $((SECONDS - t0)) s, $tries tries"
            return 0
        fi
        sleep 0.3
    done
    echo "127.0.0.1:$port/ready did not answer 'ready' within 60 s ($tries tries)"
    return 1
}

download() { # NAME PORT: the blob through 127.0.0.1:PORT, sha256; remembers the client port
    local name=$1 port=$2 out=$E2E_WORK/dl-$1.bin w got
    w=$(curl -sS --max-time 40 -o "$out" -w '%{http_code} %{local_port} %{speed_download} %{time_total}' \
        "http://127.0.0.1:$port/blob.bin") || { echo "curl failed: $w"; return 1; }
    read -r code lport speed ttotal <<<"$w"
    got=$(sha256sum "$out" | cut -d' ' -f1)
    rm -f "$out"
    echo "HTTP $code from client port $lport, ${ttotal} s, $(awk -v s="$speed" 'BEGIN { printf "%.0f", s * 8 / 1e6 }') Mbit/s"
    echo "$name $lport" >>"$peers_want"
    [ "$code" = 200 ] || { echo "HTTP status $code"; return 1; }
    [ "$got" = "$blob_sha" ] || { echo "sha256 $got, want $blob_sha"; return 1; }
}

port_closed() { # PORT: refused within 3 s
    local port=$1 i
    for ((i = 0; i < 30; i++)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port refuses connections"
            return 0
        fi
        sleep 0.1
    done
    echo "127.0.0.1:$port still accepts connections 3 s after removal"
    return 1
}

api_add() {
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_api:80\"}"
    [ "$status" = 201 ] || { echo "want 201"; return 1; }
    api_id=$(python3 -c '
import json, sys
got = json.load(open(sys.argv[1]))
want = {"proto": "tcp", "host": "127.0.0.1:" + sys.argv[2], "guest_ip": sys.argv[3], "guest_port": 80}
assert isinstance(got, list) and len(got) == 1, got
f = got[0]
assert {k: f.get(k) for k in want} == want, f"{f} is not {want}"
print(f["id"])' "$api_body" "$p_api" "$guest_addr") || return 1
    api GET /v1/forwards
    python3 -c '
import json, sys
hosts = sorted(f["host"] for f in json.load(open(sys.argv[1])))
want = sorted("127.0.0.1:" + p for p in sys.argv[2:])
print("listed:", hosts)
sys.exit(hosts != want)' "$api_body" "$p_static" "$p_api"
}

expose() {
    api POST /services/forwarder/expose \
        "{\"local\":\"127.0.0.1:$p_expose\",\"remote\":\"$guest_addr:80\",\"protocol\":\"tcp\"}"
    [ "$status" = 200 ] || { echo "want 200"; return 1; }
    api GET /services/forwarder/all
    python3 -c '
import json, sys
got = json.load(open(sys.argv[1]))
want = [{"local": "127.0.0.1:" + p, "remote": sys.argv[2] + ":80", "protocol": "tcp"} for p in sys.argv[3:]]
missing = [w for w in want if w not in got]
print("all:", got)
sys.exit(bool(missing) and f"missing {missing}")' "$api_body" "$guest_addr" "$p_static" "$p_api" "$p_expose"
}

api_remove() {
    api DELETE "/v1/forwards/$api_id"
    [ "$status" = 200 ] || { echo "want 200"; return 1; }
    port_closed "$p_api"
}

unexpose() {
    api POST /services/forwarder/unexpose "{\"local\":\"127.0.0.1:$p_expose\",\"protocol\":\"tcp\"}"
    [ "$status" = 200 ] || { echo "want 200"; return 1; }
    port_closed "$p_expose"
}

static_still_there() {
    [ "$(curl -sS --max-time 10 "http://127.0.0.1:$p_static/ready")" = ready ]
}

host_checks() {
    trap 'touch "$www/done"' EXIT
    : >"$results"
    : >"$peers_want"
    record fwd_guest_server_reachable wait_ready "$p_static" || return 0
    record fwd_static_download download static "$p_static" || true
    if [ "$has_api" = 1 ]; then
        if record fwd_api_add api_add; then
            record fwd_api_download download api "$p_api" || true
        fi
        if record fwd_gvproxy_expose expose; then
            record fwd_gvproxy_download download gvproxy "$p_expose" || true
        fi
        [ -z "${api_id:-}" ] || record fwd_api_remove api_remove || true
        record fwd_gvproxy_unexpose unexpose || true
        record fwd_static_after_removals static_still_there || true
    fi
}

e2e_spawn host-checks host_checks
checks_pid=$E2E_PID

log=$E2E_WORK/guest.log
rc=0
e2e_boot_guest "stream,id=n0,server=off,addr.type=unix,addr.path=$qemu_sock" "$script" "$log" 120 || rc=$?
if [ "$rc" = 0 ]; then e2e_ok guest_boot; else e2e_not_ok guest_boot "rc $rc, see $log"; fi
e2e_expect_guest_pass "$log" lease guest_fetch httpd_start host_done

# The host job is finished once the guest saw /done; give it a moment if the guest died early.
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
if [ "$has_api" = 0 ]; then
    echo "# $SLIPWAY has no --api: the API forward checks were skipped"
fi

# Every download's client, as the guest saw it: the host alias with the client's own port.
peers() {
    local name lport bad=0
    [ -s "$peers_want" ] || { echo "no downloads were made"; return 1; }
    while read -r name lport; do
        if grep -qaF "E2E-HTTPD $alias_addr:$lport: url:/blob.bin" "$log"; then
            echo "$name: the guest saw $alias_addr:$lport"
        else
            echo "$name: no 'E2E-HTTPD $alias_addr:$lport: url:/blob.bin' in $log"
            bad=1
        fi
    done <"$peers_want"
    local others
    others=$(grep -a '^E2E-HTTPD ' "$log" | grep -av "^E2E-HTTPD $alias_addr:[0-9]*: " || true)
    [ -z "$others" ] || { echo "other peers: $others"; bad=1; }
    return "$bad"
}
if peers >"$E2E_WORK/fwd_peer_address.out" 2>&1; then
    e2e_ok fwd_peer_address
else
    e2e_not_ok fwd_peer_address "$(tail -n 3 "$E2E_WORK/fwd_peer_address.out" | tr '\n' ' ')"
fi

if kill -0 "$slipway_pid" 2>/dev/null; then
    e2e_ok slipway_alive
else
    e2e_not_ok slipway_alive "slipway exited during the test"
fi
e2e_stop_pid "$slipway_pid"
for f in fwd_static_download fwd_api_download fwd_gvproxy_download; do
    if [ -s "$E2E_WORK/$f.out" ]; then echo "$f: $(head -n 1 "$E2E_WORK/$f.out")"; fi
done
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- guest log ($log) ---"
    tail -n 40 "$log"
    echo "--- slipway log ---"
    tail -n 30 "$E2E_WORK/slipway.log"
fi
e2e_summary
