#!/usr/bin/env bash
# One source, three targets: ferry (one policy, three targets) vs skopeo (one sync per target,
# the way skopeo users replicate to several registries), between real Distribution registries
# on loopback.
#
#   bench/fanout.sh [--repos 10] [--tags 4] [--base-size 20MiB]
#
# Prints wall time and the blob GETs the source served (from its access log) against the
# distinct blobs of the corpus, and checks every target tag has the source's digest.
# Needs: cargo, docker-registry, skopeo, GNU time, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPOS=10 TAGS=4 BASE=20MiB OUT=/tmp/ferry-bench-fanout
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;; --base-size) BASE=$2; shift 2 ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
source bench/lib.sh
bench_needs docker-registry skopeo curl
bench_build
rm -rf "$OUT"; mkdir -p "$OUT"

SRC=$(start_registry src)
"$CORPUS" --registry "http://$SRC" --prefix fan/app --repos "$REPOS" --tags "$TAGS" --base-size "$BASE" \
  --repo-layer 2MiB --app-min 256KiB --app-max 2MiB --index-every 5 --seed 11 >/dev/null
blob_gets() { grep -cE '"GET /v2/[^ ]*/blobs/sha256:' "$OUT/reg-src/access.log" || true; }
distinct=$(grep -oE '"PUT /v2/[^ ]*/blobs/uploads/[^ ]*digest=sha256[:%3A]*[0-9a-f]{64}' "$OUT/reg-src/access.log" | grep -oE '[0-9a-f]{64}$' | sort -u | wc -l)
echo "== corpus: $REPOS repos x $TAGS tags, $distinct distinct blobs"

targets() { for i in 0 1 2; do echo "t$i $(start_registry "t$i")"; done; }
run() {  # run NAME CMD...: wall seconds and source blob GETs
  local g0; g0=$(blob_gets)
  /usr/bin/time -f %e -o "$OUT/time-$1" "${@:2}" >"$OUT/log-$1" 2>&1 || { echo "bench: $1 failed" >&2; tail "$OUT/log-$1" >&2; exit 1; }
  printf '%-7s %7.2f s wall, %5d source blob GETs (%.2f x distinct)\n' "$1" "$(cat "$OUT/time-$1")" $(( $(blob_gets) - g0 )) \
    "$(echo "scale=2; ($(blob_gets) - $g0) / $distinct" | bc)"
}
verify() { for t in "$@"; do same_digests "$SRC" "$t" || exit 1; done; }

# ferry: one policy, three targets.
mapfile -t T < <(targets)
mkdir -p "$OUT/ferry/policies"
{ printf '[daemon]\nstate_dir = "state"\npolicies = "policies"\n[registries.src]\nurl = "http://%s"\n' "$SRC"
  for t in "${T[@]}"; do printf '[registries.%s]\nurl = "http://%s"\n' ${t% *} ${t#* }; done; } >"$OUT/ferry/ferry.toml"
printf '[[policy]]\nname = "fan"\nsource = "src"\ntargets = ["t0", "t1", "t2"]\nrepositories = ["fan/**"]\n' >"$OUT/ferry/policies/fan.toml"
run ferry "$FERRY" --config "$OUT/ferry/ferry.toml" -q sync
verify "${T[@]#* }"

# skopeo: the same three targets, fresh, one sync each.
mapfile -t T < <(targets)
skopeo_yaml "$SRC" >"$OUT/skopeo.yml"
cat >"$OUT/skopeo3.sh" <<SH
#!/usr/bin/env bash
set -e
export HOME="$OUT/skopeo-home"
for t in ${T[@]#* }; do skopeo sync --src yaml --dest docker --dest-tls-verify=false --all --preserve-digests "$OUT/skopeo.yml" "\$t/fan"; done
SH
chmod +x "$OUT/skopeo3.sh"
run skopeo "$OUT/skopeo3.sh"
verify "${T[@]#* }"
