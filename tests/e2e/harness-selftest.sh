#!/usr/bin/env bash
# Proves that the harness can fail: every way a guest run can go wrong must come out as the right
# status and markers. No network stack is involved (the guest boots without a NIC).
#
#   - host side: the namespace is isolated; netns, HTTP, dnsmasq and iperf3 helpers work
#   - markers: E2E-PASS / E2E-FAIL / E2E-RESULT are read back exactly
#   - a script that exits 3           -> e2e_boot_guest returns 1, "E2E-DONE rc=3"
#   - a script that hangs             -> the guest's watchdog kills it: E2E-FAIL script-timeout
#   - a guest kernel panic            -> QEMU exits without E2E-DONE: 125
#   - a guest that never runs (-S)    -> the host kills QEMU after TIMEOUT: 124
#   - cleanup: no process started here outlives the run
#
# Ends with "e2e: N passed, N failed". About 1.5 minutes under TCG.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

expect_rc() {
    local name=$1 want=$2 got=$3
    if [ "$got" = "$want" ]; then e2e_ok "$name"; else e2e_not_ok "$name" "status $got, want $want"; fi
}

# 0. Host side: isolation, named namespaces, the loopback servers.
if (exec 3<>/dev/tcp/192.0.2.77/80) 2>/dev/null; then
    e2e_not_ok isolated "a connect to 192.0.2.77 did not fail"
else
    e2e_ok isolated
fi
e2e_netns_create probe
if [ "$(ip -n "$E2E_NETNS" -o link show | awk -F': ' '{print $2}')" = lo ] &&
    ip netns list | grep -q "^$E2E_NETNS\b"; then
    e2e_ok netns_create
else
    e2e_not_ok netns_create "$E2E_NETNS missing or has more than lo"
fi
mkdir -p "$E2E_WORK/www"
e2e_on_exit rm -rf "$E2E_WORK/www"
sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" 2)
e2e_http_server_start "$E2E_WORK/www"
got=$(curl -sf "http://127.0.0.1:$E2E_HTTP_PORT/blob.bin" | sha256sum | cut -d' ' -f1)
expect_rc http_get "$sha" "$got"
got=$(curl -sf -T "$E2E_WORK/www/blob.bin" "http://127.0.0.1:$E2E_HTTP_PORT/upload")
expect_rc http_put "$sha 2097152" "$got"
e2e_dnsmasq_start 53 e2e.test=127.0.0.1 other.test=127.0.0.2,::1
if busybox nslookup e2e.test 127.0.0.1 | grep -q 'Address: 127.0.0.1$' &&
    busybox nslookup -type=aaaa other.test 127.0.0.1 | grep -q 'Address: ::1$' &&
    ! busybox nslookup missing.test 127.0.0.1 >/dev/null 2>&1; then
    e2e_ok dnsmasq_records
else
    e2e_not_ok dnsmasq_records "see $E2E_WORK/dnsmasq.53.log"
fi
iperf_port=$(e2e_free_port)
e2e_iperf3_server_start "$iperf_port"
if iperf3 -c 127.0.0.1 -p "$iperf_port" -t 1 >"$E2E_WORK/iperf3-client.log" 2>&1; then
    e2e_ok iperf3_server
else
    e2e_not_ok iperf3_server "see $E2E_WORK/iperf3-client.log"
fi

# 1. Markers and a clean exit.
s="$E2E_WORK/markers.sh"
cat >"$s" <<'EOF'
e2e_pass good
e2e_fail bad something broke
e2e_result answer 42
e2e_check checked_true true
e2e_check checked_false false
e2e_result lease_ok "$E2E_LEASE_OK"
EOF
log="$E2E_WORK/markers.log"
rc=0
e2e_boot_guest "" "$s" "$log" 120 || rc=$?
expect_rc clean_exit 0 "$rc"
if e2e_marker_passed "$log" good; then e2e_ok marker_pass; else e2e_not_ok marker_pass "good not passed"; fi
if e2e_marker_passed "$log" bad; then e2e_not_ok marker_fail "bad counted as passed"; else e2e_ok marker_fail; fi
if e2e_marker_passed "$log" checked_false; then
    e2e_not_ok check_false "false counted as passed"
else
    e2e_ok check_false
fi
if e2e_marker_passed "$log" checked_true; then e2e_ok check_true; else e2e_not_ok check_true "true not passed"; fi
answer=$(e2e_marker_result "$log" answer)
expect_rc marker_result 42 "$answer"
expect_rc no_lease_without_nic 0 "$(e2e_marker_result "$log" lease_ok)"
expect_rc missing_result "" "$(e2e_marker_result "$log" nothing)"
if e2e_marker_failures "$log" | grep -q '^E2E-FAIL bad something broke$'; then
    e2e_ok marker_failures
else
    e2e_not_ok marker_failures "E2E-FAIL bad line not found"
fi

# 2. The script's exit status reaches the host.
s="$E2E_WORK/exit3.sh"
echo 'exit 3' >"$s"
rc=0
e2e_boot_guest "" "$s" "$E2E_WORK/exit3.log" 120 || rc=$?
expect_rc script_exit_status 1 "$rc"
if grep -q '^E2E-DONE rc=3 ' "$E2E_WORK/exit3.log"; then e2e_ok done_rc; else e2e_not_ok done_rc "no E2E-DONE rc=3"; fi

# 3. A hung script: the guest's watchdog (TIMEOUT-30 s, here 40/2 = 20 s) kills it.
s="$E2E_WORK/hang.sh"
printf 'e2e_pass before\nsleep 1000\ne2e_pass after\n' >"$s"
rc=0
e2e_boot_guest "" "$s" "$E2E_WORK/hang.log" 40 || rc=$?
expect_rc hang_status 1 "$rc"
if grep -q '^E2E-FAIL script-timeout' "$E2E_WORK/hang.log" && ! grep -q '^E2E-PASS after' "$E2E_WORK/hang.log"; then
    e2e_ok hang_watchdog
else
    e2e_not_ok hang_watchdog "no script-timeout marker"
fi

# 4. A kernel panic (panic=-1 and -no-reboot: QEMU exits at once).
s="$E2E_WORK/panic.sh"
echo 'echo c >/proc/sysrq-trigger' >"$s"
rc=0
e2e_boot_guest "" "$s" "$E2E_WORK/panic.log" 120 || rc=$?
expect_rc panic_status 125 "$rc"

# 5. QEMU started paused never runs the guest: the host timeout must fire.
E2E_QEMU_EXTRA_ARGS=(-S)
s="$E2E_WORK/never.sh"
echo 'e2e_pass never' >"$s"
rc=0
e2e_boot_guest "" "$s" "$E2E_WORK/never.log" 10 || rc=$?
E2E_QEMU_EXTRA_ARGS=()
expect_rc host_timeout 124 "$rc"

# 6. Every QEMU started above is gone (the servers of step 0 still run until exit).
left=$(jobs -p | grep -vx -e "$E2E_HTTP_PID" -e "$E2E_DNSMASQ_PID" -e "$E2E_IPERF3_PID" | tr '\n' ' ' || true)
if [ -z "$left" ]; then e2e_ok no_leftover_jobs; else e2e_not_ok no_leftover_jobs "still running: $left"; fi

e2e_summary
