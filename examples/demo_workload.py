"""A stand-in for a tool server: it forks, reads a file, runs a shell
pipeline and connects to a loopback port. Every one of these is seen from
the kernel when this runs under `mcpwitness run`."""
import os
import socket
import subprocess
import threading

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True).start()

pid = os.fork()
if pid == 0:
    with open("/etc/hostname") as f:
        f.read()
    with socket.create_connection(("127.0.0.1", port)) as c:
        pass
    os._exit(0)
os.waitpid(pid, 0)
out = subprocess.run(["sh", "-c", "cat /etc/os-release | head -n 1"], capture_output=True, text=True).stdout
print(f"demo: read /etc/hostname and connected to 127.0.0.1:{port} in child {pid}; os-release says {out.strip()}")
