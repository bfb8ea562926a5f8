#!/usr/bin/env bash
# Fuzzes groupwatch's parsers and crypto with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]
#
# TARGET is envelope, decrypt, event, dingtalk_event, tim_callback or all (default all); SECONDS per target (default 600).
# Targets run one after another, niced, with one job and one worker. Seeds from fuzz/seeds/TARGET
# are copied into fuzz/corpus/TARGET (git-ignored) first; crashes land in fuzz/artifacts/TARGET.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none; falls back to none if the ASan build fails
#   CARGO_TARGET_DIR where to build (default: cargo's own, fuzz/target)
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-max_len=8192"
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(envelope decrypt event dingtalk_event tim_callback)
target="${1:-all}"
seconds="${2:-600}"
if [[ "$target" == all ]]; then
  selected=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
  selected=("$target")
else
  echo "unknown target '$target' (one of: ${TARGETS[*]} all)" >&2
  exit 2
fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number" >&2; exit 2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only -Z flags; RUSTC_BOOTSTRAP lets the stable compiler accept them.
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
build_args=()
[[ ${#selected[@]} -eq 1 ]] && build_args=("${selected[0]}")
echo "== building (sanitizer $sanitizer)"
if ! nice -n 19 cargo fuzz build --sanitizer "$sanitizer" "${build_args[@]}" >/dev/null 2>/tmp/groupwatch-fuzz-build.$$; then
  if [[ "$sanitizer" != none ]]; then
    echo "== build with --sanitizer $sanitizer failed, falling back to --sanitizer none" >&2
    tail -5 /tmp/groupwatch-fuzz-build.$$ >&2
    sanitizer=none
  else
    cat /tmp/groupwatch-fuzz-build.$$ >&2
    exit 1
  fi
fi
rm -f /tmp/groupwatch-fuzz-build.$$

status=0
summary=()
for t in "${selected[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  log="fuzz/artifacts/$t/last-run.log"
  echo "== $t: ${seconds}s, sanitizer $sanitizer, log $log"
  before=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  set +e
  nice -n 19 cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
    -max_total_time="$seconds" -jobs=1 -workers=1 -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  set -e
  # With -jobs, libFuzzer's worker writes fuzz-0.log in the working directory (its content is
  # also copied into $log); keep it out of the work tree.
  [[ -f fuzz-0.log ]] && mv -f fuzz-0.log "$artifacts/worker.log"
  after=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  if [[ $rc -ne 0 || $after -gt $before ]]; then
    verdict="CRASH found (exit $rc; see $artifacts and $log)"
    status=1
  else
    verdict="no crash"
  fi
  line="$t: ${execs:-?} execs, ${rate:-?} exec/s, cov ${cov:-?}, sanitizer $sanitizer, $verdict"
  echo "   $line"
  summary+=("$line")
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
exit $status
