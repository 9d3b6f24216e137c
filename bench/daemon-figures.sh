#!/usr/bin/env bash
# Figures for the daemon, on two local Distribution registries:
#   1. 50 policies (one repository each, interval 60s), nothing to copy after the first run:
#      CPU seconds per hour and resident memory of the daemon, over --seconds (default 180).
#   2. Push-to-target latency with interval = "5s": push a new tag, time until the target has
#      it; --reps times (default 7); prints each and the median.
# Needs: cargo, docker-registry, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_IDLE=180 REPS=7 OUT=/tmp/ferry-daemon-bench
while [ $# -gt 0 ]; do
  case "$1" in --seconds) SECONDS_IDLE=$2; shift 2 ;; --reps) REPS=$2; shift 2 ;; *) sed -n '2,9p' "$0"; exit 2 ;; esac
done
cargo build --quiet --release --bin ferry --example corpus
FERRY="$PWD/target/release/ferry" CORPUS="$PWD/target/release/examples/corpus"
rm -rf "$OUT"; mkdir -p "$OUT"
cleanup() { for f in "$OUT"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; }
trap cleanup EXIT
start_registry() {
  mkdir -p "$OUT/$1/data"
  printf 'version: 0.1\nlog: {level: info, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "127.0.0.1:0", secret: x}\n' "$OUT/$1/data" >"$OUT/$1/config.yml"
  docker-registry serve "$OUT/$1/config.yml" >"$OUT/$1/log" 2>&1 </dev/null & echo $! >"$OUT/$1.pid"
  for _ in $(seq 1 100); do a=$(grep -o 'listening on [0-9.:]*' "$OUT/$1/log" | cut -d' ' -f3 || true); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.1; done
  exit 1
}
SRC=$(start_registry src); DST=$(start_registry dst)
"$CORPUS" --registry "http://$SRC" --prefix idle/app --repos 50 --tags 2 --base-size 256KiB --repo-layer 64KiB --app-min 16KiB --app-max 64KiB --index-every 0
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$OUT/ferry/policies"
printf '[daemon]\nstate_dir = "state"\nlisten = "127.0.0.1:%s"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$PORT" "$SRC" "$DST" >"$OUT/ferry/ferry.toml"
for i in $(seq 0 49); do
  printf '[[policy]]\nname = "p%02d"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["idle/app-%03d"]\ninterval = "60s"\njitter = "10s"\n' "$i" "$i" >"$OUT/ferry/policies/p$i.toml"
done
"$FERRY" --config "$OUT/ferry/ferry.toml" -q daemon 2>"$OUT/daemon.log" & DPID=$!; echo $DPID >"$OUT/daemon.pid"
sleep 20   # first runs copy everything; after that every run is a no-op
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
c0=$(cpu); sleep "$SECONDS_IDLE"; c1=$(cpu)
rss=$(awk '/VmRSS/{print $2}' "/proc/$DPID/status"); hwm=$(awk '/VmHWM/{print $2}' "/proc/$DPID/status")
runs=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ferry_policy_runs_total/{s+=$2} END{print s}')
echo "idle, 50 policies (interval 60s, nothing to copy): $(echo "scale=2; ($c1-$c0)/$ticks*3600/$SECONDS_IDLE" | bc) CPU s/hour; RSS ${rss} KiB (peak ${hwm} KiB); $runs runs so far"
kill -TERM $DPID; wait $DPID || true

printf '[[policy]]\nname = "fast"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["idle/app-000"]\ninterval = "5s"\n' >"$OUT/ferry/policies/p0.toml"
rm -f "$OUT"/ferry/policies/p[1-9]*.toml
"$FERRY" --config "$OUT/ferry/ferry.toml" -q daemon 2>>"$OUT/daemon.log" & DPID=$!; echo $DPID >"$OUT/daemon.pid"
sleep 3
lat=()
for r in $(seq 1 "$REPS"); do
  "$CORPUS" --registry "http://$SRC" --prefix idle/app --repos 1 --tags $((2 + r)) --base-size 256KiB --repo-layer 64KiB --app-min 16KiB --app-max 64KiB --index-every 0 >/dev/null
  t0=$(date +%s.%N); tag="1.$((1 + r)).0"
  until curl -sfI -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$DST/v2/idle/app-000/manifests/$tag"; do sleep 0.05; done
  lat+=("$(echo "$(date +%s.%N) - $t0" | bc)")
  echo "  push→target latency rep $r: ${lat[-1]} s"
  sleep "0.$((RANDOM % 10))"
done
printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END{print "push→target with interval 5s: median " a[int((NR+1)/2)] " s, min " a[1] " s, max " a[NR] " s"}'
kill -TERM $DPID; wait $DPID || true
