#!/usr/bin/env bash
# Load and growth: a daemon with 300 policies at interval = "1s" (one repository of 2 tags
# each, all copied in the first seconds, no-op runs after that) for --minutes (default 10),
# between real Distribution registries on loopback. Every minute: the daemon's RSS, CPU
# seconds used in that minute, state store bytes, runs so far, and how long /status takes and
# how big it is. Then a SIGHUP storm (100 in one second) and the policy count after it.
#
#   bench/load.sh [--policies 300] [--minutes 10] [--history 50]
# Needs: cargo, docker-registry, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
POLICIES=300 MINUTES=10 HISTORY=50 OUT=/tmp/ferry-bench-load
while [ $# -gt 0 ]; do
  case "$1" in
    --policies) POLICIES=$2; shift 2 ;; --minutes) MINUTES=$2; shift 2 ;; --history) HISTORY=$2; shift 2 ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry curl
bench_build
rm -rf "$OUT"; mkdir -p "$OUT"
SRC=$(start_registry src) DST=$(start_registry dst)
"$CORPUS" --registry "http://$SRC" --prefix load/app --repos "$POLICIES" --tags 1 --base-size 16KiB \
  --repo-layer 4KiB --app-min 1KiB --app-max 2KiB --index-every 0 --seed 5 >/dev/null
PORT=$(free_port)
mkdir -p "$OUT/ferry/policies"
printf '[daemon]\nstate_dir = "state"\nlisten = "127.0.0.1:%s"\nrun_history = %s\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' \
  "$PORT" "$HISTORY" "$SRC" "$DST" >"$OUT/ferry/ferry.toml"
for i in $(seq 0 $((POLICIES - 1))); do
  printf '[[policy]]\nname = "p%03d"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["load/app-%03d"]\ninterval = "1s"\n' "$i" "$i"
done >"$OUT/ferry/policies/all.toml"
"$FERRY" --config "$OUT/ferry/ferry.toml" -q daemon 2>"$OUT/daemon.log" & DPID=$!; echo $DPID >"$OUT/daemon.pid"
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
status_probe() {  # seconds and bytes of one GET /status
  curl -s -o "$OUT/status.json" -w '%{time_total} %{size_download}' "http://127.0.0.1:$PORT/status"
}
echo "== $POLICIES policies, interval 1s, run_history $HISTORY, $MINUTES minutes"
printf '%4s %9s %9s %11s %9s %14s\n' min rss_KiB cpu_s state_bytes runs status_s/bytes
c0=$(cpu)
for m in $(seq 1 "$MINUTES"); do
  sleep 60
  c1=$(cpu)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$DPID/status")
  runs=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ferry_policy_runs_total/{s+=$2} END{print s}')
  printf '%4d %9d %9.1f %11d %9d %14s\n' "$m" "$rss" "$(echo "($c1-$c0)/$ticks" | bc -l)" "$(du -sb "$OUT/ferry/state" | cut -f1)" "$runs" "$(status_probe)"
  c0=$c1
done
echo "peak RSS $(awk '/VmHWM/{print $2}' "/proc/$DPID/status") KiB"
copied=0
for i in $(seq 0 $((POLICIES - 1))); do [ -n "$(digest "$DST" "load/app-$(printf %03d "$i")" 1.0.0)" ] && copied=$((copied + 1)); done
echo "target: $copied of $POLICIES repositories hold their tag"

echo "== SIGHUP storm: 100 in one second, the policy file flipping between $POLICIES and $((POLICIES / 2)) policies"
cp "$OUT/ferry/policies/all.toml" "$OUT/all.toml"
head -n $((POLICIES / 2 * 6)) "$OUT/all.toml" >"$OUT/half.toml"
for i in $(seq 1 100); do
  if [ $((i % 2)) = 1 ]; then cp "$OUT/half.toml" "$OUT/ferry/policies/all.toml"; else cp "$OUT/all.toml" "$OUT/ferry/policies/all.toml"; fi
  kill -HUP $DPID; sleep 0.01
done
cp "$OUT/half.toml" "$OUT/ferry/policies/all.toml"; kill -HUP $DPID
for _ in $(seq 1 120); do
  n=$(curl -s "http://127.0.0.1:$PORT/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["policies"]))' 2>/dev/null || echo 0)
  [ "$n" = $((POLICIES / 2)) ] && break; sleep 0.5
done
echo "after the storm: $n policies running (want $((POLICIES / 2))), daemon $(kill -0 $DPID && echo alive), RSS $(awk '/VmRSS/{print $2}' "/proc/$DPID/status") KiB"
kill -TERM $DPID; wait $DPID || true
