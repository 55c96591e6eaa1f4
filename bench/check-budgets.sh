#!/usr/bin/env bash
# Runs the iai-callgrind benches (bench/benches/instructions.rs: codec, fan-out, DHT table;
# bench/benches/instructions_trie.rs: the pattern trie) and fails when one of them executes
# more instructions than bench/budgets.toml allows (budget × (1 + tolerance)).
#
#   bench/check-budgets.sh            check everything (exit 1 on a regression, a new bench
#                                     without a budget, or a budget whose bench is gone)
#   bench/check-budgets.sh --quick    only instructions.rs (about a minute; what CI runs)
#   bench/check-budgets.sh --update   rewrite the budgets with the counts just measured
#   BUDGETS_OUTPUT=file               reuse a saved run instead of running the benches
#
# Needs valgrind and iai-callgrind-runner 0.16.1 (installed here when missing). The full run
# takes about ten minutes on 2 cores, most of it building the 100K-pattern tries under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
budgets=bench/budgets.toml
runner_version=0.16.1
update=false
quick=false
for arg in "$@"; do
  case "$arg" in
    --update) update=true ;;
    --quick) quick=true ;;
    *) echo "usage: bench/check-budgets.sh [--quick] [--update]" >&2; exit 2 ;;
  esac
done
if $quick && $update; then
  echo "--update needs the full run (it rewrites every budget)" >&2; exit 2
fi
benches=(--bench instructions)
$quick || benches+=(--bench instructions_trie)

if [ -z "${BUDGETS_OUTPUT:-}" ]; then
  command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
  if ! iai-callgrind-runner --version 2>/dev/null | grep -qF "$runner_version"; then
    echo "installing iai-callgrind-runner $runner_version (must match the iai-callgrind crate)" >&2
    cargo install iai-callgrind-runner --version "$runner_version" --locked
  fi
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  cargo bench -p fovea-bench "${benches[@]}" --locked 2>&1 | tee "$out" >&2
else
  out=$BUDGETS_OUTPUT
fi

# "FILE::GROUP::FUNCTION ID:setup(args)" then "  Instructions: N|..." → "GROUP::FUNCTION::ID N"
measured=$(awk '
  /^instructions(_trie)?::/ { split($2, id, ":"); name = $1; sub(/^[a-z_]+::/, "", name); name = name "::" id[1]; next }
  /^ *Instructions:/ && name != "" { split($2, n, "|"); print name, n[1]; name = "" }
' "$out" | sort)
[ -n "$measured" ] || { echo "no instruction counts found in the bench output" >&2; exit 2; }

# The design targets, reported (not enforced: budgets are). Per-match cost is the slope between
# the deep miss and the 8-match topic of the depth-5, 100K-pattern target trie.
echo "$measured" | awk '
  { n[$1] = $2 }
  function show(what, value, limit) {
    printf "target %-58s %6d  <= %5d  %s\n", what, value, limit, value <= limit ? "met" : "MISSED"
  }
  END {
    print ""
    show("decode PUBLISH, 64 B payload", n["codec::decode_publish::b64"], 150)
    show("fan-out planning, per subscriber (1,000 subscribers)", n["fanout::plan::n1000"] / 1000, 100)
    show("fan-out planning, per subscriber (10,000 subscribers)", n["fanout::plan::n10000"] / 10000, 100)
    show("encode DELIVER, per connection (head), 64 B", n["codec::encode_deliver_head::b64"], 200)
    show("encode DELIVER, whole (head + tail), 64 B", n["codec::encode_deliver_head::b64"] + n["codec::encode_deliver_tail::b64"], 200)
    for (w = 0; w <= 10 && ("trie_target::target_match::w0_miss_deep" in n); w += 10) {
      miss = n["trie_target::target_match::w" w "_miss_deep"]
      many = n["trie_target::target_match::w" w "_hit_many"]
      show("trie match, depth 5, 100K, w" w ", nothing matches", miss, 1500)
      show("trie match, depth 5, 100K, w" w ", per match", (many - miss) / 8, 300)
    }
    print ""
  }
' >&2

if $update; then
  tolerance=$(awk -F' *= *' '/^tolerance_percent/ { print $2 }' "$budgets" 2>/dev/null || true)
  {
    echo "# Instruction budgets of the iai-callgrind benches in bench/benches/instructions.rs."
    echo "# Written by \`bench/check-budgets.sh --update\` from the counts of one run; the check"
    echo "# fails when a bench exceeds its count by more than tolerance_percent."
    echo "# Counts repeat exactly run to run (the bench tries and caches use a fixed hash seed); the"
    echo "# tolerance absorbs toolchain and valgrind differences between machines."
    echo "tolerance_percent = ${tolerance:-3}"
    echo
    echo "[instructions]"
    echo "$measured" | awk '{ printf "\"%s\" = %s\n", $1, $2 }'
  } > "$budgets"
  echo "wrote $(echo "$measured" | wc -l) budgets to $budgets" >&2
  exit 0
fi

echo "$measured" | awk -v budgets="$budgets" -v quick="$quick" '
  BEGIN {
    while ((getline line < budgets) > 0) {
      if (line ~ /^tolerance_percent/) { sub(/.*= */, "", line); tolerance = line + 0 }
      else if (line ~ /^"/) {
        split(line, kv, "\" = "); key = substr(kv[1], 2); budget[key] = kv[2] + 0
      }
    }
    failed = 0
  }
  {
    seen[$1] = 1
    if (!($1 in budget)) { printf "NEW   %-60s %8d (no budget: run --update)\n", $1, $2; failed = 1; next }
    limit = budget[$1] * (1 + tolerance / 100)
    change = budget[$1] ? 100 * ($2 - budget[$1]) / budget[$1] : 0
    status = $2 > limit ? "OVER " : "ok   "
    if ($2 > limit) failed = 1
    printf "%s %-60s %8d  budget %8d  %+6.1f%%\n", status, $1, $2, budget[$1], change
  }
  END {
    for (key in budget) {
      if (key in seen) continue
      if (quick == "true" && key ~ /^trie(_target)?::/) continue
      printf "GONE  %s (budget without a bench)\n", key; failed = 1
    }
    if (failed) { print "instruction budgets: FAILED"; exit 1 }
    print "instruction budgets: all within " tolerance "%"
  }
'
