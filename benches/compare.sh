#!/usr/bin/env bash
# Side-by-side comparison with the established caches, using the shared anchors harness
# (../shared/bench/anchors: it installs squid, nginx, varnish, trafficserver, wrk and hyperfine
# from Debian packages, pins proxies to CPU 1 and the load to CPU 0).
#
#   benches/compare.sh                 # origin squid nginx varnish trafficserver peercache, 1 round
#   ROUNDS=3 benches/compare.sh        # several rounds, pooled (median, min–max) at the end
#   KINDS="origin squid" benches/compare.sh
#   PEERCACHE_ACCESS_LOG=0 benches/compare.sh      # peercache with `log.access = false`
#   PEERCACHE_ACCESS_LOG=both benches/compare.sh   # each round: log on, then off (`fwd-log-off`)
#
# peercache runs with its default configuration (only `proxy.listen` and `cache.dir` are set):
# the access log is on, its lines go to the harness's log file of the proxy, as a service's
# stdout would go to a file or the journal. Prints one markdown table per round on stdout
# (progress on stderr); with ROUNDS>1 or both log variants, the pooled table from aggregate.py
# follows (peercache is the `fwd` row, its log-off variant `fwd-log-off`). Everything runs on
# 127.0.0.1 and stops by itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$here/../shared/bench/anchors}
[ -x "$anchors/run.sh" ] || { echo "anchors harness not found at $anchors (set ANCHORS)" >&2; exit 2; }
rounds=${ROUNDS:-1}
kinds=${KINDS:-origin squid nginx varnish trafficserver}
port=${PEERCACHE_PORT:-3128}
case ${PEERCACHE_ACCESS_LOG:-1} in
  1) variants="on" ;;
  0) variants="off" ;;
  both) variants="on off" ;;
  *) echo "PEERCACHE_ACCESS_LOG is 1 (default), 0 or both" >&2; exit 2 ;;
esac

bash "$anchors/setup.sh" >&2
cargo build --release --manifest-path "$here/Cargo.toml" >&2
work=$(mktemp -d /tmp/peercache-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT
for v in $variants; do
  {
    printf '[proxy]\nlisten = "127.0.0.1:%s"\n[cache]\ndir = "%s/cache"\n' "$port" "$work"
    [ "$v" = off ] && printf '[log]\naccess = false\n'
  } > "$work/peercache-$v.toml"
done
export FWD_PORT=$port

logs=()
for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds ($(date -u +%FT%TZ), $(nproc) cores)" >&2
  first=1
  for v in $variants; do
    export FWD_NAME=peercache
    [ "$v" = off ] && FWD_NAME="peercache (access log off)"
    # Each run starts from an empty cache, like the other kinds.
    export FWD_CMD="bash -c 'rm -rf $work/cache; exec $here/target/release/peercache run --config $work/peercache-$v.toml'"
    # The other kinds run once per round, with the first variant.
    run_kinds="--no-header fwd"
    [ $first = 1 ] && run_kinds="$kinds fwd"
    log="$work/round$r-$v.log"
    # shellcheck disable=SC2086
    bash "$anchors/run.sh" $run_kinds 2> "$log"
    # aggregate.py pools by kind name: the log-off runs get a name of their own.
    [ "$v" = off ] && sed -i 's/== fwd: /== fwd-log-off: /' "$log"
    logs+=("$log")
    cp "$log" "/tmp/peercache-compare-round$r-$v.log"
    first=0
  done
done
if [ "${#logs[@]}" -gt 1 ]; then
  python3 "$anchors/lib/aggregate.py" "${logs[@]}"
fi
