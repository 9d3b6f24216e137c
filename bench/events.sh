#!/usr/bin/env bash
# Figures for webhook-driven replication (issue: events), on local Distribution registries:
#   1. push → tag on the target: a source registry notifies the daemon (Distribution's
#      `notifications.endpoints`), the policy's schedule is months away, so only the event
#      explains the copy. --pushes small images, one at a time: p50, p95, max.
#   2. webhook intake: --posts POSTs of Distribution envelopes (new event id each, 100 tags),
#      64 at a time: accepted per second, and the daemon's peak RSS after it.
# What an idle daemon with 50 event policies costs: bench/idle.sh (--interval 1h for a
# reconcile that events make possible).
# Needs: cargo, docker-registry, curl, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
PUSHES=30 POSTS=10000 OUT=/tmp/ferry-events-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --pushes) PUSHES=$2; shift 2 ;; --posts) POSTS=$2; shift 2 ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
cargo build --quiet --release --bin ferry --example corpus --example events_bench
FERRY="$PWD/target/release/ferry" CORPUS="$PWD/target/release/examples/corpus" BENCH="$PWD/target/release/examples/events_bench"
rm -rf "$OUT"; mkdir -p "$OUT"
cleanup() { for f in "$OUT"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; }
trap cleanup EXIT
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# start_registry NAME [NOTIFY_URL]: prints host:port
start_registry() {
  mkdir -p "$OUT/$1/data"
  local notify=""
  [ -n "${2:-}" ] && notify="notifications:
  endpoints:
    - name: ferry
      url: $2
      headers:
        Authorization: [Bearer $TOKEN]
      timeout: 2s
      threshold: 3
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
      ignore:
        actions: [pull]"
  printf 'version: 0.1\nlog: {level: info, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "127.0.0.1:0", secret: x}\n%s\n' "$OUT/$1/data" "$notify" >"$OUT/$1/config.yml"
  docker-registry serve "$OUT/$1/config.yml" >"$OUT/$1/log" 2>&1 </dev/null & echo $! >"$OUT/$1.pid"
  for _ in $(seq 1 100); do a=$(grep -o 'listening on [0-9.:]*' "$OUT/$1/log" | cut -d' ' -f3 || true); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.1; done
  echo "registry $1 did not start" >&2; exit 1
}
SRC=$(start_registry src "http://127.0.0.1:$PORT/v1/events/distribution/src"); DST=$(start_registry dst)
mkdir -p "$OUT/ferry/policies"
printf '%s\n' "$TOKEN" >"$OUT/ferry/token"
printf '[daemon]\nstate_dir = "state"\nlisten = "127.0.0.1:%s"\napi_token_file = "token"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$PORT" "$SRC" "$DST" >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "edge"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["bench/events"]\nschedule = "0 0 1 1 *"\nevents = true\n' >"$OUT/ferry/policies/edge.toml"
start_daemon() {
  "$FERRY" --config "$OUT/ferry/ferry.toml" -q daemon 2>>"$OUT/daemon.log" & DPID=$!; echo $DPID >"$OUT/daemon.pid"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  echo "daemon not ready" >&2; exit 1
}
kb() { awk "/$1/{print \$2}" "/proc/$DPID/status"; }

echo "== 1. push → target, events only"
start_daemon
"$BENCH" latency --source "http://$SRC" --target "http://$DST" --pushes "$PUSHES"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^ferry_event_to_replicated_seconds_(sum|count)|^ferry_events_received_total'

echo "== 2. webhook intake"
echo "daemon RSS before: $(kb VmRSS) KiB"
"$BENCH" load --url "http://127.0.0.1:$PORT/v1/events/distribution/src" --token "$TOKEN" --posts "$POSTS"
echo "daemon RSS after: $(kb VmRSS) KiB, peak $(kb VmHWM) KiB; state store $(du -sh "$OUT/ferry/state" | cut -f1)"
kill -TERM "$DPID"; wait "$DPID" || true

