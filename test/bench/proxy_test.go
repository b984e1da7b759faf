package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestCountingProxy: what the upstream sends reaches the client unchanged
// and is counted, over several connections, before they close; what the
// client sends is not counted.
func TestCountingProxy(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	reply := bytes.Repeat([]byte("blob"), 50000) // 200,000 bytes
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 5)
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				c.Write(reply)
				io.Copy(io.Discard, c) // stay open, like a kept-alive connection
			}()
		}
	}()
	p, err := startCountingProxy(up.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	var open []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", p.addr())
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if _, err := c.Write([]byte("GET /")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(reply))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, reply) {
			t.Fatalf("connection %d: the reply came through altered: %v", i, err)
		}
		// The count is added just after the write that the client read
		// returns: wait for it, a while at most.
		want := int64((i + 1) * len(reply))
		deadline := time.Now().Add(5 * time.Second)
		for p.servedBytes() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := p.servedBytes(); n != want {
			t.Errorf("after %d replies on open connections: %d bytes counted, want %d", i+1, n, want)
		}
	}
	p.close()
	for _, c := range open {
		c.Close()
	}
}
