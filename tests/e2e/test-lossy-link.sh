#!/usr/bin/env bash
# Host → guest downloads over a lossy link against a real Linux TCP as the guest (`--netns`),
# with and without SACK (the guest namespace's net.ipv4.tcp_sack): nftables in the guest drops
# 5 % of what arrives on tap0 (slipway's segments) and 2 % of what leaves (the guest's ACKs), at
# random. Checks that the file arrives whole both ways and prints how long each took.
#
# Runs inside a loopback-only namespace (lib.sh); slipway runs with --egress-allow 127.0.0.0/8.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-32}
loss_in=${E2E_LOSS_IN:-5%}
loss_out=${E2E_LOSS_OUT:-2%}

mkdir -p "$E2E_WORK/www"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
e2e_http_server_start "$E2E_WORK/www"

e2e_netns_create guest
guest=$E2E_NETNS
e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --mtu 1500 \
    --egress-allow 127.0.0.0/8 -v
in_guest() { ip netns exec "$guest" "$@"; }
check() { e2e_check_cmd "$@"; }

for _ in $(seq 50); do
    in_guest ip -o -4 addr show dev tap0 2>/dev/null | grep -q inet && break
    sleep 0.1
done
check tap_configured bash -c "ip -n $guest -o -4 addr show dev tap0 | grep -q '192.168.127.2/24'"

# Loss both ways, in the guest's netfilter (this kernel has no netem).
lossy() {
    in_guest nft -f - <<NFT
table inet lossy {
    chain in {
        type filter hook input priority 0;
        iifname "tap0" numgen random mod 100 < ${loss_in%\%} counter drop
    }
    chain out {
        type filter hook output priority 0;
        oifname "tap0" numgen random mod 100 < ${loss_out%\%} counter drop
    }
}
NFT
}
check lossy_link lossy

download() { # SACK(0|1)
    in_guest sysctl -qw net.ipv4.tcp_sack="$1" || return 1
    local t0 got
    t0=$(date +%s%N)
    got=$(in_guest curl -sS --max-time 120 "http://192.168.127.254:$E2E_HTTP_PORT/blob.bin" |
        sha256sum | cut -d' ' -f1)
    [ "$got" = "$blob_sha" ] || { echo "sha256 $got, want $blob_sha"; return 1; }
    echo "$blob_mib MiB with tcp_sack=$1 at $loss_in/$loss_out loss: $((($(date +%s%N) - t0) / 1000000)) ms"
}
check download_with_sack download 1
check download_without_sack download 0
cat "$E2E_WORK/download_with_sack.out" "$E2E_WORK/download_without_sack.out" 2>/dev/null || true
in_guest nft list table inet lossy | grep -o 'counter packets [0-9]*' | sed 's/^/dropped: /' || true

if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
