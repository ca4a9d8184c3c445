"""Print an mcpwitness JSON Lines file as a short timeline: every exec,
fork, exit and connect, and the opens outside the usual library paths."""
import json
import sys

NOISE = ("/usr/lib", "/lib", "/etc/ld.so", "/proc/", "/usr/share/locale", "/sys/", "/dev/", "/usr/local/lib")
path = sys.argv[1]
events = [json.loads(line) for line in open(path)]
start = next(e for e in events if e["type"] == "start")
stats = next(e for e in events if e["type"] == "stats")
print(f"{path}: {sum(stats['events'].values())} events, lost {stats['lost']}")
print(f"command: {' '.join(start['command'])} (pid {start['root_pid']})")
hidden = 0
for e in events:
    t = e["type"]
    lineage = " <- ".join(map(str, [e.get("pid")] + e.get("ancestry", [])))
    if t == "exec" and e["result"] == 0:
        what = f"exec    {e['exe']}  argv={e['argv']}"
    elif t == "exec":
        what = f"exec    {e['filename']} failed {e['error']}"
    elif t == "fork":
        what = f"fork    -> child {e['child_pid']}"
    elif t == "exit":
        what = f"exit    code={e['exit_code']}" + (f" signal={e['signal_name']}" if e["signal"] else "")
    elif t == "connect":
        peer = e["unix_path"] or f"{e['address']}:{e['port']}"
        what = f"connect {e['family']} {e['protocol'] or ''} {peer} -> {e['error'] or 'ok'}"
    elif t == "open":
        p = e["path"] if e["path"].startswith("/") else (e["resolved"] or e["path"])
        if p.startswith(NOISE) or ("/python3" in p and "/lib/" in p):
            hidden += 1
            continue
        if e["resolved"] and e["resolved"] != p:
            p += f" (= {e['resolved']})"
        what = f"open    {p} {'|'.join(e['flags'])} -> {e['error'] or 'fd ' + str(e['result'])}"
    else:
        continue
    print(f"  {e['time'][11:26]}  {e['comm']:<10} {lineage:<18} {what}")
print(f"  ({hidden} opens of shared libraries, locales and /proc not shown)")
