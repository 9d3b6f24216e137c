#!/usr/bin/env bash
# A 10,000-tag no-op: 500 repositories x 20 tags of small images, copied once, then synced
# again with nothing changed, by ferry (twice) and by skopeo sync, between real Distribution
# registries on loopback.
#
#   bench/scale.sh [--repos 500] [--tags 19]   (tags per repository: --tags versions + latest)
#
# For each no-op: wall time, peak RSS, requests on each registry, and for ferry the growth of
# its state store (bytes on disk before and after). Checks every target tag after the copy.
# Needs: cargo, docker-registry, skopeo, GNU time, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=500 TAGS=19 OUT=/tmp/ferry-bench-scale
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry skopeo curl
bench_build
rm -rf "$OUT"; mkdir -p "$OUT"

SRC=$(start_registry src) DST=$(start_registry dst)
echo "== corpus: $REPOS repos x $((TAGS + 1)) tags"
"$CORPUS" --registry "http://$SRC" --prefix scale/app --repos "$REPOS" --tags "$TAGS" --base-size 64KiB \
  --repo-layer 16KiB --app-min 1KiB --app-max 4KiB --index-every 10 --seed 3

timed() {  # timed NAME CMD...
  local s0 d0 st0; s0=$(requests src); d0=$(requests dst); st0=$(du -sb "$OUT/ferry/state" 2>/dev/null | cut -f1 || echo 0)
  /usr/bin/time -f '%e %M' -o "$OUT/time-$1" "${@:2}" >"$OUT/log-$1" 2>&1 || { echo "bench: $1 failed" >&2; tail "$OUT/log-$1" >&2; exit 1; }
  read -r wall rss <"$OUT/time-$1"
  printf '%-13s %7.2f s wall %7d KiB rss %6d src req %6d dst req' "$1" "$wall" "$rss" $(( $(requests src) - s0 )) $(( $(requests dst) - d0 ))
  case "$1" in ferry*) printf ', state %d -> %d bytes\n' "$st0" "$(du -sb "$OUT/ferry/state" | cut -f1)" ;; *) echo ;; esac
}

mkdir -p "$OUT/ferry/policies"
printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$SRC" "$DST" >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "scale"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["scale/**"]\n' >"$OUT/ferry/policies/scale.toml"
ferry=("$FERRY" --config "$OUT/ferry/ferry.toml" -q sync)
timed "ferry full" "${ferry[@]}"
same_digests "$SRC" "$DST"
timed "ferry no-op" "${ferry[@]}"
timed "ferry no-op 2" "${ferry[@]}"
skopeo_yaml "$SRC" >"$OUT/skopeo.yml"
timed "skopeo no-op" env HOME="$OUT/skopeo-home" skopeo sync --src yaml --dest docker --dest-tls-verify=false --all \
  --preserve-digests "$OUT/skopeo.yml" "$DST/scale"
