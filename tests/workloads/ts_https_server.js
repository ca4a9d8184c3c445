// An MCP server built on the official TypeScript SDK, over Streamable HTTP
// on HTTPS (Node's own TLS), in the SDK's stateful mode (one transport per
// Mcp-Session-Id), with two of the Python test server's tools.
//
//   node ts_https_server.js NPM_DIR PORT CERT KEY
// Prints "listening" once the port accepts connections.
"use strict";
const fs = require("fs");
const https = require("https");
const { randomUUID } = require("crypto");
const path = require("path");
const { createRequire } = require("module");

const [npm, port, cert, key] = process.argv.slice(2);
const sdk = createRequire(path.join(npm, "package.json"));
const { McpServer } = sdk("@modelcontextprotocol/sdk/server/mcp.js");
const { StreamableHTTPServerTransport } = sdk("@modelcontextprotocol/sdk/server/streamableHttp.js");
const { z } = sdk("zod");

function build() {
  const server = new McpServer({ name: "witness-ts-server", version: "1.0.0" });
  server.registerTool("echo", { description: "Echo text back.", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text }] }));
  server.registerTool("big", { description: "n bytes of x.", inputSchema: { n: z.number() } },
    async ({ n }) => ({ content: [{ type: "text", text: "x".repeat(n) }] }));
  return server;
}

const sessions = new Map();  // Mcp-Session-Id -> its transport (the SDK's stateful mode)
const srv = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c) => { body += c; });
  req.on("end", async () => {
    let transport = sessions.get(req.headers["mcp-session-id"]);
    if (!transport) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      await build().connect(transport);
    }
    await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined);
  });
});
srv.listen(Number(port), "127.0.0.1", () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => srv.close(() => process.exit(0)));
