// A Model Context Protocol client in Go's standard library alone: Streamable
// HTTP over crypto/tls, the handshake-era protocol (initialize, then
// notifications/initialized), then tools/list and the tool calls it is told.
// It logs every message it sent and received, as [["sent", m], ["received",
// m], ...], and what it sent is its own compact serialization.
//
//	client URL CA LOG CALLS [START]
//
// CALLS: JSON [["echo", {"text": "hi"}], ["big", {"n": 300000}]]; CA "" for
// plain HTTP; START: a file whose existence says go (it waits for it first).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

type message = map[string]any

var (
	log     []any
	client  *http.Client
	url     string
	session string
	nextID  = 1
)

func post(m message) message {
	data, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	log = append(log, []any{"sent", m})
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
		session = s
	}
	if _, isRequest := m["id"]; !isRequest {
		if resp.StatusCode != http.StatusAccepted {
			panic(fmt.Sprintf("notification answered %d", resp.StatusCode))
		}
		return nil
	}
	var out message
	for _, data := range messages(resp.Header.Get("Content-Type"), body) {
		var got message
		if err := json.Unmarshal(data, &got); err != nil {
			panic(fmt.Sprintf("status %d, body %q: %v", resp.StatusCode, body, err))
		}
		log = append(log, []any{"received", got})
		if _, answer := got["method"]; !answer {
			out = got
		}
	}
	if out == nil {
		panic(fmt.Sprintf("status %d, no answer in %q", resp.StatusCode, body))
	}
	return out
}

// messages are the JSON-RPC messages of an answer: its body, or the data of
// each event of an SSE stream (data lines joined by newlines)
func messages(contentType string, body []byte) [][]byte {
	if !strings.HasPrefix(contentType, "text/event-stream") {
		return [][]byte{body}
	}
	var out [][]byte
	var data []string
	for _, line := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		switch {
		case line == "":
			if len(data) > 0 {
				out = append(out, []byte(strings.Join(data, "\n")))
			}
			data = nil
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if len(data) > 0 {
		out = append(out, []byte(strings.Join(data, "\n")))
	}
	return out
}

func request(method string, params any) message {
	m := message{"jsonrpc": "2.0", "id": nextID, "method": method, "params": params}
	nextID++
	out := post(m)
	if out["error"] != nil {
		panic(fmt.Sprintf("%s: %v", method, out["error"]))
	}
	return out
}

func main() {
	url = os.Args[1]
	if len(os.Args) > 5 {
		for {
			if _, err := os.Stat(os.Args[5]); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	tr := &http.Transport{}
	if os.Args[2] != "" {
		pem, err := os.ReadFile(os.Args[2])
		if err != nil {
			panic(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client = &http.Client{Transport: tr}
	var calls [][2]json.RawMessage
	if err := json.Unmarshal([]byte(os.Args[4]), &calls); err != nil {
		panic(err)
	}
	request("initialize", message{"protocolVersion": "2025-06-18", "capabilities": message{},
		"clientInfo": message{"name": "witness-go-client", "version": "1"}})
	post(message{"jsonrpc": "2.0", "method": "notifications/initialized"})
	request("tools/list", message{})
	for _, c := range calls {
		var name string
		var args any
		json.Unmarshal(c[0], &name)
		json.Unmarshal(c[1], &args)
		out := request("tools/call", message{"name": name, "arguments": args})
		res, _ := json.Marshal(out["result"])
		if len(res) > 200 {
			res = res[:200]
		}
		fmt.Println(string(res))
	}
	data, _ := json.Marshal(log)
	if err := os.WriteFile(os.Args[3], data, 0o644); err != nil {
		panic(err)
	}
}
