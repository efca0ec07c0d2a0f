#!/usr/bin/env bash
# Soak test: runs each chosen jest file N times (one jest at a time, --runInBand) beside K busy
# loops, then prints each file's pass rate, the first error line of its failures and its median
# duration. Logs of failed runs are kept in a temp dir it names. The busy loops are always killed
# on exit, error or Ctrl-C; on Ctrl-C the running jest finishes (its tests clean up after
# themselves), a second Ctrl-C kills it; nothing it started is left running.
#
#   scripts/soak.sh test/network.test.ts test/examples.test.ts --runs 10 --load 2
#
# --record FILE appends a line per run to FILE (tab-separated: UTC time, commit, file, passed or
# failed, seconds, busy loops, load average at the end), so that a table of many files can be
# built over several sittings and each run traced to the tree it ran on (a commit with `+` after
# it had uncommitted changes). Runs a signal killed are not recorded. `scripts/soak.sh --table
# FILE` prints such a record as one row per file: runs passed of runs made, at which busy-loop
# counts, the commits they ran on, and the median duration.
set -u

usage() {
  echo "usage: scripts/soak.sh FILE... [--runs N] [--load K] [--record FILE]" >&2
  exit 2
}

runs=10
load=0
record=

if [ "${1:-}" = --table ]; then
  [ $# -eq 2 ] && [ -f "$2" ] || { echo "usage: scripts/soak.sh --table RECORD" >&2; exit 2; }
  echo "| file | passed/runs | busy loops | commits | median duration |"
  echo "|---|---:|---|---|---:|"
  # Sorted by file, then duration: each file's durations arrive in order, for the median.
  sort -t$'\t' -k3,3 -k5,5n "$2" | awk -F'\t' '
    function row() {
      if (f == "") return
      m = n; med = (m % 2) ? d[(m + 1) / 2] : (d[m / 2] + d[m / 2 + 1]) / 2
      printf "| %s | %d/%d | %s | %s | %.1f s |\n", f, p, n, l, c, med
    }
    $3 != f { row(); f = $3; n = p = 0; l = c = ""; delete d; delete seenl; delete seenc }
    { n++; if ($4 == "passed") p++; d[n] = $5
      if (!($6 in seenl)) { seenl[$6]; l = l (l ? ", " : "") $6 }
      if (!($2 in seenc)) { seenc[$2]; c = c (c ? ", " : "") $2 } }
    END { row() }'
  exit 0
fi
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) [ $# -ge 2 ] || usage; runs=$2; shift 2 ;;
    --runs=*) runs=${1#--runs=}; shift ;;
    --load) [ $# -ge 2 ] || usage; load=$2; shift 2 ;;
    --load=*) load=${1#--load=}; shift ;;
    --record) [ $# -ge 2 ] || usage; record=$2; shift 2 ;;
    --record=*) record=${1#--record=}; shift ;;
    -h|--help) usage ;;
    -*) echo "soak: unknown option $1" >&2; usage ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || usage
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "soak: --runs takes a positive integer" >&2; exit 2; }
[[ $load =~ ^[0-9]+$ ]] || { echo "soak: --load takes a number of busy loops (0 or more)" >&2; exit 2; }
for f in "${files[@]}"; do [ -f "$f" ] || { echo "soak: no such file: $f" >&2; exit 2; }; done

[ -z "$record" ] || record=$(realpath -m "$record")
cd "$(dirname "$0")/.." || exit 2

# The tree a run starts on: its commit, `+` when tracked files differ from it.
tree() {
  local c
  c=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || c="$c+"
  echo "$c"
}
logs=$(mktemp -d "${TMPDIR:-/tmp}/lxq-soak-XXXXXX")
burners=()
jest_pid=

kill_burners() {
  for p in "${burners[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${burners[@]}"; do wait "$p" 2>/dev/null; done
  burners=()
}

# Everything this script started goes, whatever the way out. A jest still running here (a second
# Ctrl-C, an error) is stopped with its process group: TERM, then KILL after 10 s.
cleanup() {
  trap '' INT TERM HUP
  if [ -n "$jest_pid" ] && kill -0 "$jest_pid" 2>/dev/null; then
    kill -TERM -- "-$jest_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$jest_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$jest_pid" 2>/dev/null
    wait "$jest_pid" 2>/dev/null
  fi
  kill_burners
}
trap cleanup EXIT

# Ctrl-C: the busy loops stop at once and no further run starts; the running jest (in a process
# group of its own, so the terminal's ^C does not reach it) is left to finish, so that its tests
# delete what they made. A second Ctrl-C stops it too.
interrupted=0
on_signal() {
  if [ "$interrupted" -eq 0 ] && [ -n "$jest_pid" ]; then
    interrupted=1
    kill_burners
    echo "soak: interrupted; waiting for the running jest to finish and clean up (Ctrl-C again to kill it)" >&2
  else
    echo "soak: stopped; logs in $logs" >&2
    exit 130
  fi
}
trap on_signal INT TERM HUP

for ((k = 0; k < load; k++)); do
  ( trap - INT TERM HUP; while :; do :; done ) &
  burners+=($!)
done

echo "soak: ${#files[@]} file(s) x $runs run(s), load $load; logs of failed runs in $logs" >&2

# The first error line of a failed jest run: the first non-empty line after its first "●" header
# (console output blocks are not failures), else the last line of the log.
first_error() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '
    /^  ● / && !/● Console/ { found = 1; next }
    found && NF { sub(/^[ \t]+/, ""); print; exit }
  ' | cut -c1-160 | grep . || sed 's/\x1b\[[0-9;]*m//g' "$1" | tail -n 1 | cut -c1-160
}

summary=()
for f in "${files[@]}"; do
  base=$(basename "$f" .ts)
  passed=0
  runs_done=$runs
  durations=()
  errors=()
  for ((r = 1; r <= runs; r++)); do
    log="$logs/$base.run$r.log"
    [ -z "$record" ] || commit=$(tree)
    start=$(date +%s.%N)
    # setsid: a process group of jest's own, so that cleanup reaches its children too.
    setsid npx jest --runInBand "$f" >"$log" 2>&1 </dev/null &
    jest_pid=$!
    # wait returns early when a signal is trapped: wait again until jest itself has ended.
    while :; do
      wait "$jest_pid"
      rc=$?
      kill -0 "$jest_pid" 2>/dev/null || break
    done
    jest_pid=
    end=$(date +%s.%N)
    d=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ -n "$record" ] && [ "$rc" -lt 128 ]; then
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$f" "$([ "$rc" -eq 0 ] && echo passed || echo failed)" "$d" "$load" "$(cut -d' ' -f1 /proc/loadavg)" >>"$record"
    fi
    durations+=("$d")
    if [ "$rc" -eq 0 ]; then
      passed=$((passed + 1))
      rm -f "$log"
      echo "soak: $f run $r/$runs passed in ${d}s" >&2
    else
      e=$(first_error "$log")
      errors+=("$e")
      echo "soak: $f run $r/$runs FAILED in ${d}s (exit $rc): $e — $log" >&2
    fi
    [ "$interrupted" -eq 0 ] || { runs_done=$r; break; }
  done
  median=$(printf '%s\n' "${durations[@]}" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
  if [ ${#errors[@]} -gt 0 ]; then
    failures=$(printf '%s\n' "${errors[@]}" | sort | uniq -c | sort -rn | awk '{ n = $1; $1 = ""; sub(/^ /, ""); printf "%s%dx %s", (NR > 1 ? "; " : ""), n, $0 }')
  else
    failures="-"
  fi
  summary+=("| $f | $passed/$runs_done | ${median} s | ${failures//|/\\|} |")
  [ "$interrupted" -eq 0 ] || break
done

# The directory stays only if it holds a failed run's log.
rmdir "$logs" 2>/dev/null && kept="none (all passed)" || kept=$logs
echo
echo "Soak at load $load ($(nproc) CPUs), $(date -u +%Y-%m-%dT%H:%M:%SZ); logs of failed runs: $kept"
echo
echo "| file | passed/runs | median duration | failures (first error line) |"
echo "|---|---:|---:|---|"
printf '%s\n' "${summary[@]}"
[ "$interrupted" -eq 0 ] || { echo "(interrupted: the table covers the runs made)"; exit 130; }
exit 0
