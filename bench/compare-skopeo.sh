#!/usr/bin/env bash
# ferry vs skopeo on the same corpus, between two real Distribution registries on loopback.
#
#   bench/compare-skopeo.sh [--repos 20] [--tags 5] [--base-size 30MiB] [--reps 3] [--big 1GiB] [--small]
#
# --small: small layers (a 256 KiB repository layer, 4-200 KiB per tag), the many-requests
# case; S2 is `--repos 200 --tags 10 --base-size 1MiB --small`.
#
# Phases, each tool alternating with the other, `--reps` times:
#   full  initial copy into an empty target (fresh target, fresh ferry state, fresh skopeo cache)
#   noop  the same sync again with nothing changed
#   big   one image with a single `--big` layer into an empty target: peak RSS (--big 0 skips)
# For every run: wall time, CPU time and peak RSS (GNU time), requests on each registry (from
# their access logs). Prints medians and ferry/skopeo ratios, and keeps raw lines in
# $OUT/results.tsv (default /tmp/ferry-bench). The target is checked after every ferry run:
# every source tag must have the same digest there.
# Needs: cargo, docker-registry, skopeo, GNU time, curl (apt-get installs them when root).
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=20 TAGS=5 BASE=30MiB REPS=3 BIG=1GiB OUT=/tmp/ferry-bench LAYERS=(--repo-layer 4MiB --app-min 512KiB --app-max 4MiB)
while [ $# -gt 0 ]; do
  case "$1" in
    --repos) REPOS=$2; shift 2 ;; --tags) TAGS=$2; shift 2 ;; --base-size) BASE=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;; --big) BIG=$2; shift 2 ;; --out) OUT=$2; shift 2 ;;
    --small) LAYERS=(--repo-layer 256KiB --app-min 4KiB --app-max 200KiB); shift ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
done

source bench/lib.sh
bench_needs docker-registry skopeo curl

echo "== building (release)"
bench_build

rm -rf "$OUT"; mkdir -p "$OUT"

SRC=$(start_registry src)
DST=$(start_registry dst); DST_PORT=${DST##*:}
echo "== corpus: $REPOS repos x $TAGS tags, base $BASE, into $SRC"
"$CORPUS" --registry "http://$SRC" --prefix bench/app --repos "$REPOS" --tags "$TAGS" --base-size "$BASE" \
  "${LAYERS[@]}" --index-every 10 --sign --seed 7
if [ "$BIG" != 0 ]; then
  echo "== big image: one $BIG layer"
  "$CORPUS" --registry "http://$SRC" --prefix bench/big --repos 1 --tags 1 --base-size "$BIG" \
    --repo-layer 64KiB --app-min 16KiB --app-max 32KiB --index-every 0 --seed 9
fi

# ferry: one policy per phase; state in a fresh folder per run.
mkdir -p "$OUT/ferry/policies"
cat >"$OUT/ferry/ferry.toml" <<TOML
[daemon]
state_dir = "state"
policies = "policies"
[registries.src]
url = "http://$SRC"
[registries.dst]
url = "http://$DST"
TOML
printf '[[policy]]\nname = "corpus"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["bench/app-*"]\n' >"$OUT/ferry/policies/corpus.toml"
printf '[[policy]]\nname = "big"\nsource = "src"\ntargets = ["dst"]\nrepositories = ["bench/big-000"]\n' >"$OUT/ferry/policies/big.toml"

# skopeo: a YAML source listing every repository (all tags); its own blob-info cache per run,
# and as `nobody` when root so the machine-wide cache is never touched.
for pair in bench/app:corpus bench/big:big; do
  skopeo_yaml "$SRC" "${pair%:*}" >"$OUT/skopeo-${pair#*:}.yml"; chmod 644 "$OUT/skopeo-${pair#*:}.yml"
done
# Wrappers that exec the tool, so GNU time measures the tool's own process.
cat >"$OUT/run-skopeo.sh" <<SH
#!/usr/bin/env bash
home="$OUT/skopeo-home"; mkdir -p "\$home"; chmod 777 "\$home"
envs=(HOME="\$home" XDG_DATA_HOME="\$home/data" XDG_RUNTIME_DIR="\$home/run" XDG_CONFIG_HOME="\$home/config")
cmd=(skopeo sync --src yaml --dest docker --dest-tls-verify=false --all --preserve-digests "$OUT/skopeo-\$1.yml" "\$2/bench")
if [ "\$(id -u)" = 0 ]; then exec setpriv --reuid=65534 --regid=65534 --clear-groups env "\${envs[@]}" "\${cmd[@]}"; fi
exec env "\${envs[@]}" "\${cmd[@]}"
SH
cat >"$OUT/run-ferry.sh" <<SH
#!/usr/bin/env bash
exec "$FERRY" --config "$OUT/ferry/ferry.toml" -q sync --policy "\$1"
SH
chmod +x "$OUT/run-skopeo.sh" "$OUT/run-ferry.sh"
# skopeo keeps only the last path part of a name; the dest prefix puts `bench/` back.
run_skopeo() { echo "$OUT/run-skopeo.sh" "$1" "$DST"; }
run_ferry() { echo "$OUT/run-ferry.sh" "$1"; }

verify() { same_digests "$SRC" "$DST" "$1"; }

# timed PHASE TOOL REP CMD...: run under GNU time; append a line to results.tsv.
timed() {
  local phase=$1 tool=$2 rep=$3; shift 3
  local s0 d0 tf="$OUT/time-$phase-$tool-$rep.txt"
  s0=$(requests src); d0=$(requests dst)
  if ! /usr/bin/time -v -o "$tf" "$@" >"$OUT/log-$phase-$tool-$rep.txt" 2>&1; then
    echo "bench: $tool failed in $phase (see $OUT/log-$phase-$tool-$rep.txt)" >&2; tail -5 "$OUT/log-$phase-$tool-$rep.txt" >&2; exit 1
  fi
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  cpu=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{print u+s}' "$tf")
  rss=$(awk -F': ' '/Maximum resident/{print $2}' "$tf")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$tool" "$rep" "$wall" "$cpu" "$rss" \
    $(( $(requests src) - s0 )) $(( $(requests dst) - d0 )) >>"$OUT/results.tsv"
  printf '  %-5s %-7s rep %s: %6.2fs wall %6.2fs cpu %7d KiB rss %5d src req %5d dst req\n' "$phase" "$tool" "$rep" "$wall" "$cpu" "$rss" \
    $(( $(requests src) - s0 )) $(( $(requests dst) - d0 ))
}

fresh() { DST=$(start_registry dst "$DST_PORT"); rm -rf "$OUT/ferry/state" "$OUT/skopeo-home"; }

for rep in $(seq 1 "$REPS"); do
  order=(ferry skopeo); [ $((rep % 2)) = 0 ] && order=(skopeo ferry)
  for tool in "${order[@]}"; do
    echo "== full, $tool, rep $rep"
    fresh
    if [ "$tool" = ferry ]; then timed full ferry "$rep" $(run_ferry corpus); verify bench/app; else timed full skopeo "$rep" $(run_skopeo corpus); fi
    echo "== noop, $tool, rep $rep"
    if [ "$tool" = ferry ]; then timed noop ferry "$rep" $(run_ferry corpus); else timed noop skopeo "$rep" $(run_skopeo corpus); fi
  done
done
if [ "$BIG" != 0 ]; then
  for tool in ferry skopeo; do
    echo "== big, $tool"
    fresh
    if [ "$tool" = ferry ]; then timed big ferry 1 $(run_ferry big); verify bench/big; else timed big skopeo 1 $(run_skopeo big); fi
  done
fi

echo
echo "== medians ($REPS reps; big: 1 run)"
awk -F'\t' '
  function median(key,   n, i, j, t, a) { n = split(vals[key], a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { for (f = 4; f <= 8; f++) vals[$1 FS $2 FS f] = vals[$1 FS $2 FS f] " " $f; phases[$1] = 1 }
  END {
    printf "%-5s %-7s %9s %9s %10s %8s %8s\n", "phase", "tool", "wall s", "cpu s", "rss KiB", "src req", "dst req"
    split("full noop big", order, " ")
    for (o = 1; o <= 3; o++) { p = order[o]; if (!(p in phases)) continue
      for (t = 1; t <= 2; t++) { tool = (t == 1) ? "ferry" : "skopeo"
        printf "%-5s %-7s %9.2f %9.2f %10d %8d %8d\n", p, tool, median(p FS tool FS 4), median(p FS tool FS 5), median(p FS tool FS 6), median(p FS tool FS 7), median(p FS tool FS 8) }
      w = median(p FS "skopeo" FS 4); c = median(p FS "skopeo" FS 5); r = median(p FS "skopeo" FS 6)
      rq = median(p FS "skopeo" FS 7) + median(p FS "skopeo" FS 8)
      printf "%-5s %-7s %9.2f %9.2f %10.2f %17.2f   (ferry / skopeo)\n", p, "ratio", median(p FS "ferry" FS 4) / (w ? w : 1), median(p FS "ferry" FS 5) / (c ? c : 1), median(p FS "ferry" FS 6) / (r ? r : 1), (median(p FS "ferry" FS 7) + median(p FS "ferry" FS 8)) / (rq ? rq : 1)
    }
  }' "$OUT/results.tsv"
echo "raw: $OUT/results.tsv"
