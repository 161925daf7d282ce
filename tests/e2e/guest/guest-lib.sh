# shellcheck shell=sh disable=SC2034,SC1091 # variables are for the test script; the lease file is made at boot
# Helpers for e2e test scripts running inside the guest (busybox sh). /init sources this file
# before the test script, so a script may use these functions and variables directly:
#
#   E2E_LEASE_OK   1 when udhcpc got a lease, else 0
#   E2E_IP E2E_MASK E2E_GATEWAY E2E_DNS E2E_MTU E2E_SERVER_ID E2E_LEASE_TIME   from the lease
#
#   e2e_pass NAME                 prints "E2E-PASS NAME"
#   e2e_fail NAME REASON...       prints "E2E-FAIL NAME REASON..."
#   e2e_result NAME VALUE         prints "E2E-RESULT NAME=VALUE"
#   e2e_check NAME CMD [ARG...]   runs CMD (a command or a function); E2E-PASS on exit 0, else
#                                 E2E-FAIL with the exit code and the last lines of its output;
#                                 E2E- lines CMD printed are passed on; returns CMD's status
#   e2e_uptime_ms                 milliseconds since the guest kernel started
#   e2e_random_text_file PATH KIB makes a file of about KIB KiB of random base64 text
#   e2e_http_put FILE HOST PORT [PATH=/upload]
#                                 POSTs FILE with busybox wget and prints the response body
#                                 (the e2e HTTP server answers "<sha256> <bytes>"). FILE must
#                                 hold no NUL byte: busybox wget sends --post-file only up to
#                                 the first one. Use e2e_random_text_file.
#   e2e_http_put_halfclose FILE HOST PORT [PATH=/upload]
#                                 the same for any bytes, over busybox nc, which shuts down its
#                                 sending side after FILE (TCP half-close) and then waits for
#                                 the answer and the server's FIN. Against passt 2023-03 this
#                                 mostly hangs in FIN_WAIT2 (see README.md).
#
# NAME is one word ([A-Za-z0-9_.-]); the harness greps these lines from the serial log.

E2E_LEASE_OK=0
if [ -r /run/e2e-lease ]; then
    . /run/e2e-lease
    E2E_LEASE_OK=1
fi

e2e_pass() { echo "E2E-PASS $1"; }

e2e_fail() {
    _name=$1
    shift
    echo "E2E-FAIL $_name $*"
}

e2e_result() { echo "E2E-RESULT $1=$2"; }

e2e_uptime_ms() {
    read -r _up _ </proc/uptime
    _s=${_up%.*}
    _f=${_up#*.}
    echo $((_s * 1000 + ${_f#0} * 10))
}

e2e_check() {
    _name=$1
    shift
    _out=/tmp/e2e-check.$$.out
    if "$@" >"$_out" 2>&1; then
        grep '^E2E-' "$_out" || true
        rm -f "$_out"
        e2e_pass "$_name"
        return 0
    else
        _rc=$?
        grep '^E2E-' "$_out" || true
        grep -v '^E2E-' "$_out" | tail -n 8 | sed "s/^/  [$_name] /"
        rm -f "$_out"
        e2e_fail "$_name" "exit $_rc: $*"
        return "$_rc"
    fi
}

e2e_random_text_file() {
    # base64 of random bytes: no NUL, so busybox wget --post-file sends all of it.
    head -c "$(($2 * 768))" /dev/urandom | base64 >"$1"
}

e2e_http_put() {
    wget -q -O - --header 'Content-Type: application/octet-stream' \
        --post-file="$1" "http://$2:$3${4:-/upload}"
}

e2e_http_put_halfclose() {
    _size=$(wc -c <"$1")
    {
        printf 'PUT %s HTTP/1.0\r\nHost: %s\r\nContent-Length: %s\r\n\r\n' \
            "${4:-/upload}" "$2" "$_size"
        cat "$1"
    } | nc "$2" "$3" | tr -d '\r' | sed '1,/^$/d'
}
