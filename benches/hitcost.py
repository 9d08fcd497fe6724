#!/usr/bin/env python3
"""Instructions per hit by component, from the callgrind dump benches/hitcost.sh leaves.

  python3 benches/hitcost.py /tmp/hitcost/callgrind.out.PID.1 HITS

A component is a set of functions counted with everything they call (callgrind's call edges;
inlined code belongs to the function it was inlined into); none of them calls another, so the
components add up. What no component claims is hyper's dispatch loop, the tokio runtime and
glue. The allocator and memcpy lines are cross-cutting: their instructions are also inside the
components."""
import collections
import re
import sys

path, hits = sys.argv[1], float(sys.argv[2])
names = {}


def name(tok):
    m = re.match(r"\((\d+)\)(?: (.*))?", tok)
    if not m:
        return tok
    i, n = m.groups()
    if n is not None:
        names[i] = n
    return names[i]


self_cost = collections.Counter()
edges = collections.defaultdict(collections.Counter)  # caller -> callee -> inclusive cost
fn = cfn = None
pending = False
total = 0
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("fn="):
        fn = name(line[3:])
    elif line.startswith("cfn="):
        cfn = name(line[4:])
    elif line.startswith("calls="):
        pending = True
    elif line and (line[0].isdigit() or line[0] in "+-*"):
        parts = line.split()
        if len(parts) < 2:
            continue
        cost = int(parts[1])
        if pending:
            if cfn != fn:
                edges[fn][cfn] += cost
            pending = False
        else:
            self_cost[fn] += cost
            total += cost


def inclusive(f):
    return self_cost[f] + sum(edges[f].values())


def matching(rx):
    r = re.compile(rx)
    return [f for f in set(self_cost) | set(edges) if r.search(f)]


def roots(*rxs):
    return sum(inclusive(f) for rx in rxs for f in matching(rx))


def calls(caller_rx, callee_rx):
    """What `caller` functions spend in `callee` functions (edges only)."""
    cr, ce = re.compile(caller_rx), re.compile(callee_rx)
    return sum(c for f, out in edges.items() if cr.search(f) for g, c in out.items() if ce.search(g))


ours = r"^peercache::front::forward::(proxied|\{\{closure\}\})|hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_write$"
components = [
    ("hyper: read and parse the request head",
     roots(r"^hyper::proto::h1::conn::Conn<I,B,T>::poll_read_head$",
           r"^hyper::proto::h1::conn::Conn<I,B,T>::poll_read_keep_alive$")),
    ("hyper: encode and write the response",
     roots(r"^hyper::proto::h1::conn::Conn<I,B,T>::write_head$",
           r"^hyper::proto::h1::io::Buffered<T,B>::poll_flush$",
           r"^hyper::proto::h1::conn::Conn<I,B,T>::write_body_and_end$")),
    ("absolute-form target: routing, cache key, loggable URL",
     roots(r"^peercache::front::classify::(classify|check_host_fields|loggable)$",
           r"^peercache::cache::key::CacheKey::from_uri$")),
    ("index lookup (key hash, index mutex) and heads cache",
     roots(r"^peercache::cache::store::Inner::in_memory$", r"^peercache::cache::key::key_hash$")),
    ("hot-body cache", roots(r"^peercache::cache::store::Store::hot$")),
    ("stored head to a header map (unpack / clone)",
     roots(r"^peercache::cache::head::Head::headers$")),
    ("RFC 9111 decisions (freshness, reuse, preconditions, rules)",
     roots(r"^peercache::cache::policy::reuse::(reuse|judge)$", r"^peercache::front::forward::ttl$",
           r"^peercache::cache::cache_control::CacheControl::from_request$",
           r"^peercache::cache::rules::Rules::treat$", r"^peercache::front::answer::judged_shape$")),
    ("Age, Content-Length, Via, X-Cache, Cache-Status",
     roots(r"^peercache::http::headers::(append_via|via_contains|Via::append|Via::is_in)$",
           r"^peercache::front::forward::finish$", r"^peercache::front::answer::set_len$")
     + calls(ours + r"|^peercache::front::forward::from_store", r"^http::header::map::HeaderMap<T>::(insert|try_insert2)$"
             r"|^<http::header::value::HeaderValue as core::convert::From<u64>>::from$")),
    ("1xx relay window (interim)",
     roots(r"^peercache::front::interim::(Interim::open|Window::hook)$",
           r"^<peercache::front::interim::Window as core::ops::drop::Drop>::drop$")
     + calls(r".", r"^http::extensions::Extensions::(insert|get)")),
    # The writer thread's closure is inlined into the thread's entry; the runtime's threads
    # enter through tokio's blocking pool.
    ("access log (request side, and its writer thread)",
     roots(r"^peercache::accesslog::AccessLog::log$")
     + calls(r"^std::sys::backtrace::__rust_begin_short_backtrace$", r"^(?!tokio::)")),
]
# The metrics counters are inlined atomic adds, a few instructions each: in "the rest".
print(f"| component | instructions per hit |")
print(f"|---|---:|")
claimed = 0
for label, cost in components:
    claimed += cost
    print(f"| {label} | {cost / hits:,.0f} |")
print(f"| hyper's dispatch loop, tokio, futures, drops and the rest | {(total - claimed) / hits:,.0f} |")
print(f"| **total** | **{total / hits:,.0f}** |")
alloc = sum(self_cost[f] for f in matching(r"^(malloc|free|realloc|cfree|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk.*|__rust(c::__rust)?_(alloc|dealloc|realloc)|__rustc::__rdl_(alloc|dealloc|realloc))$"))
copy = sum(self_cost[f] for f in matching(r"^__mem(cpy|move)_"))
print(f"| of which the allocator (malloc, free, realloc) | {alloc / hits:,.0f} |")
print(f"| of which memcpy (mostly moves of the request's future) | {copy / hits:,.0f} |")
