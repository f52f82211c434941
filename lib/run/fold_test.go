package run

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// rateHour is a rating action as billing writes it.
func rateHour(rep *Report, h time.Time, charges, unrated int64, amounts map[string]string) {
	rep.Act("rate", "hour "+h.Format("2006-01-02T15:04Z"), "charges of "+h.Format("15:04"),
		Seq("hour", h), Tally("charges", charges), Tally("unrated", unrated), Amounts("amounts", amounts))
}

func TestTextReportFoldsRunsOfLikeActions(t *testing.T) {
	rep := NewReport("billing")
	rep.RunID = "01JFOLD0000000000000000000"
	h0 := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC)
	// Three hours, a gap (hours without usage are not rated), two more: one run of
	// five, with sums per currency and the most precise decimals kept.
	rateHour(rep, h0, 3, 0, map[string]string{"USD": "0.511667", "EUR": "1.2"})
	rateHour(rep, h0.Add(time.Hour), 3, 1, map[string]string{"USD": "0.000001"})
	rateHour(rep, h0.Add(2*time.Hour), 2, 0, map[string]string{"USD": "1", "JPY": "60"})
	rateHour(rep, h0.Add(7*time.Hour), 2, 0, map[string]string{"USD": "-0.5"})
	rateHour(rep, h0.Add(8*time.Hour), 0, 0, nil)
	// Two like actions stay two lines.
	for i := range 2 {
		h := h0.Add(time.Duration(i) * time.Hour)
		rep.Act("close", "day "+h.Format("15"), "closed", Seq("day", h), Str("state", "ok"))
	}
	// Invoices have no Seq: their ids are the information, never folded.
	for id := range int64(4) {
		rep.Act("invoice", "invoice "+string(rune('1'+id)), "opened",
			append([]Field{Int("invoice_id", id+1)}, Money("amount", "1.00", "USD")...)...)
	}
	// A fact that changes breaks the run: 3 + 1 + 3 (the run of one stays as is).
	for i, state := range []string{"a", "a", "a", "b", "c", "c", "c"} {
		h := h0.Add(time.Duration(i) * 24 * time.Hour)
		rep.Problem("late", "day "+h.Format("01-02"), "late "+state,
			append([]Field{Seq("day", h), Str("state", state)}, Money("amount", "0.10", "EUR")...)...)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `billing 01JFOLD0000000000000000000 run

ACTION   SUBJECT                                          DETAIL
close    day 00                                           closed
close    day 01                                           closed
invoice  invoice 1                                        opened
invoice  invoice 2                                        opened
invoice  invoice 3                                        opened
invoice  invoice 4                                        opened
rate     hour 2025-10-01T00:00Z .. 2025-10-01T08:00Z (5)  10 charges, 1 unrated, EUR 1.2, JPY 60, USD 1.011668

PROBLEM  SUBJECT                 DETAIL
late     day 10-01 .. 10-03 (3)  each late a; total EUR 0.30
late     day 10-04               late b
late     day 10-05 .. 10-07 (3)  each late c; total EUR 0.30
`
	if b.String() != want {
		t.Fatalf("text report:\n%s\nwant:\n%s", b.String(), want)
	}

	// JSON keeps every item, with its typed fields.
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Actions  []map[string]any
		Problems []map[string]any
	}
	dec := json.NewDecoder(&b)
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Actions) != 11 || len(doc.Problems) != 7 {
		t.Fatalf("JSON has %d actions and %d problems, want 11 and 7", len(doc.Actions), len(doc.Problems))
	}
	first := doc.Actions[len(doc.Actions)-5]
	if first["hour"] != "2025-10-01T00:00:00Z" || first["charges"] != json.Number("3") ||
		first["amounts"].(map[string]any)["USD"] != "0.511667" || first["detail"] != "charges of 00:00" {
		t.Fatalf("first rated hour in JSON: %v", first)
	}
	if empty := doc.Actions[len(doc.Actions)-1]["amounts"]; len(empty.(map[string]any)) != 0 {
		t.Fatalf("an hour without charges: amounts %v, want {}", empty)
	}
}

func TestFoldShowsARunUnfoldedRatherThanWithAWrongSum(t *testing.T) {
	h0 := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC)
	for _, bad := range []string{"1e3", "1/3", "0.", "", "NaN", "1,5"} {
		var as []Action
		for i, amt := range []string{"1.00", bad, "2.00"} {
			h := h0.Add(time.Duration(i) * time.Hour)
			as = append(as, Action{Kind: "rate", Subject: "hour " + h.Format("15"),
				Fields: []Field{Seq("hour", h), Amounts("amounts", map[string]string{"USD": amt})}})
		}
		if got := fold(as); len(got) != 3 {
			t.Errorf("amount %q: folded into %d lines, want the 3 unfolded", bad, len(got))
		}
	}
	// Seq must increase: the same hour twice (two accounts, say) is not a range.
	as := []Action{
		{Kind: "x", Subject: "a", Fields: []Field{Seq("hour", h0)}},
		{Kind: "x", Subject: "b", Fields: []Field{Seq("hour", h0)}},
		{Kind: "x", Subject: "c", Fields: []Field{Seq("hour", h0)}},
	}
	if got := fold(as); len(got) != 3 {
		t.Errorf("equal Seq values folded into %d lines", len(got))
	}
}

func TestSumDecimalsIsExact(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"0.1", "0.2"}, "0.3"},
		{[]string{"0.511667", "1.2"}, "1.711667"},
		{[]string{"60", "1609"}, "1669"},
		{[]string{"-0.5", "0.25"}, "-0.25"},
		{[]string{"92233720368547.758070", "92233720368547.758070"}, "184467440737095.516140"},
	} {
		got, ok := sumDecimals(tc.in)
		if !ok || got != tc.want {
			t.Errorf("sumDecimals(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestFoldedSubjectKeepsWhatDiffers(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"hour 2025-10-01T00:00Z", "hour 2025-10-31T23:00Z", "2025-10-31T23:00Z"},
		{"account 4 vm 01", "account 4 vm 09", "09"},
		{"x", "y", "y"},
		{"same", "same", "same"},
	} {
		if got := afterCommonWords(tc.a, tc.b); got != tc.want {
			t.Errorf("afterCommonWords(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}
