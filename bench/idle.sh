#!/usr/bin/env bash
# An idle daemon: 50 event policies (one repository of 2 tags each, nothing to copy after the
# first run) reconciled every --interval (default 60s, jitter 10s), over --seconds (default
# 180): CPU seconds per hour (perf's task-clock when perf is installed, which counts exactly;
# else the kernel's tick counts), resident and anonymous memory, and runs.
#
#   bench/idle.sh [--seconds 180] [--interval 60s] [--reference REV]
#
# --reference REV builds the git revision REV too (in a worktree under target/) and runs it
# beside this build, each with its own target registry, so that both see the same machine:
# a VM's speed varies by several times from one day to the next, so a figure alone says
# little. A build from before events gets the same policies without `events` and the token.
# Needs: cargo, git, docker-registry, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=180 EVERY=60s REF="" OUT=/tmp/ferry-bench-idle
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS=$2; shift 2 ;; --interval) EVERY=$2; shift 2 ;; --reference) REF=$2; shift 2 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry curl
bench_build
rm -rf "$OUT"; mkdir -p "$OUT"
names=(this) bins=("$FERRY")
if [ -n "$REF" ]; then
  bench_reference "$REF" "$OUT/ferry-reference"
  names+=(reference) bins+=("$OUT/ferry-reference")
fi

SRC=$(start_registry src)
"$CORPUS" --registry "http://$SRC" --prefix idle/app --repos 50 --tags 2 --base-size 256KiB --repo-layer 64KiB \
  --app-min 16KiB --app-max 64KiB --index-every 0 >/dev/null

# config DIR PORT TARGET DAEMON_EXTRA POLICY_EXTRA
config() {
  rm -rf "$1/policies"; mkdir -p "$1/policies"
  printf '[daemon]\nstate_dir = "state"\nlisten = "127.0.0.1:%s"\n%b[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' \
    "$2" "$4" "$SRC" "$3" >"$1/ferry.toml"
  for i in $(seq 0 49); do
    printf '[[policy]]\nname = "p%02d"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["idle/app-%03d"]\ninterval = "%s"\njitter = "10s"\n%b' \
      "$i" "$i" "$EVERY" "$5" >"$1/policies/p$i.toml"
  done
}
# start NAME BINARY: a daemon with its own target registry and state; its pid in $OUT/NAME.pid.
start() {
  local dir="$OUT/$1" port dst
  port=$(free_port); dst=$(start_registry "dst-$1")
  mkdir -p "$dir"; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
  config "$dir" "$port" "$dst" 'api_token_file = "token"\n' 'events = true\n'
  "$2" --config "$dir/ferry.toml" validate >/dev/null 2>&1 || config "$dir" "$port" "$dst" '' ''
  "$2" --config "$dir/ferry.toml" -q daemon 2>"$dir/daemon.log" & echo $! >"$OUT/$1.pid"
  echo "$port" >"$dir/port"
}
for i in "${!names[@]}"; do start "${names[$i]}" "${bins[$i]}"; done
sleep 30   # first runs copy everything; after that every run is a no-op

ticks() { awk '{print $14 + $15}' "/proc/$(cat "$OUT/$1.pid")/stat"; }
perfs=()
for n in "${names[@]}"; do
  ticks "$n" >"$OUT/$n/ticks0"
  if command -v perf >/dev/null; then
    perf stat -x, -e task-clock -p "$(cat "$OUT/$n.pid")" -o "$OUT/$n/perf" -- sleep "$SECS" 2>/dev/null & perfs+=($!)
  fi
done
sleep "$SECS"; [ ${#perfs[@]} = 0 ] || wait "${perfs[@]}"
for n in "${names[@]}"; do
  pid=$(cat "$OUT/$n.pid")
  if [ -s "$OUT/$n/perf" ]; then
    cpu="$(awk -F, '/task-clock/{printf "%.1f", $1/1000*3600/'"$SECS"'}' "$OUT/$n/perf") CPU-s/h (task-clock)"
  else
    cpu="$(echo "scale=1; ($(ticks "$n") - $(cat "$OUT/$n/ticks0")) / $(getconf CLK_TCK) * 3600 / $SECS" | bc) CPU-s/h (ticks)"
  fi
  mem=$(awk '/^Rss:/{r=$2} /^Anonymous:/{a=$2} END{printf "RSS %.1f MiB, anonymous %.1f MiB", r/1024, a/1024}' "/proc/$pid/smaps_rollup")
  runs=$(curl -s "http://127.0.0.1:$(cat "$OUT/$n/port")/metrics" | awk '/^ferry_policy_runs_total/{s+=$2} END{print s+0}')
  label="this build"; [ "$n" = reference ] && label="$REF"
  echo "idle, 50 policies at $EVERY, ${SECS} s: $label: $cpu, $mem, $runs runs so far"
done
