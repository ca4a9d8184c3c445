// The Go side of bench/tls_untracked.py --library go: n TLS round trips of 32
// bytes over loopback between its own client and server goroutines
// (crypto/tls), printing microseconds per round trip.
//
//	go_tls_loop N CERT KEY
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	pair, err := tls.LoadX509KeyPair(os.Args[2], os.Args[3])
	if err != nil {
		panic(err)
	}
	pem, _ := os.ReadFile(os.Args[2])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		panic(err)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			c.Write(buf[:k])
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		panic(err)
	}
	msg, back := make([]byte, 32), make([]byte, 32)
	t := time.Now()
	for i := 0; i < n; i++ {
		c.Write(msg)
		if _, err := io.ReadFull(c, back); err != nil {
			panic(err)
		}
	}
	fmt.Println(float64(time.Since(t).Microseconds()) / float64(n))
}
