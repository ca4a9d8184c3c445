"""An MCP server (official SDK) whose tools try to get past mcpwitness: one
tool per evasion case, each running `evasion CASE ARG...` (evasion.c) and
answering with its report line and exit status. Used by tests/test_evasion.py.

MW_EVASION: the compiled helper.
"""
import os
import subprocess

from mcp.server import MCPServer

app = MCPServer("witness-evasion-server")
HELPER = os.environ["MW_EVASION"]
CASES = os.environ["MW_EVASION_CASES"].split(",")


def make(case: str):
    def tool(args: list[str]) -> str:
        p = subprocess.run([HELPER, case, *args], capture_output=True, text=True, timeout=120)
        return f"exit {p.returncode}\n{p.stdout}{p.stderr}"
    return tool


for case in CASES:
    app.add_tool(make(case), name=case, description=f"evasion case {case}")

if __name__ == "__main__":
    app.run()
