package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// FuzzParseNow: --now never panics; a refusal is a usage error (exit 2) that names
// the flag and quotes the value; an accepted time is UTC and is what the value says.
func FuzzParseNow(f *testing.F) {
	for _, s := range []string{"2026-11-25T10:00:00Z", "2026-11-25", "2026-11-25T10:00:00+05:30", "yesterday", "",
		"2026-02-30", "9999-12-31T23:59:59.999999999-23:59", "0000-01-01T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25 10:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseNow(s)
		if err != nil {
			if !errors.Is(err, run.ErrUsage) || !strings.HasPrefix(err.Error(), "--now ") {
				t.Fatalf("refusal of %q is not a usage error naming --now: %v", s, err)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q parsed to a time not in UTC: %v", s, got)
		}
		if a, aerr := time.Parse(time.RFC3339, s); aerr == nil && !a.Equal(got) {
			t.Fatalf("%q parsed to %v, want %v", s, got, a)
		}
	})
}
