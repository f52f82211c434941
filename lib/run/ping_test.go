package run

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

type pingRecorder struct {
	mu   sync.Mutex
	reqs []string
}

func (p *pingRecorder) handler(status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		p.mu.Unlock()
		w.WriteHeader(status)
	})
}

func (p *pingRecorder) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reqs...)
}

func TestPingerPaths(t *testing.T) {
	rec := &pingRecorder{}
	srv := httptest.NewServer(rec.handler(200))
	defer srv.Close()
	p := &Pinger{URL: srv.URL + "/ping/abc-uuid", Client: srv.Client()}
	ctx := context.Background()
	p.Start(ctx, "RID1")
	p.Finish(ctx, "RID1", 0, []byte("ok"))
	p.Finish(ctx, "RID2", 3, nil)
	want := []string{
		"POST /ping/abc-uuid/start?rid=RID1",
		"POST /ping/abc-uuid?rid=RID1",
		"POST /ping/abc-uuid/3?rid=RID2",
	}
	got := rec.got()
	if len(got) != len(want) {
		t.Fatalf("pings = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ping %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestPingerRetriesThenGivesUp(t *testing.T) {
	rec := &pingRecorder{}
	srv := httptest.NewServer(rec.handler(503))
	defer srv.Close()
	p := &Pinger{URL: srv.URL, Client: srv.Client(), Retries: 2, Backoff: time.Millisecond}
	p.Finish(context.Background(), "R", 1, nil)
	if n := len(rec.got()); n != 3 {
		t.Fatalf("attempts = %d, want 3", n)
	}
	// A nil pinger or an empty URL does nothing.
	var nilPinger *Pinger
	nilPinger.Start(context.Background(), "R")
	(&Pinger{}).Start(context.Background(), "R")
}
