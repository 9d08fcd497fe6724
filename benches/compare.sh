#!/usr/bin/env bash
# Side-by-side comparison with the established caches, using the shared anchors harness
# (../shared/bench/anchors: it installs squid, nginx, varnish, trafficserver, wrk and hyperfine
# from Debian packages, pins proxies to CPU 1 and the load to CPU 0).
#
#   benches/compare.sh                 # origin squid nginx varnish trafficserver peercache, 1 round
#   ROUNDS=3 benches/compare.sh        # several rounds, pooled (median, min–max) at the end
#   KINDS="origin squid" benches/compare.sh
#   PEERCACHE_ACCESS_LOG=false benches/compare.sh   # peercache with its access log off
#                                      (the default, measured otherwise, logs every request)
#
# Prints one markdown table per round on stdout (progress on stderr); with ROUNDS>1, the pooled
# table from aggregate.py follows. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$here/../shared/bench/anchors}
[ -x "$anchors/run.sh" ] || { echo "anchors harness not found at $anchors (set ANCHORS)" >&2; exit 2; }
rounds=${ROUNDS:-1}
kinds=${KINDS:-origin squid nginx varnish trafficserver}
port=${PEERCACHE_PORT:-3128}

bash "$anchors/setup.sh" >&2
cargo build --release --manifest-path "$here/Cargo.toml" >&2
work=$(mktemp -d /tmp/peercache-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/peercache.toml" <<CONF
[proxy]
listen = "127.0.0.1:$port"
[cache]
dir = "$work/cache"
[log]
access = ${PEERCACHE_ACCESS_LOG:-true}
level = "warn"
CONF
export FWD_NAME=peercache FWD_PORT=$port
# Each round starts from an empty cache, like the other kinds.
export FWD_CMD="bash -c 'rm -rf $work/cache; exec $here/target/release/peercache run --config $work/peercache.toml'"

logs=()
for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds ($(date -u +%FT%TZ), $(nproc) cores)" >&2
  # shellcheck disable=SC2086
  bash "$anchors/run.sh" $kinds fwd 2> "$work/round$r.log"
  logs+=("$work/round$r.log")
  cp "$work/round$r.log" "/tmp/peercache-compare-round$r.log"
done
if [ "$rounds" -gt 1 ]; then
  python3 "$anchors/lib/aggregate.py" "${logs[@]}"
fi
