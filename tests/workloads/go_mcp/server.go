// A Model Context Protocol server in Go's standard library alone, over
// Streamable HTTP with TLS from crypto/tls (the handshake-era protocol: a
// server/discover probe is answered "method not found", so that clients fall
// back to initialize). Two tools: echo (its text back) and big (n bytes of
// "x"). JSON answers, no SSE.
//
//	server [-log FILE] [-http1] ADDR CERT KEY   prints "listening" once the port accepts
//	server -plain [-log FILE] ADDR              the same over plain HTTP (the control)
//
// -http1: HTTP/1.1 only (no "h2" offered in the handshake: a client that
// would choose HTTP/2, as Deno's fetch does, speaks HTTP/1.1 instead).
//
// -log: every message it received and sent, as the bytes that crossed, written
// after each one as [["sent", m], ["received", m], ...] from its client's side
// ("sent": what the client sent), for a client that keeps no log of its own.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

var (
	logPath string
	logMu   sync.Mutex
	logged  []any
)

// note logs one message as it crossed (way: from the client's side)
func note(way string, data []byte) {
	if logPath == "" {
		return
	}
	logMu.Lock()
	defer logMu.Unlock()
	logged = append(logged, []any{way, json.RawMessage(append([]byte(nil), data...))})
	out, _ := json.Marshal(logged)
	os.WriteFile(logPath, out, 0o644)
}

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

var tools = []map[string]any{
	{"name": "echo", "description": "its text back",
		"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}}},
	{"name": "big", "description": "n bytes of x",
		"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}}},
}

func text(s string) map[string]any {
	return map[string]any{"content": []map[string]any{{"type": "text", "text": s}}, "isError": false}
}

// answer gives the result or the error of one request
func answer(r request) (any, map[string]any) {
	switch r.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		json.Unmarshal(r.Params, &p)
		return map[string]any{"protocolVersion": p.ProtocolVersion, "capabilities": map[string]any{"tools": map[string]any{}},
			"serverInfo": map[string]any{"name": "witness-go-server", "version": "1"}}, nil
	case "ping":
		return map[string]any{}, nil
	case "tools/list":
		return map[string]any{"tools": tools}, nil
	case "tools/call":
		var p struct {
			Name      string `json:"name"`
			Arguments struct {
				Text string `json:"text"`
				N    int    `json:"n"`
			} `json:"arguments"`
		}
		if err := json.Unmarshal(r.Params, &p); err != nil {
			return nil, map[string]any{"code": -32602, "message": err.Error()}
		}
		switch p.Name {
		case "echo":
			return text(p.Arguments.Text), nil
		case "big":
			return text(strings.Repeat("x", p.Arguments.N)), nil
		}
		return nil, map[string]any{"code": -32602, "message": "unknown tool " + p.Name}
	}
	return nil, map[string]any{"code": -32601, "message": "method not found: " + r.Method}
}

func serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed) // no server-initiated stream (GET)
		return
	}
	body, err := io.ReadAll(req.Body)
	var r request
	if err == nil {
		err = json.Unmarshal(body, &r)
	}
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	note("sent", body)
	if len(r.ID) == 0 { // a notification
		w.WriteHeader(http.StatusAccepted)
		return
	}
	out := map[string]any{"jsonrpc": "2.0", "id": r.ID}
	if res, e := answer(r); e != nil {
		out["error"] = e
	} else {
		out["result"] = res
	}
	data, _ := json.Marshal(out)
	note("received", data)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Mcp-Session-Id", "go-session-1")
	w.Write(data)
}

func main() {
	plain := flag.Bool("plain", false, "plain HTTP")
	http1 := flag.Bool("http1", false, "HTTP/1.1 only")
	flag.StringVar(&logPath, "log", "", "log the messages here")
	flag.Parse()
	args := flag.Args()
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening")
	srv := &http.Server{Handler: http.HandlerFunc(serve)}
	if *http1 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	if *plain {
		err = srv.Serve(ln)
	} else {
		err = srv.ServeTLS(ln, args[1], args[2])
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
