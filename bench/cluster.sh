#!/usr/bin/env bash
# Cluster mode figures: --members daemons (default 3) sharing --policies policies (default
# 300, one repository each, interval 10s) through a local etcd, between real Distribution
# registries on loopback.
#   1. first copy of every repository: time; each tag written once (target access log);
#   2. idle minute: CPU seconds and RSS per member; etcd requests per second per member
#      (ferry's own count, and etcd's gRPC request count divided by the members);
#   3. failover, --trials times (default 3): kill -9 of a member holding a probe policy, then a
#      new `latest` pushed to that policy's repository: seconds until the target has it
#      (lease_ttl 5s); the member is restarted and takes its share back between trials;
#   4. events through the cluster: a second source registry notifies a member that does not
#      own the event policy, so every event crosses etcd to the owner: push → tag on the
#      target, --pushes small images one at a time (p50, p95, max);
#   5. every tag written once over the whole run (target access log: PUT per repo:tag). The
#      Distribution access log does not say which member sent a request, so "no policy run
#      twice at once" shows as no tag written twice, across the kills and restarts.
#
#   bench/cluster.sh [--policies 300] [--members 3] [--trials 3] [--pushes 30]
# Needs: cargo, docker-registry, etcd (etcd-server), curl, bc (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
POLICIES=300 MEMBERS=3 TRIALS=3 PUSHES=30 OUT=/tmp/ferry-bench-cluster
while [ $# -gt 0 ]; do
  case "$1" in
    --policies) POLICIES=$2; shift 2 ;; --members) MEMBERS=$2; shift 2 ;; --trials) TRIALS=$2; shift 2 ;;
    --pushes) PUSHES=$2; shift 2 ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry curl bc etcd=etcd-server
bench_build events_bench
BENCH="$PWD/target/release/examples/events_bench"
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
rm -rf "$OUT"; mkdir -p "$OUT"
EP=$(free_port) PP=$(free_port)
etcd --name b --data-dir "$OUT/etcd" --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
  --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" --initial-cluster "b=http://127.0.0.1:$PP" \
  --log-level warn >"$OUT/etcd.log" 2>&1 & echo $! >"$OUT/etcd.pid"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$EP/health" | grep -q true && break; sleep 0.1; done
SRC=$(start_registry src) DST=$(start_registry dst)
EVPORT=$(free_port)   # the notifying source starts once the event policy's owner is known
PROBES=10
"$CORPUS" --registry "http://$SRC" --prefix load/app --repos "$POLICIES" --tags 1 --base-size 16KiB \
  --repo-layer 4KiB --app-min 1KiB --app-max 2KiB --index-every 0 --seed 5 >/dev/null
for i in $(seq 0 $((PROBES - 1))); do
  "$CORPUS" --registry "http://$SRC" --prefix "probe/r$i" --repos 1 --tags 1 --base-size 4KiB --repo-layer 1KiB --app-min 1KiB --app-max 1KiB --index-every 0 --seed 1 >/dev/null
done
mkdir -p "$OUT/policies"
for i in $(seq 0 $((POLICIES - 1))); do
  printf '[[policy]]\nname = "p%03d"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["load/app-%03d"]\ninterval = "10s"\n' "$i" "$i"
done >"$OUT/policies/all.toml"
for i in $(seq 0 $((PROBES - 1))); do
  printf '[[policy]]\nname = "probe%d"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["probe/r%d-000"]\ninterval = "10s"\n' "$i" "$i"
done >"$OUT/policies/probes.toml"
printf '[[policy]]\nname = "ev"\nsource = "evsrc"\ntargets = ["dst"]\nrepositories = ["bench/events"]\nschedule = "0 0 1 1 *"\nevents = true\n' >"$OUT/policies/ev.toml"
declare -a PORT PID
for m in $(seq 1 "$MEMBERS"); do
  PORT[$m]=$(free_port)
  mkdir -p "$OUT/m$m"
  printf '%s\n' "$TOKEN" >"$OUT/m$m/token"
  printf '[daemon]\nstate_dir = "state"\npolicies = "../policies"\nlisten = "127.0.0.1:%s"\napi_token_file = "token"\n[registries.src]\nurl = "http://%s"\n[registries.evsrc]\nurl = "http://127.0.0.1:%s"\n[registries.dst]\nurl = "http://%s"\n[cluster]\netcd = ["http://127.0.0.1:%s"]\nmember = "m%s"\nlease_ttl = "5s"\n' \
    "${PORT[$m]}" "$SRC" "$EVPORT" "$DST" "$EP" "$m" >"$OUT/m$m/ferry.toml"
done
start_member() {
  "$FERRY" --config "$OUT/m$1/ferry.toml" -q daemon 2>>"$OUT/m$1/daemon.log" & PID[$1]=$!; echo "${PID[$1]}" >"$OUT/m$1.pid"
  disown "${PID[$1]}"   # killed on purpose below: no "Killed" line from bash
}
ready() { for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${PORT[$1]}/readyz" >/dev/null && return; sleep 0.1; done; echo "m$1 not ready" >&2; exit 1; }
settled() {  # every member holds exactly what rendezvous hashing gives it
  curl -sf "http://127.0.0.1:${PORT[$1]}/status" | python3 -c '
import json,sys; c=json.load(sys.stdin)["cluster"]; ms=c["members"]
ok = len(ms)=='"$2"' and all(sorted(m["holds"])==sorted(m["owns"]) for m in ms) and sum(len(m["holds"]) for m in ms)=='"$((POLICIES + PROBES + 1))"'
sys.exit(0 if ok else 1)'
}
t0=$(date +%s.%N)
for m in $(seq 1 "$MEMBERS"); do start_member "$m"; done
for m in $(seq 1 "$MEMBERS"); do ready "$m"; done
copied() { [ "$(awk '/"PUT \/v2\/load\/app-[0-9]*\/manifests\/[^s]/' "$OUT/reg-dst/access.log" | wc -l)" -ge "$((POLICIES * 2))" ]; }
for _ in $(seq 1 600); do copied && break; sleep 0.5; done
echo "== 1. first copy: $POLICIES repositories (2 tags each) by $MEMBERS members in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s"
for _ in $(seq 1 100); do settled 1 "$MEMBERS" && break; sleep 0.2; done
metric() { curl -sf "http://127.0.0.1:${PORT[$1]}/metrics" | awk -v n="$2" '$1 ~ "^"n {s+=$2} END{print s+0}'; }
# Messages etcd received: unary requests and each keepalive on the lease stream alike.
etcd_requests() { curl -sf "http://127.0.0.1:$EP/metrics" | awk '/^grpc_server_msg_received_total/{s+=$2} END{print s+0}'; }
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/${PID[$1]}/stat"; }
sleep 15
echo "== 2. idle minute ($((POLICIES + PROBES)) policies at 10s, 1 on events)"
declare -a C0 R0
for m in $(seq 1 "$MEMBERS"); do C0[$m]=$(cpu "$m"); R0[$m]=$(metric "$m" ferry_cluster_etcd_requests_total); done
E0=$(etcd_requests)
sleep 60
E1=$(etcd_requests)
for m in $(seq 1 "$MEMBERS"); do
  printf 'm%s: holds %s policies, CPU %.1f s/min, RSS %s KiB, etcd requests %.2f/s (own count)\n' "$m" \
    "$(metric "$m" ferry_cluster_owned_units)" "$(echo "($(cpu "$m") - ${C0[$m]}) / $ticks" | bc -l)" \
    "$(awk '/VmRSS/{print $2}' "/proc/${PID[$m]}/status")" "$(echo "($(metric "$m" ferry_cluster_etcd_requests_total) - ${R0[$m]}) / 60" | bc -l)"
done
printf 'etcd side: %.2f gRPC messages/s received in all, %.2f per member\n' "$(echo "($E1 - $E0) / 60" | bc -l)" "$(echo "($E1 - $E0) / 60 / $MEMBERS" | bc -l)"

echo "== 3. failover after kill -9 (lease_ttl 5s)"
for t in $(seq 1 "$TRIALS"); do
  # A member holding a probe policy, and that policy.
  read -r victim probe < <(curl -sf "http://127.0.0.1:${PORT[1]}/status" | python3 -c '
import json,sys
for m in json.load(sys.stdin)["cluster"]["members"]:
    p=[h for h in m["holds"] if h.startswith("probe")]
    if p and m["name"]!="m1": print(m["name"][1:], p[0]); break')
  i=${probe#probe}
  kill -9 "${PID[$victim]}"; k=$(date +%s.%N)
  "$CORPUS" --registry "http://$SRC" --prefix "probe/r$i" --repos 1 --tags 1 --base-size 4KiB --repo-layer 1KiB --app-min 1KiB --app-max 1KiB --index-every 0 --seed $((100 + t)) >/dev/null
  want=$(digest "$SRC" "probe/r$i-000" latest)
  for _ in $(seq 1 600); do [ "$(digest "$DST" "probe/r$i-000" latest)" = "$want" ] && break; sleep 0.05; done
  printf 'trial %s: m%s killed holding %s: new tag on the target %.2f s after the kill\n' "$t" "$victim" "$probe" "$(echo "$(date +%s.%N) - $k" | bc)"
  start_member "$victim"; ready "$victim"
  for _ in $(seq 1 200); do settled 1 "$MEMBERS" && break; sleep 0.2; done
done

echo "== 4. events through the cluster"
owner=$(curl -sf "http://127.0.0.1:${PORT[1]}/status" | python3 -c '
import json,sys
print([m["name"] for m in json.load(sys.stdin)["cluster"]["members"] if "ev" in m["holds"]][0][1:])')
notified=$(( owner % MEMBERS + 1 ))
mkdir -p "$OUT/reg-evsrc/data"
cat >"$OUT/reg-evsrc/config.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $OUT/reg-evsrc/data}}
http: {addr: "127.0.0.1:$EVPORT", secret: ferry-bench-evsrc}
notifications:
  endpoints:
    - name: ferry
      url: http://127.0.0.1:${PORT[$notified]}/v1/events/distribution/evsrc
      headers: {Authorization: [Bearer $TOKEN]}
      timeout: 2s
      threshold: 3
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
      ignore: {actions: [pull]}
YML
docker-registry serve "$OUT/reg-evsrc/config.yml" >"$OUT/reg-evsrc/app.log" 2>&1 </dev/null & echo $! >"$OUT/reg-evsrc/pid"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$EVPORT/v2/" >/dev/null && break; sleep 0.1; done
echo "policy ev held by m$owner; the source notifies m$notified"
"$BENCH" latency --source "http://127.0.0.1:$EVPORT" --target "http://$DST" --pushes "$PUSHES"

echo "== 5. tag writes (load/ repositories; the probes' tags are rewritten on purpose each trial)"
awk '/"PUT \/v2\/load\// { if (match($0, /"PUT \/v2\/[^ ]*\/manifests\/[^ ]*/)) { p=substr($0, RSTART+5, RLENGTH-5); if (p !~ /manifests\/sha256:/) n[p]++ } }
     END { twice=0; for (k in n) if (n[k]>1) { twice++; print "written " n[k] " times: " k }; print length(n) " tags written, " twice " more than once" }' "$OUT/reg-dst/access.log"
for m in $(seq 1 "$MEMBERS"); do echo "m$m peak RSS $(awk '/VmHWM/{print $2}' "/proc/${PID[$m]}/status") KiB"; done
