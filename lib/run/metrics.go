package run

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metrics is what a run exports to Prometheus.
type Metrics struct {
	Job      string
	Host     string
	Success  bool
	ExitCode int
	Start    time.Time
	Duration time.Duration
	Counts   map[string]int64
}

const lastSuccess = "cronkit_job_last_success_timestamp_seconds"

// Exposition renders m in Prometheus text format. prevSuccess is the last success
// timestamp to keep when this run failed (0: none known), so an alert on "no success
// for 2 hours" keeps working across failed runs.
func (m Metrics) Exposition(prevSuccess float64) []byte {
	var b bytes.Buffer
	gauge := func(name, help string, value string, labels string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, labels, value)
	}
	base := `job="` + escapeLabel(m.Job) + `"`
	success := prevSuccess
	if m.Success {
		success = float64(m.Start.Add(m.Duration).UnixMilli()) / 1000
	}
	if success > 0 {
		gauge(lastSuccess, "End of the last successful run (exit 0 or 3), Unix seconds.", formatFloat(success), base)
	}
	gauge("cronkit_job_last_run_timestamp_seconds", "End of the last run, Unix seconds.",
		formatFloat(float64(m.Start.Add(m.Duration).UnixMilli())/1000), base)
	gauge("cronkit_job_duration_seconds", "Duration of the last run.", formatFloat(m.Duration.Seconds()), base)
	gauge("cronkit_job_last_exit_code", "Exit code of the last run.", strconv.Itoa(m.ExitCode), base)
	names := make([]string, 0, len(m.Counts))
	for k := range m.Counts {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) > 0 {
		// Items of the last run, by kind: a gauge despite the _total name (the name is
		// part of the contract); rate over runs with sum_over_time, not rate().
		fmt.Fprintf(&b, "# HELP cronkit_job_items_total Items the last run processed, by kind.\n# TYPE cronkit_job_items_total gauge\n")
		for _, k := range names {
			fmt.Fprintf(&b, "cronkit_job_items_total{%s,kind=\"%s\"} %d\n", base, escapeLabel(k), m.Counts[k])
		}
	}
	return b.Bytes()
}

// WriteTextfile writes m for node_exporter's textfile collector: to a temporary file
// in the same directory, fsynced, then renamed over path, so the collector never
// reads half a file. A failed run keeps the previous file's last-success value.
func WriteTextfile(path string, m Metrics) error {
	prev := readLastSuccess(path)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(m.Exposition(prev)); err != nil {
		f.Close()
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	return nil
}

func readLastSuccess(path string) float64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, lastSuccess+"{") {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err == nil {
				return v
			}
		}
	}
	return 0
}

// Push sends m to a Prometheus Pushgateway with push-add semantics (POST): metrics
// of the same name in the group are replaced, others kept, so a failed run, which
// omits the last-success gauge, leaves the previous success in place.
func Push(ctx context.Context, client *http.Client, gateway string, m Metrics) error {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	u := strings.TrimRight(gateway, "/") + "/metrics/job/" + url.PathEscape(m.Job) + "/instance/" + url.PathEscape(m.Host)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(m.Exposition(0)))
	if err != nil {
		return fmt.Errorf("pushgateway: %w", err)
	}
	req.Header.Set("Content-Type", "text/plain; version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("pushgateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pushgateway: status %d", resp.StatusCode)
	}
	return nil
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
