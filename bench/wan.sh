#!/usr/bin/env bash
# ferry over a long link: a delay line (examples/delay_line.rs) holds every byte 25 ms each
# way in front of both registries, a 50 ms round trip to each, as an edge site's WAN link.
#
#   bench/wan.sh [--repos 50] [--tags 11] [--delay-ms 25] [--skopeo]
#
# Times a full copy and a no-op re-sync (requests counted from the registries' access logs),
# and checks every target tag. --skopeo also times skopeo sync the same way (slow: it HEADs
# and GETs every manifest at 50 ms each).
# Needs: cargo, docker-registry, curl, GNU time (and skopeo with --skopeo).
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=50 TAGS=11 DELAY=25 SKOPEO=0 OUT=/tmp/ferry-bench-wan
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;; --delay-ms) DELAY=$2; shift 2 ;;
    --skopeo) SKOPEO=1; shift ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
if [ "$SKOPEO" = 1 ]; then bench_needs docker-registry curl skopeo; else bench_needs docker-registry curl; fi
bench_build delay_line
LINE="$PWD/target/release/examples/delay_line"
rm -rf "$OUT"; mkdir -p "$OUT"

SRC=$(start_registry src) DST=$(start_registry dst)
"$CORPUS" --registry "http://$SRC" --prefix wan/app --repos "$REPOS" --tags "$TAGS" --base-size 1MiB \
  --repo-layer 256KiB --app-min 16KiB --app-max 128KiB --index-every 10 --seed 5 >/dev/null
delay_line() {  # delay_line UPSTREAM NAME: prints the proxy's address
  "$LINE" --listen 127.0.0.1:0 --upstream "$1" --delay-ms "$DELAY" >"$OUT/line-$2.out" 2>&1 &
  echo $! >"$OUT/line-$2.pid"
  for _ in $(seq 1 50); do grep -q listening "$OUT/line-$2.out" 2>/dev/null && break; sleep 0.1; done
  cut -d' ' -f3 "$OUT/line-$2.out"
}
WSRC=$(delay_line "$SRC" src) WDST=$(delay_line "$DST" dst)
echo "== $REPOS repos x $TAGS tags; ${DELAY} ms each way in front of both registries"

timed() {  # timed NAME CMD...
  local s0 d0; s0=$(requests src); d0=$(requests dst)
  /usr/bin/time -f '%e %M' -o "$OUT/time-$1" "${@:2}" >"$OUT/log-$1" 2>&1 || { echo "bench: $1 failed" >&2; tail "$OUT/log-$1" >&2; exit 1; }
  read -r wall rss <"$OUT/time-$1"
  printf '%-13s %7.2f s wall %7d KiB rss %6d src req %6d dst req\n' "$1" "$wall" "$rss" $(( $(requests src) - s0 )) $(( $(requests dst) - d0 ))
}
check() { same_digests "$SRC" "$DST" || exit 1; }

mkdir -p "$OUT/ferry/policies"
printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$WSRC" "$WDST" >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "wan"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["wan/**"]\n' >"$OUT/ferry/policies/wan.toml"
timed "ferry full" "$FERRY" --config "$OUT/ferry/ferry.toml" -q sync
check
timed "ferry no-op" "$FERRY" --config "$OUT/ferry/ferry.toml" -q sync

if [ "$SKOPEO" = 1 ]; then
  DST=$(start_registry dst "${DST##*:}")
  skopeo_yaml "$SRC" | sed "1s/.*/$WSRC:/" >"$OUT/skopeo.yml"
  sk=(env HOME="$OUT/skopeo-home" skopeo sync --src yaml --dest docker --dest-tls-verify=false --all --preserve-digests "$OUT/skopeo.yml" "$WDST/wan")
  timed "skopeo full" "${sk[@]}"
  timed "skopeo no-op" "${sk[@]}"
fi
