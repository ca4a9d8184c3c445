"""A Prometheus metrics endpoint (`--metrics-port`): alert counters and the
pipeline's own counters, in the text exposition format, computed at each
scrape from the agent's statistics (nothing is kept twice).

    mcpwitness_alerts_total{rule, priority}
    mcpwitness_events_total{type}                  kernel events decoded
    mcpwitness_lost_total{stage}                   kernel ring, chunks, process map, store, alert HTTP
    mcpwitness_parse_failures_total{stage}         decoder, streams, http, mcp
    mcpwitness_stage_errors_total{stage}           a stage that raised on an input (a bug), by stage
    mcpwitness_sessions_total, mcpwitness_messages_total, mcpwitness_calls_total, ..._incomplete_total
    mcpwitness_detect_records_total, mcpwitness_alerts_suppressed_total
    mcpwitness_rules_loaded, mcpwitness_rules_reloads_total{result}
    mcpwitness_kernel_counter_total{counter}       every kernel counter as it is
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(families: list[tuple[str, str, str, list[tuple[dict, float]]]]) -> str:
    """(name, type, help, [(labels, value)]) -> the text format."""
    out = []
    for name, typ, help_, samples in families:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {typ}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {float(value):g}" if lab else f"{name} {float(value):g}")
    return "\n".join(out) + "\n"


def agent_exposition(agent) -> str:
    """The exposition for a running agent (MetricsServer's thread): its stats
    record and its detection's, taken again if the decode thread resized a
    counter mid-copy."""
    import msgspec
    for attempt in range(5):
        try:
            st = msgspec.to_builtins(agent.stats())
            return exposition(families(st, st.get("detect")))
        except RuntimeError:
            if attempt == 4:
                raise
    return ""


def families(stats: dict, detect: dict | None) -> list:
    """The metric families from Agent.stats() and DetectSink.stats()."""
    f = []
    k = stats.get("kernel") or {}
    f.append(("mcpwitness_events_total", "counter", "Kernel events decoded, by type.",
              [({"type": t}, n) for t, n in sorted((stats.get("events") or {}).items())]))
    lost = stats.get("lost") or {}
    store = stats.get("store") or {}
    lost_samples = [({"stage": "kernel_ring_events"}, lost.get("events", 0)),
                    ({"stage": "kernel_ring_chunks"}, lost.get("event_chunks", 0)),
                    ({"stage": "kernel_process_map"}, lost.get("untracked_children", 0)),
                    ({"stage": "ring_discarded"}, stats.get("ring_discarded") or 0),
                    ({"stage": "store"}, store.get("errors", 0))]
    pub = stats.get("publish")
    if pub:
        lost_samples.append(({"stage": "spool_full"}, pub.get("spool_dropped", 0)))
    if detect and "http" in detect:
        lost_samples.append(({"stage": "alerts_http"}, detect["http"].get("failed", 0)
                             + detect["http"].get("dropped_queue_full", 0)))
    f.append(("mcpwitness_lost_total", "counter", "Records lost, by the stage that lost them.", lost_samples))
    if pub:
        f.append(("mcpwitness_spool_bytes", "gauge", "Bytes in the publish spool, not yet acknowledged by JetStream.",
                  [({}, pub.get("spool_bytes") or 0)]))
        f.append(("mcpwitness_spool_oldest_age_seconds", "gauge",
                  "Age of the oldest record in the publish spool (0: empty).",
                  [({}, pub.get("spool_oldest_age_seconds") or 0)]))
        f.append(("mcpwitness_published_total", "counter", "Records JetStream acknowledged.",
                  [({}, pub.get("published", 0))]))
        f.append(("mcpwitness_publish_connected", "gauge", "1 while the agent is connected to NATS.",
                  [({}, 1 if pub.get("connected") else 0)]))
    dec, st, ht, mc = (stats.get(x) or {} for x in ("decoder", "streams", "http", "mcp"))
    f.append(("mcpwitness_parse_failures_total", "counter", "Input that could not be parsed, by stage.",
              [({"stage": "decoder"}, dec.get("bad_records", 0) + dec.get("undecodable_records", 0)),
               ({"stage": "streams"}, st.get("oversized", 0)),
               ({"stage": "http"}, ht.get("not_http", 0) + ht.get("bad_encoding", 0) + ht.get("http2_connections", 0)
                + ht.get("bad_status", 0) + ht.get("bad_messages", 0)),
               ({"stage": "mcp"}, mc.get("nonjson", 0) + mc.get("invalid_utf8", 0))]))
    f.append(("mcpwitness_stage_errors_total", "counter",
              "Inputs a decode stage failed on (an mcpwitness bug that input found; only that input's work lost), "
              "by stage.", [({"stage": k}, n) for k, n in sorted((stats.get("stage_errors") or {}).items())]
              + [({"stage": "audit"}, (stats.get("calls") or {}).get("errors", 0))]))
    f.append(("mcpwitness_sessions_total", "counter", "MCP sessions seen.", [({}, mc.get("sessions", 0))]))
    f.append(("mcpwitness_messages_total", "counter", "MCP messages decoded.", [({}, mc.get("messages", 0))]))
    calls = stats.get("calls") or {}
    f.append(("mcpwitness_calls_total", "counter", "Requests seen (each gets a call record).",
              [({}, calls.get("calls", 0))]))
    f.append(("mcpwitness_calls_incomplete_total", "counter", "Calls written without a response.",
              [({}, calls.get("incomplete", 0))]))
    f.append(("mcpwitness_kernel_counter_total", "counter", "The kernel programs' own counters.",
              [({"counter": c}, n) for c, n in sorted(k.items()) if isinstance(n, (int, float))]))
    if detect is not None:
        f.append(("mcpwitness_alerts_total", "counter", "Alerts raised, by rule and priority.",
                  [({"rule": r, "priority": p}, n) for r, p, n in detect["by_rule"]]))
        f.append(("mcpwitness_detect_records_total", "counter", "Records the rules looked at.",
                  [({}, detect["records"])]))
        f.append(("mcpwitness_alerts_suppressed_total", "counter",
                  "Matches not written: the rule already alerted for that call or session.",
                  [({}, detect["suppressed"])]))
        f.append(("mcpwitness_rule_errors_total", "counter", "Rule or detector evaluations that failed.",
                  [({}, detect["rule_errors"] + detect["detector_errors"])]))
        f.append(("mcpwitness_rules_loaded", "gauge", "Enabled rules in the running set.",
                  [({}, detect["rules"]["enabled"])]))
        f.append(("mcpwitness_rules_reloads_total", "counter", "Rule reloads, applied or refused.",
                  [({"result": r}, n) for r, n in sorted(detect["reloads"].items())]))
    return f


class MetricsServer:
    """GET /metrics on addr:port, from a daemon thread; collect() -> text.
    GET /healthz answers 200 while health() is true, else 503: a liveness probe
    (Kubernetes) asks what systemd's watchdog asks."""

    def __init__(self, collect, port: int, addr: str = "127.0.0.1", health=None):
        self.collect = collect
        self.health = health
        self.errors = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] == "/healthz":
                    ok = outer.health is None or outer.health()
                    body = b"ok\n" if ok else b"stalled: an agent thread has not looked for work in 10 s\n"
                    self.send_response(200 if ok else 503)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                try:
                    body = outer.collect().encode()
                except Exception as e:  # never take the agent down for a scrape
                    outer.errors += 1
                    self.send_error(500, f"{type(e).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((addr, port), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._t = threading.Thread(target=self.httpd.serve_forever, name="mcpwitness-metrics", daemon=True)
        self._t.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
