"""The tamper-evident record: every JSON Lines line and every store row is
chained to the one before it by a hash, and `mcpwitness verify` finds the
place where a record was edited, removed, reordered, inserted or cut.

A JSON Lines line ends with its place in the file and its link:

    {...the record...,"seq":N,"chain":"<32 hex>"}

    chain = BLAKE2b-128(previous line's chain (16 bytes) || the line up to and
            including "seq":N)

A file begins with a `chain` record (event "begin": where it continues from,
the previous file's name and last link, or zeros); rotation ends a file with
a `chain` record (event "rotate") and the next file starts from its link. An
agent that finds its file ended by a crash (no newline at the end: the
batch being written when it was killed) closes the cut line and writes a
`chain` record (event "resume") that says how many bytes were cut, then goes
on from the last whole line's link. A file closed by its agent ends with the
`stats` record.

The store keeps a ledger table: for each row written, the table, the row's
key, a digest of the record and the link; retention deletes ledger entries
with their rows and keeps the last deleted link as the anchor to start from.

What this does and does not protect: anyone who edits a record without
recomputing every link after it is found, at that record. The hash is not
keyed: someone with write access who knows the scheme can rewrite a whole
file consistently. Against that, keep the heads elsewhere: `mcpwitness
verify` prints each file's last link, and the `stats` record and rotation
checkpoints carry it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

ZERO = bytes(16)
VERSION = 1
_TAIL = re.compile(rb',"seq":(\d+),"chain":"([0-9a-f]{32})"\}$')


def link(prev: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(prev + body, digest_size=16).digest()


def record_digest(js: bytes) -> bytes:
    return hashlib.blake2b(js, digest_size=16).digest()


def ledger_body(table: str, key: str, digest: bytes) -> bytes:
    return table.encode() + b"\0" + key.encode() + b"\0" + digest


class Chain:
    """The running link of one file."""

    def __init__(self, head: bytes = ZERO, seq: int = 0):
        self.head = head
        self.seq = seq

    def seal(self, line: bytes) -> bytes:
        """A JSON object (bytes, no newline) with its seq and chain added."""
        self.seq += 1
        body = (line[:-1] + b"," if len(line) > 2 else b"{") + b'"seq":' + str(self.seq).encode()
        self.head = link(self.head, body)
        return body + b',"chain":"' + self.head.hex().encode() + b'"}'

    def seal_lines(self, lines) -> bytes:
        return b"".join(self.seal(ln) + b"\n" for ln in lines)


def last_line(path: str) -> tuple[bytes | None, int]:
    """(the last complete line, bytes after it with no newline: a cut line)."""
    size = os.path.getsize(path)
    if size == 0:
        return None, 0
    with open(path, "rb") as f:
        # the cut part: from the last newline to the end
        pos, tail = size, b""
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            nl = tail.rfind(b"\n")
            if nl >= 0:
                cut = len(tail) - nl - 1
                prev = tail[:nl]
                # the line before that newline: back to the newline before it
                while pos > 0 and b"\n" not in prev:
                    step = min(1 << 16, pos)
                    pos -= step
                    f.seek(pos)
                    prev = f.read(step) + prev
                return prev[prev.rfind(b"\n") + 1:], cut
        return None, size


def resume_state(path: str) -> tuple[bytes, int, int]:
    """(head, seq, cut bytes) to go on from an existing file's last whole line."""
    line, cut = last_line(path)
    if line is None:
        return ZERO, 0, cut
    m = _TAIL.search(line)
    if not m:  # a file written without the chain (--no-chain, an older version): start over
        return ZERO, 0, cut
    return bytes.fromhex(m.group(2).decode()), int(m.group(1)), cut


# --- verification --------------------------------------------------------------

class Finding:
    __slots__ = ("file", "line", "seq", "kind", "detail")

    def __init__(self, file, line, seq, kind, detail):
        self.file, self.line, self.seq, self.kind, self.detail = file, line, seq, kind, detail

    def as_dict(self):
        return {"file": self.file, "line": self.line, "seq": self.seq, "kind": self.kind, "detail": self.detail}

    def __str__(self):
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.kind}: {self.detail}" + (f" (seq {self.seq})" if self.seq else "")


# what is a sign of tampering, and what only says how the file ended
PROBLEMS = {"edited", "removed", "reordered", "inserted", "truncated", "unchained", "missing file", "cut"}


def verify_file(path: str, prev_head: bytes | None = None, prev_name: str | None = None):
    """Check one JSON Lines file. Returns (findings, summary dict)."""
    name = os.path.basename(path)
    out: list[Finding] = []
    head, seq, n = None, 0, 0
    first = None
    ended = None           # "rotate" or "stats" when the file ends as a closed file does
    pending_cut = None     # (line number, bytes) of a line with no chain: a crash cut or an insertion
    last_agent = None      # the pid of the agent that wrote the last start/resume record
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            complete = raw.endswith(b"\n")
            line = raw.rstrip(b"\n")
            m = _TAIL.search(line)
            if not m:
                if pending_cut is not None:
                    out.append(Finding(name, pending_cut[0], None, "unchained", "a line with no link"))
                pending_cut = (n, len(line), complete)
                ended = None
                continue
            s, got = int(m.group(1)), bytes.fromhex(m.group(2).decode())
            body = line[:m.start()] + b',"seq":' + m.group(1)
            rec = _record(line)
            event = rec.get("event") if rec.get("type") == "chain" else None   # begin, resume, rotate
            if first is None:
                first = rec
                if event not in ("begin", "resume"):
                    out.append(Finding(name, n, s, "truncated", "the file does not begin with its chain start "
                                                                "record: its beginning was removed"))
                    head, seq = None, s - 1
                else:
                    declared = bytes.fromhex(rec.get("prev", "00" * 16))
                    if prev_head is not None and declared != prev_head:
                        out.append(Finding(name, n, s, "missing file",
                                           f"continues from {rec.get('prev_file')!r} at link "
                                           f"{declared.hex()[:12]}, but the file before it ({prev_name}) ends at "
                                           f"{prev_head.hex()[:12]}: a file is missing, or was cut or edited"))
                    head, seq = declared, int(rec.get("prev_seq") or 0) if event == "resume" else 0
            if pending_cut is not None:
                ln, nbytes, had_nl = pending_cut
                if event == "resume" and rec.get("cut_bytes") == nbytes:
                    out.append(Finding(name, ln, None, "note", f"a line cut by a crash ({nbytes} bytes), "
                                                               "acknowledged by the agent that resumed"))
                else:
                    out.append(Finding(name, ln, None, "unchained", "a line with no link: inserted or damaged"))
                pending_cut = None
            if event is not None:
                last_agent = rec.get("agent_pid", last_agent)
            if event == "resume" and head is not None:
                declared = bytes.fromhex(rec.get("prev", "00" * 16))
                if declared != head:
                    out.append(Finding(name, n, s, "edited", "a resume record that does not continue the chain"))
                head, seq = declared, int(rec.get("prev_seq") or 0)
            expect = seq + 1
            if head is None:      # no known start: take this line's word for it
                head = got
                seq = s
                continue
            ok = link(head, body) == got
            if s == expect and ok:
                pass
            elif s == expect:
                out.append(Finding(name, n, s, "edited", "the line does not match its link"))
            elif s > expect:
                gap = f"seq {expect}" if s - 1 == expect else f"seq {expect}..{s - 1} ({s - expect} records)"
                out.append(Finding(name, n, s, "removed", f"{gap} missing before this line"))
            else:
                out.append(Finding(name, n, s, "reordered", f"seq {s} comes after seq {seq}: moved or repeated"))
            head, seq = got, s      # go on from this line, so each break is said once
            ended = "rotate" if event == "rotate" else "stats" if rec.get("type") == "stats" else None
    if pending_cut is not None:
        ln, nbytes, had_nl = pending_cut
        kind = "unchained" if had_nl else "cut"
        out.append(Finding(name, ln, None, kind, "the last line has no link" if had_nl else
                           f"the last line is cut ({nbytes} bytes with no newline): the agent was killed while "
                           f"writing, or the file was truncated"))
    elif n and ended is None:
        writer = _writer(path, (first or {}).get("agent_pid"), last_agent)
        if writer:
            out.append(Finding(name, n, seq, "open", f"still written by its agent (pid {writer}): it ends with "
                                                     "the stats record when the agent stops"))
        else:
            out.append(Finding(name, n, seq, "truncated", "the file does not end as a closed one (its stats or "
                                                          "rotate record) and no agent writes it: the end was "
                                                          "removed, or its agent was killed"))
    if n == 0:
        out.append(Finding(name, 0, None, "note", "empty file"))
    out = _merge_swaps(out)
    summary = {"file": path, "lines": n, "last_seq": seq, "head": head.hex() if head else None,
               "continues_from": (first or {}).get("prev_file"), "ended": ended}
    return out, summary


def _writer(path: str, *pids) -> int | None:
    """The pid among pids that has path open (its agent, still writing)."""
    for pid in dict.fromkeys(p for p in pids if isinstance(p, int)):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.path.samefile(f"/proc/{pid}/fd/{fd}", path):
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def _merge_swaps(out: list) -> list:
    """Two lines swapped read as removed, reordered, removed: say it once."""
    merged, i = [], 0
    while i < len(out):
        a = out[i]
        b = out[i + 1] if i + 1 < len(out) else None
        if b is not None and a.kind == "removed" and b.kind == "reordered" and b.line == a.line + 1 \
                and b.seq is not None and a.seq is not None and b.seq < a.seq:
            merged.append(Finding(a.file, a.line, a.seq, "reordered",
                                  f"seq {a.seq} comes before seq {b.seq}: records moved"))
            c = out[i + 2] if i + 2 < len(out) else None
            i += 3 if c is not None and c.kind == "removed" and c.line == b.line + 1 else 2
            continue
        merged.append(a)
        i += 1
    return merged


def _record(line: bytes) -> dict:
    try:
        r = json.loads(line)
        return r if isinstance(r, dict) else {}
    except ValueError:
        return {}


def verify_files(paths: list[str]):
    """Files in the order they were written (rotated ones first)."""
    findings, summaries = [], []
    prev_head = prev_name = None
    for p in paths:
        f, s = verify_file(p, prev_head, prev_name)
        findings += f
        summaries.append(s)
        prev_head = bytes.fromhex(s["head"]) if s["head"] else None
        prev_name = os.path.basename(p)
    return findings, summaries


# --- the store's ledger --------------------------------------------------------

_KEYS = {"calls": "call_id", "events": "id", "messages": "id", "sessions": "id", "other": "id", "alerts": "id"}


def verify_db(path: str):
    """Check a store: the ledger's links, each row against its ledger entry,
    and rows the ledger does not know. Returns (findings, summary)."""
    import sqlite3
    name = os.path.basename(path)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    out: list[Finding] = []
    try:
        anchor = db.execute("SELECT seq, chain, first_ids FROM ledger_anchor WHERE id = 1").fetchone()
    except sqlite3.Error as e:
        db.close()
        return [Finding(name, 0, None, "unchained", f"no ledger in this store ({e}): written before it existed")], \
            {"file": path, "rows": 0}
    if anchor is None:
        db.close()
        return [Finding(name, 0, None, "unchained", "the ledger has no anchor")], {"file": path, "rows": 0}
    seq, head = anchor[0], bytes(anchor[1])
    first_ids = json.loads(anchor[2] or "{}")
    latest: dict[tuple[str, str], tuple[int, bytes, int]] = {}
    n = 0
    for s, t, key, d, chain, pruned in db.execute("SELECT seq, tbl, key, digest, chain, pruned FROM ledger "
                                                   "ORDER BY seq"):
        n += 1
        d, chain = bytes(d), bytes(chain)
        ok = link(head, ledger_body(t, key, d)) == chain
        if s == seq + 1 and not ok:
            out.append(Finding(name, 0, s, "edited", f"ledger entry for {t} {key} does not match its link"))
        elif s > seq + 1:
            out.append(Finding(name, 0, s, "removed", f"{s - seq - 1} ledger entr(y/ies) missing before seq {s}"))
        elif s <= seq:
            out.append(Finding(name, 0, s, "reordered", f"seq {s} after {seq}"))
        seq, head = s, chain
        latest[(t, key)] = (s, d, pruned)
    rows = 0
    for t, col in _KEYS.items():
        seen = set()
        for key, rec in db.execute(f"SELECT {col}, record FROM {t}"):
            rows += 1
            k = str(key)
            seen.add(k)
            entry = latest.get((t, k))
            if entry is None:
                if t != "calls" and key <= first_ids.get(t, 0):
                    continue          # written before the ledger existed
                out.append(Finding(name, 0, None, "inserted", f"{t} row {k} is not in the ledger"))
                continue
            data = rec.encode() if isinstance(rec, str) else bytes(rec)
            if record_digest(data) != entry[1]:
                out.append(Finding(name, 0, entry[0], "edited", f"{t} row {k} differs from what was written"))
        for (tt, k), (s, _, pruned) in latest.items():
            if tt == t and k not in seen and not pruned:
                out.append(Finding(name, 0, s, "removed", f"{t} row {k} was written and is gone "
                                                         f"(not by retention)"))
    db.close()
    return out, {"file": path, "rows": rows, "ledger": n, "last_seq": seq, "head": head.hex()}
