#!/usr/bin/env bash
# The audit ledger's cost and the exposure index's size: a 10,000-tag first copy (500
# repositories x 20 tags of small images) by this build and by a reference build without the
# ledger, side by side, each into its own empty target; then, for this build, the ledger's
# entries, the state store's size, and `ferry where` on the layer every image shares.
#
#   bench/ledger.sh --reference REV [--repos 500] [--tags 19]
#
# CPU is user+sys of the ferry process (GNU time); per tag written it is that over the tags.
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=500 TAGS=19 REF="" OUT=/tmp/ferry-bench-ledger
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;; --reference) REF=$2; shift 2 ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
[ -n "$REF" ] || { sed -n '2,9p' "$0"; exit 2; }
source bench/lib.sh
bench_needs docker-registry curl python3 bc
bench_build
rm -rf "$OUT"; mkdir -p "$OUT"
bench_reference "$REF" "$OUT/ferry-reference"

SRC=$(start_registry src)
echo "== corpus: $REPOS repos x $((TAGS + 1)) tags"
"$CORPUS" --registry "http://$SRC" --prefix scale/app --repos "$REPOS" --tags "$TAGS" --base-size 64KiB \
  --repo-layer 16KiB --app-min 1KiB --app-max 4KiB --index-every 10 --seed 3

copy() {  # copy NAME BINARY: a first copy into a fresh target; prints the figures
  local name=$1 bin=$2 dst dir="$OUT/$1"
  dst=$(start_registry "dst-$name")
  mkdir -p "$dir/policies"
  printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.src]\nurl = "http://%s"\n[registries.dst]\nurl = "http://%s"\n' "$SRC" "$dst" >"$dir/ferry.toml"
  printf '[[policy]]\nname = "scale"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["scale/**"]\n' >"$dir/policies/scale.toml"
  /usr/bin/time -f '%e %U %S %M' -o "$dir/time" "$bin" --config "$dir/ferry.toml" -q sync >"$dir/log" 2>&1 \
    || { echo "bench: $name failed" >&2; tail "$dir/log" >&2; exit 1; }
  local wall user sys rss puts
  read -r wall user sys rss <"$dir/time"
  puts=$(grep -c '"PUT /v2/[^ ]*/manifests/' "$OUT/reg-dst-$name/access.log" || true)
  printf '%-10s %7.2f s wall %7.2f s CPU (%.3f ms per manifest written, %d written) %6d KiB rss, state %d bytes\n' \
    "$name" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "($user + $sys) * 1000 / $puts" | bc -l)" "$puts" "$rss" \
    "$(du -sb "$dir/state" | cut -f1)"
  echo "$dst" >"$dir/dst"
}
copy reference "$OUT/ferry-reference"
copy this "$FERRY"
copy reference-2 "$OUT/ferry-reference"
copy this-2 "$FERRY"

dir="$OUT/this" cfg="$OUT/this/ferry.toml"
"$FERRY" --config "$cfg" audit >/dev/null 2>"$dir/audit.count"
echo "ledger: $(cat "$dir/audit.count")"
base=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
  "http://$(cat "$dir/dst")/v2/scale/app-000/manifests/latest" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
for i in 1 2 3 4 5; do
  /usr/bin/time -f '%e' -o "$dir/where-$i" "$FERRY" --config "$cfg" where "$base" >/dev/null 2>"$dir/where.out"
done
echo "where $base: $(tail -1 "$dir/where.out"); wall $(sort -n "$dir"/where-? | sed -n 3p) s (median of 5)"
