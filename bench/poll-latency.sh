#!/usr/bin/env bash
# Push-to-target latency by polling alone (no events): one policy with interval = "5s"
# between two local Distribution registries; push a new tag, time until the target has it;
# --reps times (default 7); prints each and the median. (bench/events.sh measures the same
# with webhooks, bench/idle.sh what an idle daemon costs.)
# Needs: cargo, docker-registry, curl, bc (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=7 OUT=/tmp/ferry-bench-poll
while [ $# -gt 0 ]; do
  case "$1" in --reps) REPS=$2; shift 2 ;; *) sed -n '2,6p' "$0"; exit 2 ;; esac
done
source bench/lib.sh
bench_needs docker-registry curl bc
bench_build
rm -rf "$OUT"; mkdir -p "$OUT/ferry/policies"
SRC=$(start_registry src); DST=$(start_registry dst)
image() { "$CORPUS" --registry "http://$SRC" --prefix poll/app --repos 1 --tags "$1" --base-size 256KiB --repo-layer 64KiB --app-min 16KiB --app-max 64KiB --index-every 0 >/dev/null; }
image 2
printf '[daemon]\nstate_dir = "state"\nlisten = "127.0.0.1:%s"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$(free_port)" "$SRC" "$DST" >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "fast"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["poll/app-000"]\ninterval = "5s"\n' >"$OUT/ferry/policies/fast.toml"
"$FERRY" --config "$OUT/ferry/ferry.toml" -q daemon 2>"$OUT/daemon.log" & echo $! >"$OUT/daemon.pid"
sleep 3
lat=()
for r in $(seq 1 "$REPS"); do
  image $((2 + r))
  t0=$(date +%s.%N); tag="1.$((1 + r)).0"
  until curl -sfI -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$DST/v2/poll/app-000/manifests/$tag"; do sleep 0.05; done
  lat+=("$(echo "$(date +%s.%N) - $t0" | bc)")
  echo "  push→target latency rep $r: ${lat[-1]} s"
  sleep "0.$((RANDOM % 10))"
done
printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END{print "push→target with interval 5s: median " a[int((NR+1)/2)] " s, min " a[1] " s, max " a[NR] " s"}'
