package run

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parseExposition reads "name{labels} value" samples, failing on malformed lines.
func parseExposition(t *testing.T, b []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			if !strings.HasPrefix(line, "# HELP ") && !strings.HasPrefix(line, "# TYPE ") {
				t.Fatalf("bad comment line %q", line)
			}
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !strings.Contains(line[:i], "{") || !strings.HasSuffix(line[:i], "}") {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestTextfileKeepsLastSuccessAcrossFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cronkit_billing.prom")
	ok := Metrics{Job: "billing", Host: "h1", Success: true, Start: t0, Duration: 1500 * time.Millisecond,
		Counts: map[string]int64{"charges_written": 7}}
	if err := WriteTextfile(path, ok); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := parseExposition(t, b)
	if v := got[`cronkit_job_last_success_timestamp_seconds{job="billing"}`]; v != float64(t0.Unix())+1.5 {
		t.Fatalf("last success = %v", v)
	}
	if v := got[`cronkit_job_duration_seconds{job="billing"}`]; v != 1.5 {
		t.Fatalf("duration = %v", v)
	}
	if v := got[`cronkit_job_items_total{job="billing",kind="charges_written"}`]; v != 7 {
		t.Fatalf("items = %v", v)
	}

	failed := Metrics{Job: "billing", Host: "h1", Success: false, ExitCode: 1, Start: t0.Add(time.Hour), Duration: time.Second}
	if err := WriteTextfile(path, failed); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	got = parseExposition(t, b)
	if v := got[`cronkit_job_last_success_timestamp_seconds{job="billing"}`]; v != float64(t0.Unix())+1.5 {
		t.Fatalf("failed run lost last success: %v\n%s", v, b)
	}
	if v := got[`cronkit_job_last_exit_code{job="billing"}`]; v != 1 {
		t.Fatalf("exit code = %v", v)
	}
	// Atomic rename leaves no temporary files behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("files left in metrics dir: %v", entries)
	}
}

func TestLabelEscaping(t *testing.T) {
	got := parseExposition(t, Metrics{Job: `we"ird\job`, Start: t0, Success: true}.Exposition(0))
	if _, ok := got[`cronkit_job_duration_seconds{job="we\"ird\\job"}`]; !ok {
		t.Fatalf("escaped label missing: %v", got)
	}
}

func TestPushUsesPushAdd(t *testing.T) {
	var method, path string
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, path = r.Method, r.URL.Path
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	m := Metrics{Job: "abuse", Host: "h1", Success: false, ExitCode: 3, Start: t0, Duration: time.Second}
	if err := Push(context.Background(), srv.Client(), srv.URL, m); err != nil {
		t.Fatal(err)
	}
	if method != http.MethodPost || path != "/metrics/job/abuse/instance/h1" {
		t.Fatalf("push: %s %s", method, path)
	}
	got := parseExposition(t, body)
	if _, ok := got[`cronkit_job_last_success_timestamp_seconds{job="abuse"}`]; ok {
		t.Fatal("a failed run must not push a last-success value")
	}
	if got[`cronkit_job_last_exit_code{job="abuse"}`] != 3 {
		t.Fatalf("pushed: %s", body)
	}
}
