// An MCP client built on the official TypeScript SDK, as Node hosts (Claude
// Desktop, Cursor, VS Code, the Inspector) are: it launches a stdio server
// with the SDK's StdioClientTransport (Node gives the child's stdin and
// stdout as two Unix socketpairs), or talks Streamable HTTP to a URL, makes
// the calls it is given and logs every message it sent and received (the
// ground truth), as tests/mcp_client.py does for the Python SDK.
//
//   node ts_client.js CONFIG.json
//   CONFIG: {"npm": dir with node_modules, "log": path, "command": ..., "args": [...], "env": {...},
//            "pidfile": where to write the server's pid, "go": a file to wait for before the calls,
//            "start": a file to wait for before connecting
//            | "url": "http://127.0.0.1:PORT/mcp",
//            "calls": [["tool", name, {arguments}] | ["resource", uri] | ["tools/list"]]}
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const sdk = createRequire(path.join(cfg.npm, "package.json"));
const { Client } = sdk("@modelcontextprotocol/sdk/client/index.js");

const log = [];

function recorded(transport) {
  const send = transport.send.bind(transport);
  transport.send = async (m, opts) => {
    log.push(["sent", m]);
    return send(m, opts);
  };
  // Client.connect sets onmessage: what the transport hands it is logged first
  let inner;
  Object.defineProperty(transport, "onmessage", {
    configurable: true,
    get: () => (inner ? (m, extra) => { log.push(["received", m]); inner(m, extra); } : undefined),
    set: (f) => { inner = f; },
  });
  return transport;
}

async function main() {
  let transport;
  if (cfg.url) {
    const { StreamableHTTPClientTransport } = sdk("@modelcontextprotocol/sdk/client/streamableHttp.js");
    transport = new StreamableHTTPClientTransport(new URL(cfg.url));
  } else {
    const { StdioClientTransport } = sdk("@modelcontextprotocol/sdk/client/stdio.js");
    transport = new StdioClientTransport({
      command: cfg.command, args: cfg.args || [], env: { ...process.env, ...(cfg.env || {}) }, stderr: "inherit",
    });
  }
  const client = new Client({ name: cfg.name || "ts-client", version: "1.0.0" }, { capabilities: {} });
  if (cfg.start) {
    while (!fs.existsSync(cfg.start)) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  await client.connect(recorded(transport));
  if (cfg.pidfile) {  // the server's pid, for a test that attaches to it (run --pid)
    fs.writeFileSync(cfg.pidfile, String(transport.pid));
  }
  if (cfg.go) {  // wait for the test to say go
    while (!fs.existsSync(cfg.go)) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const results = [];
  for (const c of cfg.calls) {
    if (c[0] === "tool") {
      const r = await client.callTool({ name: c[1], arguments: c[2] || {} });
      results.push((r.content || []).map((x) => x.text || "").join(" "));
    } else if (c[0] === "resource") {
      const r = await client.readResource({ uri: c[1] });
      results.push((r.contents || []).map((x) => x.text || "").join(" "));
    } else if (c[0] === "tools/list") {
      const r = await client.listTools();
      results.push(r.tools.map((t) => t.name).join(" "));
    }
  }
  if (cfg.url && transport.terminateSession) {
    await transport.terminateSession();
  }
  await client.close();
  fs.writeFileSync(cfg.log, JSON.stringify(log));
  // (not a line that starts like JSON: a tracked client's own output is not an MCP stream)
  process.stdout.write("results: " + JSON.stringify(results) + "\n");
}

main().catch((e) => {
  process.stderr.write(`ts_client: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
