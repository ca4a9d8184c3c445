#!/usr/bin/env python3
"""Benchmark (b): events per second the userspace side consumes, and drops.

A tracked C program makes N failing opens (one event each). Printed:
  1. prefilled ring: the ring holds all N events first, then each stage is
     timed alone on the same data: drain (ring -> userspace copy), parse
     (-> record tuples), decode (-> typed events), encode (-> JSON lines);
  2. live: the agent's own pipeline (drain thread + decode thread) while the
     generator runs, with the batch reader and with libbpf's callback
     consumer (the reference), same run: events lost (kernel counters),
     end-to-end rate, backlog peak.
Target: at least 1,000,000 events/s consumed with no drops.

    .venv/bin/python bench/consumer_throughput.py [--events 1000000] [--quick]
"""
import argparse
import os
import time

import msgspec
from common import build

from mcpwitness.agent import Agent
from mcpwitness.kernel.tracking import spawn_tracked
from mcpwitness.decode.events import Decoder
from mcpwitness.kernel.loader import Kernel, LoadOptions
from mcpwitness.kernel.ringbuf import records


class CountingSink:
    path = "<count>"

    def __init__(self):
        self.n = 0
        self.records = []

    def write(self, events):
        self.n += len(events)

    def write_record(self, r):
        self.records.append(r)

    def close(self):
        pass


def prefilled(gen, n):
    k = Kernel.load(LoadOptions(ring_size=1 << 30))  # room for 2M records
    try:
        reader = k.batch_reader(max_batch_bytes=64 << 20)
        pid = spawn_tracked(k, [gen, str(n)])
        os.waitpid(pid, 0)
        t0 = time.perf_counter()
        blobs = []
        while True:
            b = reader.read_blob()
            if not b:
                break
            blobs.append(b)
        t1 = time.perf_counter()
        got = sum(len(records(b)) for b in blobs)  # parse alone, per blob as the agent does
        t2 = time.perf_counter()
        dec, enc, size = Decoder(), msgspec.json.Encoder(), 0
        t_dec = t_enc = 0.0
        for b in blobs:
            a = time.perf_counter()
            evs = list(dec.feed(records(b)))
            m = time.perf_counter()
            size += len(enc.encode_lines(evs))
            t_dec += m - a
            t_enc += time.perf_counter() - m
        t_dec -= t2 - t1  # decode alone: parse time taken out
        lost = k.counters()["ringbuf_full_events"]
        reader.close()
    finally:
        k.close()
    return got, (t1 - t0, t2 - t1, t_dec, t_enc), size, lost


def live(gen, n, which):
    sink = CountingSink()
    agent = Agent(sink, LoadOptions(ring_size=64 << 20), reader=which)
    agent.start()
    t0 = time.perf_counter()
    pid = agent.spawn_tracked([gen, str(n)])
    os.waitpid(pid, 0)
    t_gen = time.perf_counter() - t0
    stats = agent.stop(settle=0)
    elapsed = time.perf_counter() - t0
    return dict(decoded=sink.n, elapsed=elapsed, t_gen=t_gen, lost=stats["lost"]["events"],
                emitted=stats["kernel"]["events"], backlog=stats["backlog_peak_bytes"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n = 50_000 if a.quick else a.events
    gen = build("opens")

    got, (t_drain, t_parse, t_dec, t_enc), size, lost = prefilled(gen, n)
    print(f"prefilled ring, {got:,} events ({lost} lost while filling); each stage alone:")
    print(f"  drain  (ring -> userspace copy, BUSY bit per record): {got / t_drain:12,.0f} events/s")
    print(f"  parse  (copy -> record tuples, struct.iter_unpack):  {got / t_parse:12,.0f} events/s")
    print(f"  decode (records -> typed events):                    {got / t_dec:12,.0f} events/s")
    print(f"  encode (events -> JSON lines, {size / got:.0f} B/event):          {got / t_enc:12,.0f} events/s")
    print(f"  all four in sequence:                                "
          f"{got / (t_drain + t_parse + t_dec + t_enc):12,.0f} events/s")
    print(f"live: the agent's pipeline while a tracked generator makes {n:,} opens:")
    res = {}
    for which in ("batch", "libbpf"):
        r = res[which] = live(gen, n, which)
        print(f"  {which:6} reader: generator emitted {r['emitted']:,} at {r['emitted'] / r['t_gen']:,.0f}/s; "
              f"lost {r['lost']}; decoded {r['decoded']:,}, all done after {r['elapsed']:.2f}s "
              f"({r['decoded'] / r['elapsed']:,.0f}/s end to end); backlog peak {r['backlog'] / 2**20:.0f} MiB")
    print(f"  end-to-end ratio batch / libbpf: "
          f"{(res['batch']['decoded'] / res['batch']['elapsed']) / (res['libbpf']['decoded'] / res['libbpf']['elapsed']):.2f}x")


if __name__ == "__main__":
    main()
