package main

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// countingProxy forwards TCP connections to an upstream address and counts
// the bytes the upstream sent back: for a registry behind it, what it served.
// It counts below TLS, so it needs neither the registry's key nor a change
// to the registry's configuration; the client only dials another port of
// the same host, which the registry's certificate covers alike.
type countingProxy struct {
	ln       net.Listener
	upstream string
	served   atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// startCountingProxy listens on a free port of 127.0.0.1.
func startCountingProxy(upstream string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr is the proxy's "127.0.0.1:PORT".
func (p *countingProxy) addr() string { return p.ln.Addr().String() }

// servedBytes is what the upstream has sent so far, counted as it is
// forwarded (a kept-alive connection counts before it closes).
func (p *countingProxy) servedBytes() int64 { return p.served.Load() }

func (p *countingProxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.conns, c)
		return true
	}
	if p.conns == nil { // closed
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *countingProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, true) || !p.track(up, true) {
			c.Close()
			up.Close()
			return
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(up, c)
			up.Close()
			p.track(up, false)
		}()
		go func() {
			defer p.wg.Done()
			io.Copy(countingWriter{c, &p.served}, up)
			c.Close()
			p.track(c, false)
		}()
	}
}

// close stops listening, cuts the open connections and waits for their
// copies to end.
func (p *countingProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countingWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(int64(n))
	return n, err
}
