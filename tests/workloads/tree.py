"""A process tree that does everything mcpwitness must follow.

usage: tree.py WORKDIR PORT
  root   opens root.txt; 3 threads each open thread-N.txt and connect to PORT
  child  execs `sh -c` that runs cat a.txt and a nested `sh -c 'cat a2.txt'`
  daemon double fork + setsid; the grandchild outlives the root, opens
         daemon.txt, connects to PORT, then runs `sh -c` that cats g.txt and
         finally creates the `done` marker
The root exits with status 5.
"""
import os
import socket
import sys
import threading
import time

wd, port = sys.argv[1], int(sys.argv[2])


def touch(name):
    with open(os.path.join(wd, name), "w") as f:
        f.write(name)


def connect():
    # an emulated kernel under load (the kernel matrix) can take long: the tests' slowness factor
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * float(os.environ.get("MW_TEST_SLOW", "1")))
    s.close()


for name in ("a.txt", "a2.txt", "g.txt", "daemon.txt"):
    touch(name)
touch("root.txt")


def worker(i):
    touch(f"thread-{i}.txt")
    connect()


threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()

a = os.fork()
if a == 0:
    os.execv("/bin/sh", ["sh", "-c", f"cat {wd}/a.txt >/dev/null; sh -c 'cat {wd}/a2.txt >/dev/null'; true"])

root_pid = os.getpid()
b = os.fork()
if b == 0:
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    # grandchild: reparented once b exits, outlives the root: it waits for the root's exit
    # (a zombie or gone), not a fixed time, so that it holds on a slow (emulated) kernel too
    end = time.time() + 120
    while time.time() < end:
        try:
            with open(f"/proc/{root_pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    break
        except FileNotFoundError:
            break
        time.sleep(0.02)
    touch("daemon.txt")
    connect()
    os.execv("/bin/sh", ["sh", "-c", f"cat {wd}/g.txt >/dev/null; touch {wd}/done"])

os.waitpid(a, 0)
os.waitpid(b, 0)
sys.exit(5)
