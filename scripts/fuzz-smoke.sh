#!/usr/bin/env bash
# Build every fuzz target in fuzz/ and run each for a bounded time inside a network namespace
# that has no route anywhere. Exits non-zero when a target crashes, hangs or fails to build, and
# prints the crashing input's path. Last line: "fuzz: N passed, N failed[, N skipped]".
#
#   scripts/fuzz-smoke.sh                      # every target, 20 s each
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh     # longer
#   FUZZ_TARGETS="network_frames" scripts/fuzz-smoke.sh
#   FUZZ_FEATURES=dns scripts/fuzz-smoke.sh    # also the dns_zone target
#
# Environment: FUZZ_SECONDS (20) per target; FUZZ_TARGETS (all in fuzz/fuzz_targets);
# FUZZ_FEATURES (cargo features of the fuzz crate, default: its default features);
# FUZZ_TIMEOUT (10) seconds one input may take before it counts as a hang; FUZZ_UNIT_TESTS (1)
# runs the harness's own unit tests first; CARGO_TARGET_DIR is honoured.
#
# Needs root (as in CI) or unprivileged user namespaces for `unshare --net`. Everything that
# needs the network (installing cargo-fuzz, fetching crates, building) happens before the
# script re-executes itself inside the namespace; the fuzzers only ever run inside it.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
seconds="${FUZZ_SECONDS:-20}"
per_input_timeout="${FUZZ_TIMEOUT:-10}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

say() { printf 'fuzz: %s\n' "$*"; }
die() {
	printf 'fuzz: error: %s\n' "$*" >&2
	exit 2
}

case "$seconds" in
'' | *[!0-9]*) die "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" ;;
esac

max_len_for() {
	case "$1" in
	network_frames | dhcp4_handle | dhcp6_handle) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

# ---------------------------------------------------------------------------------------------
# Inside the network namespace: check isolation, run the fuzzers.
# ---------------------------------------------------------------------------------------------
run_inside() {
	local routes routes6 links
	if command -v ip >/dev/null; then
		routes="$(ip route show)" || die "'ip route show' failed inside the namespace"
		routes6="$(ip -6 route show 2>/dev/null || true)" # empty too when IPv6 is disabled
		links="$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
	else
		routes="$(tail -n +2 /proc/net/route)"
		routes6="$(grep -v ' lo$' /proc/net/ipv6_route || true)"
		links="$(tail -n +3 /proc/net/dev | awk -F: '{gsub(/ /, "", $1); print $1}' | tr '\n' ' ')"
	fi
	[[ -z "$routes" && -z "$routes6" ]] || die "the namespace has routes, refusing to fuzz: $routes $routes6"
	[[ "$links" == "lo " ]] || die "the namespace has links other than lo, refusing to fuzz: $links"
	say "in an empty network namespace (links: lo, down; ip route: empty)"

	export RUST_BACKTRACE=1
	local passed=0 failed=0 skipped=0 failures=()
	for t in $SLIPWAY_FUZZ_SKIPPED; do
		say "$t: skipped (needs cargo feature; set FUZZ_FEATURES)"
		skipped=$((skipped + 1))
	done
	for t in $SLIPWAY_FUZZ_BUILD_FAILED; do
		say "$t: FAILED to build (log: $fuzz_dir/logs/$t.build.log)"
		failed=$((failed + 1))
		failures+=("$t")
	done
	for t in $SLIPWAY_FUZZ_BUILT; do
		local bin="$SLIPWAY_FUZZ_BIN_DIR/$t" corpus="$fuzz_dir/corpus/$t" artifacts="$fuzz_dir/artifacts/$t"
		local log="$fuzz_dir/logs/$t.log" dirs=("$fuzz_dir/corpus/$t" "$fuzz_dir/seeds/$t")
		mkdir -p "$corpus" "$artifacts"
		if [[ -d "$fuzz_dir/regressions/$t" ]] && [[ -n "$(ls -A "$fuzz_dir/regressions/$t")" ]]; then
			dirs+=("$fuzz_dir/regressions/$t")
		fi
		local start rc=0
		start=$(date +%s)
		"$bin" -max_total_time="$seconds" -timeout="$per_input_timeout" -rss_limit_mb=2048 \
			-max_len="$(max_len_for "$t")" -print_final_stats=1 -artifact_prefix="$artifacts/" \
			"${dirs[@]}" >"$log" 2>&1 || rc=$?
		local took=$(($(date +%s) - start)) done_line
		done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
		if [[ $rc -eq 0 ]]; then
			local runs cov
			runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
			cov="$(sed -n 's/.*DONE *cov: \([0-9]*\).*corp: \([0-9]*\)\/.*/coverage \1, corpus \2/p' <<<"$done_line")"
			say "$t: ok, ${runs:-?} runs in ${took} s, ${cov:-no stats}"
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			failures+=("$t")
			say "$t: FAILED (exit $rc after ${took} s), log: $log"
			grep -E "panicked at|^ +[0-9]+: |^ +at |ERROR: libFuzzer|SUMMARY|==ERROR" "$log" | head -40 | sed 's/^/    /' || true
			local input
			input="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
			if [[ -n "$input" ]]; then
				say "$t: crashing input: $input"
				if [[ -f "$input" ]] && [[ $(stat -c %s "$input") -le 1024 ]]; then
					say "$t: input hex: $(od -An -v -tx1 "$input" | tr -d ' \n')"
				fi
				say "$t: reproduce: $bin $input"
			fi
		fi
	done
	if [[ ${#failures[@]} -gt 0 ]]; then
		say "failed targets: ${failures[*]}"
	fi
	local summary="$passed passed, $failed failed"
	[[ $skipped -gt 0 ]] && summary+=", $skipped skipped"
	printf 'fuzz: %s\n' "$summary"
	[[ $failed -eq 0 ]]
}

if [[ "${SLIPWAY_FUZZ_IN_NETNS:-}" == 1 ]]; then
	run_inside
	exit $?
fi

# ---------------------------------------------------------------------------------------------
# Outside: install cargo-fuzz, build, then re-execute inside a fresh network namespace.
# ---------------------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not installed"
[[ -f "$fuzz_dir/Cargo.toml" ]] || die "no fuzz crate at $fuzz_dir"

# Check the namespace can be made before spending minutes on builds.
if [[ $EUID -eq 0 ]]; then
	unshare_cmd=(unshare --net)
else
	unshare_cmd=(unshare --user --map-root-user --net)
fi
"${unshare_cmd[@]}" true 2>/dev/null ||
	die "cannot create a network namespace ('${unshare_cmd[*]}' failed): run as root; the fuzzers must not run with network access"

if ! cargo fuzz --version >/dev/null 2>&1; then
	say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
	cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
say "$(cargo fuzz --version)"

mkdir -p "$fuzz_dir/logs"
features=()
[[ -n "${FUZZ_FEATURES:-}" ]] && features=(--features "$FUZZ_FEATURES")

if [[ "${FUZZ_UNIT_TESTS:-1}" == 1 ]]; then
	say "harness unit tests"
	if ! cargo test --manifest-path "$fuzz_dir/Cargo.toml" "${features[@]}" >"$fuzz_dir/logs/unit-tests.log" 2>&1; then
		tail -40 "$fuzz_dir/logs/unit-tests.log" | sed 's/^/    /'
		say "the harness unit tests failed (log: $fuzz_dir/logs/unit-tests.log)"
		printf 'fuzz: 0 passed, 1 failed\n'
		exit 1
	fi
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="$(cargo metadata --manifest-path "$fuzz_dir/Cargo.toml" --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$target_dir" ]] || die "could not find the fuzz crate's target directory"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
	targets="$FUZZ_TARGETS"
else
	targets=""
	for f in "$fuzz_dir"/fuzz_targets/*.rs; do
		f="${f##*/}"
		targets+="${f%.rs} "
	done
fi

# Stable Rust: no sanitizer (ASan needs nightly's -Zsanitizer); -a keeps debug assertions and
# overflow checks on in the optimised build.
built="" skipped="" build_failed=""
build_start=$(date +%s)
for t in $targets; do
	[[ -f "$fuzz_dir/fuzz_targets/$t.rs" ]] || die "no fuzz target '$t' in $fuzz_dir/fuzz_targets"
	say "building $t"
	log="$fuzz_dir/logs/$t.build.log"
	if (cd "$fuzz_dir" && cargo fuzz build --sanitizer none --debug-assertions --target "$triple" "${features[@]}" "$t") >"$log" 2>&1; then
		built+="$t "
	elif grep -q "requires the features" "$log"; then
		skipped+="$t "
	else
		tail -30 "$log" | sed 's/^/    /'
		build_failed+="$t "
	fi
done
say "built in $(($(date +%s) - build_start)) s; running each target for $seconds s"

export SLIPWAY_FUZZ_IN_NETNS=1
export SLIPWAY_FUZZ_BIN_DIR="$target_dir/$triple/release"
export SLIPWAY_FUZZ_BUILT="$built" SLIPWAY_FUZZ_SKIPPED="$skipped" SLIPWAY_FUZZ_BUILD_FAILED="$build_failed"
exec "${unshare_cmd[@]}" -- "$BASH" "${BASH_SOURCE[0]}" "$@"
