package billing

import (
	"errors"
	"testing"
)

func TestParseMicros(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Micros
		err  bool
	}{
		{"0", 0, false},
		{"12.345600", 12_345_600, false},
		{"-0.5", -500_000, false},
		{"+3", 3_000_000, false},
		{".25", 250_000, false},
		{"7.", 7_000_000, false},
		{"1.123456000000", 1_123_456, false}, // SUM() of DECIMAL can carry more zeros
		{"1.1234567", 0, true},               // never rounded silently
		{"", 0, true},
		{".", 0, true},
		{"1e3", 0, true},
		{"1,5", 0, true},
		{"--1", 0, true},
		{"9223372036854.775807", 0, true},
		{"9223372036853.999999", 9_223_372_036_853_999_999, false},
	} {
		got, err := ParseMicros(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseMicros(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrAmount) {
			t.Errorf("ParseMicros(%q): %v is not ErrAmount", tc.in, err)
		}
	}
}

func TestMicrosString(t *testing.T) {
	for m, want := range map[Micros]string{0: "0.000000", 1: "0.000001", -1: "-0.000001", 12_345_600: "12.345600", -2_500_000: "-2.500000"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(m), got, want)
		}
	}
}

func TestToMinorRoundsHalfUpOnce(t *testing.T) {
	for _, tc := range []struct {
		m        Micros
		currency string
		want     int64
	}{
		{125_000, "USD", 13},      // 0.125 -> 0.13: half up
		{124_999, "USD", 12},      // just below half
		{35_001, "USD", 4},        // three hourly 0.011667s: 4 cents, not 3
		{-125_000, "USD", -13},    // away from zero, as MySQL's ROUND
		{0, "EUR", 0},             // nothing due
		{123_456_000, "JPY", 123}, // zero decimals
		{123_500_000, "JPY", 124},
		{1_234_500, "KWD", 1235}, // three decimals: 1.2345 -> 1.235
		{1_234_499, "kwd", 1234}, // codes are case-insensitive
		{1, "CLF", 0},            // four decimals: 0.000001 -> 0.0000
		{50, "CLF", 1},           // 0.00005 -> 0.0001
	} {
		got, err := ToMinor(tc.m, tc.currency)
		if err != nil || got != tc.want {
			t.Errorf("ToMinor(%s, %s) = %d, %v; want %d", tc.m, tc.currency, got, err, tc.want)
		}
	}
	if _, err := ToMinor(1, "XYZ"); !errors.Is(err, ErrUnknownCurrency) {
		t.Errorf("unknown currency: %v", err)
	}
}

func TestFormatMinor(t *testing.T) {
	for _, tc := range []struct {
		minor    int64
		currency string
		want     string
	}{
		{1234, "USD", "USD 12.34"},
		{5, "EUR", "EUR 0.05"},
		{-250, "GBP", "GBP -2.50"},
		{1200, "JPY", "JPY 1200"},
		{1235, "KWD", "KWD 1.235"},
		{99, "XYZ", "XYZ 99"},
	} {
		if got := FormatMinor(tc.minor, tc.currency); got != tc.want {
			t.Errorf("FormatMinor(%d, %s) = %q, want %q", tc.minor, tc.currency, got, tc.want)
		}
	}
}

func TestMicrosAddRefusesOverflow(t *testing.T) {
	max := Micros(1<<63 - 1)
	if _, err := max.Add(1); !errors.Is(err, ErrAmount) {
		t.Fatalf("overflow not refused: %v", err)
	}
	if s, err := Micros(2).Add(-3); err != nil || s != -1 {
		t.Fatalf("2 + -3 = %d, %v", s, err)
	}
}
