package main

// The fault suite's network: toxiproxy v2.12.0 as a library, one proxy per
// dependency, on loopback, in the test process. Jobs reach MariaDB, the CloudStack
// and Stripe fakes and the SMTP sink only through these proxies, so the suite can add
// latency, cut connections, take a dependency down and bring it back.

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// chaosNet is one test's toxiproxy.
type chaosNet struct {
	srv *toxiproxy.ApiServer
}

func newChaosNet() *chaosNet {
	m := toxiproxy.NewMetricsContainer(prometheus.NewRegistry())
	return &chaosNet{srv: toxiproxy.NewServer(m, zerolog.Nop())}
}

// chaosLink is one dependency behind its proxy.
type chaosLink struct {
	name string
	mu   sync.Mutex
	p    *toxiproxy.Proxy
}

// link starts a proxy to upstream (host:port) on a free loopback port.
func (n *chaosNet) link(t *testing.T, name, upstream string) *chaosLink {
	t.Helper()
	p := toxiproxy.NewProxy(n.srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy %s: %v", name, err)
	}
	l := &chaosLink{name: name, p: p}
	t.Cleanup(l.down)
	return l
}

// Addr is where jobs connect instead of the dependency.
func (l *chaosLink) Addr() string { return l.p.Listen }

// Port is Addr's port.
func (l *chaosLink) Port() string {
	_, port, _ := net.SplitHostPort(l.p.Listen)
	return port
}

// toxic adds a toxic (toxiproxy's JSON shape) to every connection, present and future.
func (l *chaosLink) toxic(t *testing.T, typ, stream string, attrs map[string]int64) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": typ + "_" + stream, "type": typ, "stream": stream, "attributes": attrs})
	if _, err := l.p.Toxics.AddToxicJson(strings.NewReader(string(body))); err != nil {
		t.Fatalf("toxic %s on %s: %v", typ, l.name, err)
	}
}

// clear removes every toxic and brings the proxy up again.
func (l *chaosLink) clear(t *testing.T) {
	t.Helper()
	l.p.Toxics.ResetToxics(context.Background())
	l.up(t)
}

// down closes the listener and every open connection: the dependency is gone.
func (l *chaosLink) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.p.Stop()
}

// up listens again on the same address.
func (l *chaosLink) up(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p.Enabled {
		return
	}
	// The port was just released; another process may grab it in between, rarely.
	var err error
	for i := 0; i < 50; i++ {
		if err = l.p.Start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("toxiproxy %s up again on %s: %v", l.name, l.p.Listen, err)
}

// rewriteEnv points env's values that name upstream (host:port, or the bare port in
// CRONKIT_SMTP_PORT) at the link instead.
func (l *chaosLink) rewriteEnv(env map[string]string, upstream string) {
	_, upPort, _ := net.SplitHostPort(upstream)
	for k, v := range env {
		if k == "CRONKIT_SMTP_PORT" && v == upPort {
			env[k] = l.Port()
			continue
		}
		env[k] = strings.ReplaceAll(v, upstream, l.Addr())
	}
}

// hostPort returns the host:port inside a DSN's tcp(...) or a URL.
func hostPort(s string) string {
	if i := strings.Index(s, "tcp("); i >= 0 {
		rest := s[i+4:]
		return rest[:strings.IndexByte(rest, ')')]
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}
