#!/usr/bin/env bash
# A source that rations pulls the way Docker Hub does (examples/ration_proxy.rs in front of a
# real registry: `--budget` manifest GETs per `--window` seconds, RateLimit-* headers, 429
# without Retry-After past the budget; HEADs free). ferry and skopeo copy the same corpus
# through it, each with a fresh budget.
#
#   bench/ratelimit.sh [--repos 10] [--tags 5] [--budget 30] [--window 10]
#
# Prints wall time, pulls counted and refused (429) by the proxy, and the floor: counted
# pulls ÷ budget × window, the least time any client needs. Checks every target tag.
# Needs: cargo, docker-registry, skopeo, GNU time, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=10 TAGS=5 BUDGET=30 WINDOW=10 OUT=/tmp/ferry-bench-ratelimit
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;; --budget) BUDGET=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry skopeo curl bc
bench_build ration_proxy
PROXY="$PWD/target/release/examples/ration_proxy"
rm -rf "$OUT"; mkdir -p "$OUT"

SRC=$(start_registry src)
"$CORPUS" --registry "http://$SRC" --prefix rl/app --repos "$REPOS" --tags "$TAGS" --base-size 1MiB \
  --repo-layer 256KiB --app-min 16KiB --app-max 128KiB --index-every 5 --seed 7 >/dev/null
echo "== $REPOS repos x $TAGS tags; the source allows $BUDGET pulls per ${WINDOW}s"

proxy() {  # proxy NAME: a fresh rationing proxy (a fresh budget); prints its address
  "$PROXY" --upstream "$SRC" --budget "$BUDGET" --window "$WINDOW" >"$OUT/proxy-$1.out" 2>&1 &
  echo $! >"$OUT/proxy-$1.pid"
  for _ in $(seq 1 50); do grep -q listening "$OUT/proxy-$1.out" 2>/dev/null && break; sleep 0.1; done
  grep -m1 listening "$OUT/proxy-$1.out" | cut -d' ' -f3
}
run() {  # run NAME CMD...: time, then the proxy's counts once it has reported after the end
  local status=ok
  /usr/bin/time -f %e -o "$OUT/time-$1" "${@:2}" >"$OUT/log-$1" 2>&1 || status="FAILED (exit $?)"
  sleep 1.2
  read -r _ counted _ refused < <(grep counted "$OUT/proxy-$1.out" | tail -1)
  printf '%-7s %7.2f s wall, %4d pulls counted, %4d refused, floor %6.1f s: %s\n' "$1" "$(cat "$OUT/time-$1")" "$counted" "$refused" \
    "$(echo "scale=1; $counted / $BUDGET * $WINDOW" | bc)" "$status"
}

DST=$(start_registry dst)
mkdir -p "$OUT/ferry/policies"
printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' \
  "$(proxy ferry)" "$DST" >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "rl"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["rl/**"]\n' >"$OUT/ferry/policies/rl.toml"
run ferry "$FERRY" --config "$OUT/ferry/ferry.toml" -q sync
same_digests "$SRC" "$DST"

DST=$(start_registry dst "${DST##*:}")
skopeo_yaml "$SRC" | sed "1s/.*/$(proxy skopeo):/" >"$OUT/skopeo.yml"
run skopeo timeout 300 env HOME="$OUT/skopeo-home" skopeo sync --retry-times 3 --src yaml --dest docker --dest-tls-verify=false --all \
  --preserve-digests "$OUT/skopeo.yml" "$DST/rl"
same_digests "$SRC" "$DST" || echo "skopeo left the target incomplete"
