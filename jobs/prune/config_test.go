package prune

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

func TestDefaultConfigIsValidAndEveryBoundNamesItsFlag(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	zero := DefaultConfig()
	zero.Usage, zero.Samples, zero.Outbox, zero.Runs = 0, 0, 0, 0
	if err := zero.Validate(); err != nil {
		t.Fatalf("0 (keep all) is refused: %v", err)
	}
	day := 24 * time.Hour
	for _, tc := range []struct {
		edit func(*Config)
		flag string
	}{
		{func(c *Config) { c.Usage = -day }, "--usage-retention"},
		{func(c *Config) { c.Usage = 29 * day }, "--usage-retention"},
		{func(c *Config) { c.Outbox = 29 * day }, "--outbox-retention"},
		{func(c *Config) { c.Samples = 6 * day }, "--sample-retention"},
		{func(c *Config) { c.Runs = time.Hour }, "--run-retention"},
		{func(c *Config) { c.Runs = -time.Hour }, "--run-retention"},
		{func(c *Config) { c.Batch = 0 }, "--batch"},
		{func(c *Config) { c.Batch = 100001 }, "--batch"},
		{func(c *Config) { c.Pause = -time.Second }, "--batch-pause"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !errors.Is(err, run.ErrUsage) || !strings.HasPrefix(err.Error(), tc.flag) {
			t.Errorf("%+v: %v, want a usage error naming %s", c, err, tc.flag)
		}
	}
	// The bounds themselves are accepted.
	c := DefaultConfig()
	c.Usage, c.Outbox, c.Samples, c.Runs = MinUsageRetention, MinOutboxRetention, MinSampleRetention, day
	if err := c.Validate(); err != nil {
		t.Fatalf("the minimums are refused: %v", err)
	}
}

func TestMonthStart(t *testing.T) {
	for in, want := range map[string]string{
		"2026-03-01T00:00:00Z":      "2026-03-01T00:00:00Z",
		"2026-02-28T23:59:59Z":      "2026-02-01T00:00:00Z",
		"2026-03-01T00:30:00+01:00": "2026-02-01T00:00:00Z", // still February in UTC
		"2024-12-31T23:59:59Z":      "2024-12-01T00:00:00Z",
	} {
		at, _ := time.Parse(time.RFC3339, in)
		if got := monthStart(at).Format(time.RFC3339); got != want {
			t.Errorf("monthStart(%s) = %s, want %s", in, got, want)
		}
	}
}
