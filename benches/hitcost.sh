#!/usr/bin/env bash
# Instructions per 1 KiB cache hit, counted by valgrind's callgrind: deterministic, so it
# shows a change's cost on a shared, noisy machine where req/s cannot.
#
#   benches/hitcost.sh                      # release build, access log on (the default)
#   HITCOST_LOG=0 benches/hitcost.sh        # the same with `log.access = false`
#   HITCOST_N=20000 HITCOST_CONNS=50 benches/hitcost.sh
#
# Starts an origin (python, nginx-like response fields) and `target/release/peercache` under
# `valgrind --tool=callgrind`, pinned to CPU 1 (one tokio worker, as compare.sh runs it);
# a client opens HITCOST_CONNS keep-alive connections, fills the cache and warms them, then
# callgrind's counters are zeroed, HITCOST_N absolute-form GETs of the same 1 KiB object go out
# (every answer checked: 200, X-Cache: HIT, 1024 bytes), and the counters are dumped. Prints
# instructions per hit, all threads (the access-log writer included), by component
# (benches/hitcost.py), and leaves the profile in $HITCOST_OUT (default /tmp/hitcost) for
# `callgrind_annotate --inclusive=yes`. HITCOST_BIN runs another build (an older commit's, say).
# Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${HITCOST_N:-20000}
conns=${HITCOST_CONNS:-50}
log=${HITCOST_LOG:-1}
out=${HITCOST_OUT:-/tmp/hitcost}
bin=${HITCOST_BIN:-$here/target/release/peercache}
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --manifest-path "$here/Cargo.toml" >&2
pin=(); command -v taskset >/dev/null && pin=(taskset -c 1)

work=$(mktemp -d /tmp/peercache-hitcost.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
oport=$(free_port); pport=$(free_port)

python3 - "$oport" <<'ORIGIN' &
import http.server, sys
body = b"x" * 1024
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Mon, 24 Nov 2025 10:00:00 GMT")
        self.send_header("ETag", '"6744f9e0-400"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
ORIGIN
pids+=($!)

access=""; [ "$log" = 0 ] && access="access = false"
cat > "$work/peercache.toml" <<CONF
[proxy]
listen = "127.0.0.1:$pport"
[cache]
dir = "$work/cache"
[log]
$access
CONF
mkdir -p "$out"
rm -f "$out"/callgrind.out.*
"${pin[@]}" valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
  "$bin" run --config "$work/peercache.toml" > "$work/access.log" 2> "$work/stderr.log" &
vg=$!; pids+=($vg)

counted=$(python3 - "$pport" "$oport" "$n" "$conns" "$vg" <<'CLIENT'
import selectors, socket, subprocess, sys, time
pport, oport, n, conns, pid = (int(a) for a in sys.argv[1:])
req = (f"GET http://127.0.0.1:{oport}/1k HTTP/1.1\r\nHost: 127.0.0.1:{oport}\r\n\r\n").encode()
deadline = time.time() + 120
while True:
    try:
        socket.create_connection(("127.0.0.1", pport)).close(); break
    except OSError:
        if time.time() > deadline: sys.exit("peercache did not start")
        time.sleep(0.2)

def drive(socks, total, want_hit=True):
    """`total` requests over `socks`, each connection one at a time; checks every answer."""
    sel = selectors.DefaultSelector()
    state = {}
    sent = 0
    for s in socks:
        if sent == total: break
        s.sendall(req); sent += 1
        state[s] = b""; sel.register(s, selectors.EVENT_READ)
    done = 0
    while done < total:
        for key, _ in sel.select(timeout=60):
            s = key.fileobj
            chunk = s.recv(65536)
            if not chunk: sys.exit("proxy closed a connection")
            buf = state[s] + chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0: state[s] = buf; continue
            head = buf[:head_end].decode("latin1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) < head_end + 4 + length: state[s] = buf; continue
            assert head.startswith("http/1.1 200"), head
            assert buf[head_end + 4 + length:] == b"", "unexpected bytes"
            if want_hit: assert "x-cache: hit" in head, head
            assert length == 1024
            done += 1; state[s] = b""
            if sent < total:
                s.sendall(req); sent += 1
            else:
                sel.unregister(s)
    sel.close()

socks = [socket.create_connection(("127.0.0.1", pport)) for _ in range(conns)]
for s in socks: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
drive(socks[:1], 1, want_hit=False)          # the miss that fills the cache
time.sleep(1)                                 # let the fill commit
drive(socks, max(conns * 4, 200))             # warm every connection and the hot caches
def control(flag):
    """Runs `callgrind_control FLAG`; returns how many hits it took to get its answer."""
    c = subprocess.Popen(["callgrind_control", flag, str(pid)], stdout=subprocess.DEVNULL)
    nudges = 0
    while c.poll() is None:                   # it answers when the process runs: nudge it
        time.sleep(0.2)
        if c.poll() is None:
            drive(socks[:1], 1); nudges += 1
    return nudges
control("-z")
t = time.time()
drive(socks, n)
extra = control("-d")
print(f"drove {n} hits (+{extra} to get the dump) over {conns} connections in {time.time()-t:.1f} s under callgrind", file=sys.stderr)
print(n + extra)
CLIENT
)
kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
# The dump made by `-d` (`callgrind.out.PID.1`) holds exactly the counted hits.
f=$(ls "$out"/callgrind.out.*.1)
ir=$(awk '/^summary:/{print $2}' "$f")
lines=$(wc -l < "$work/access.log")
echo "profile: $f"
echo "access log lines written: $lines"
python3 "$here/benches/hitcost.py" "$f" "$counted"
awk -v ir="$ir" -v n="$counted" 'BEGIN{printf "instructions per hit: %.0f (%d instructions / %d hits)\n", ir/n, ir, n}'
