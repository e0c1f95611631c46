#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60) and prints libFuzzer's last stat line of each.
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked).
# Usage: tests/fuzz/run.sh [SECONDS]
set -euo pipefail
seconds=${1:-60}
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$fuzz_dir/../.." && pwd)
targets=(host client_hello config)

mkdir -p "$fuzz_dir/corpus/config"
# The config target starts from the configs the project ships.
for f in "$root"/config/*.toml "$root"/examples/*.toml "$root"/examples/*/*.toml; do
  if [ -e "$f" ]; then
    cp "$f" "$fuzz_dir/corpus/config/$(basename "$(dirname "$f")")-$(basename "$f")"
  fi
done

cd "$root"
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$fuzz_dir/corpus/$target" "$fuzz_dir/artifacts/$target"
  log="$fuzz_dir/artifacts/$target/run.log"
  echo "== $target (${seconds}s, log: $log)"
  status=0
  cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$target" \
    "$fuzz_dir/corpus/$target" "$fuzz_dir/seeds/$target" \
    -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E '^Done [0-9]+ runs' "$log" || true
  if ((status != 0)); then
    grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" || true
    echo "$target: FAILED (exit $status), see $log"
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
