package run

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/golden"
)

func sampleReport(dry bool) *Report {
	r := NewReport("billing")
	r.RunID = "01JCRONKIT0000000000000000"
	r.DryRun = dry
	r.Count("hours_rated", 3)
	r.Count("charges_written", 12)
	// Added out of order on purpose: rendering sorts.
	r.Act("rate", "hour 2026-11-01T10:00Z", "4 charges, EUR 1.234000")
	r.Act("charge", "invoice 10", "EUR 20.00 attempt 1: succeeded")
	r.Act("charge", "invoice 9", "USD 5.00 attempt 2: soft decline")
	r.Problem("unpriced", "account 42", "product gpu.a100 has no price at 2026-11-01T10:00Z")
	r.Problem("unknown_account", "account 100", "usage for an account that does not exist")
	return r
}

func TestReportGolden(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		dry          bool
	}{
		{"report.txt.golden", "text", false},
		{"report_dry.txt.golden", "text", true},
		{"report.json.golden", "json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := sampleReport(tc.dry).Write(&b, tc.format); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.name, b.Bytes())
		})
	}
}

func TestEmptyReportSaysNothingToDo(t *testing.T) {
	var b bytes.Buffer
	r := NewReport("abuse")
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b.Bytes(), []byte("nothing to do")) {
		t.Fatalf("empty report: %q", b.String())
	}
}

func TestNaturalCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"account 9", "account 10", -1},
		{"account 10", "account 9", 1},
		{"account 010", "account 10", 0},
		{"a", "b", -1},
		{"invoice 2 attempt 10", "invoice 2 attempt 9", 1},
		{"x", "x1", -1},
	} {
		got := naturalCompare(tc.a, tc.b)
		if sign(got) != tc.want {
			t.Errorf("naturalCompare(%q, %q) = %d, want sign %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func TestActionFieldsAreFlatJSONKeys(t *testing.T) {
	rep := NewReport("billing")
	at := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
	fields := append([]Field{Int("account_id", 42), Int("invoice_id", 9007199254740993), Time("due_at", at)},
		Money("amount", "12.30", "EUR")...)
	fields = append(fields, Str("kind", "shadowed"))
	rep.Act("charge", "invoice 7", "12.30 EUR", fields...)
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	want := `{"kind":"charge","subject":"invoice 7","detail":"12.30 EUR","account_id":42,"invoice_id":9007199254740993,"due_at":"2026-03-29T01:30:00Z","amount":"12.30","currency":"EUR"}`
	var compact bytes.Buffer
	var doc struct{ Actions []json.RawMessage }
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&compact, doc.Actions[0]); err != nil {
		t.Fatal(err)
	}
	if compact.String() != want {
		t.Fatalf("action JSON\n got %s\nwant %s", compact.String(), want)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	a := back.Actions[0]
	if a.Kind != "charge" || a.Field("invoice_id") != json.Number("9007199254740993") || a.Field("currency") != "EUR" {
		t.Fatalf("round trip: %+v", a)
	}
}
