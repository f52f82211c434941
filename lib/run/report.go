package run

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a job run did, or in a dry run what it would do: the same value is
// the plan and the result, so a dry run is an honest preview.
type Report struct {
	Job    string `json:"job"`
	RunID  string `json:"run_id"`
	DryRun bool   `json:"dry_run"`
	// Counts are the run's tallies (e.g. "charges_written"). Rendered sorted by name.
	Counts map[string]int64 `json:"counts"`
	// Actions are the things done (or planned), one per entity.
	Actions []Action `json:"actions"`
	// Problems are item-level errors and discrepancies; any makes the exit code 3.
	Problems []Action `json:"problems"`
}

// Action is one line of a report: what (Kind), on what (Subject), and the detail.
// Fields carry the same facts for programs: in JSON they are flat keys beside kind,
// subject and detail (docs/report-json.md); the text report shows only the three
// strings, except where it folds a run of like actions into one line (see Seq).
type Action struct {
	Kind    string
	Subject string
	Detail  string
	Fields  []Field
}

// Field is one structured value of an action. Build them with Int, Str, Time and
// Money so every job spells a key's type the same way. Seq, Tally and Amounts are
// rendered in JSON like Time, Int and a map, and also tell the text report how to
// fold a run of like actions into one line (see WriteText).
type Field struct {
	Key   string
	Value any
	role  fieldRole
}

// fieldRole is what a field means to folding; JSON ignores it.
type fieldRole uint8

const (
	roleFact    fieldRole = iota // must be equal across a folded run
	roleSeq                      // orders the run: strictly increasing
	roleTally                    // an int64, summed
	roleDecimal                  // a decimal string, summed (with an equal currency)
	roleAmounts                  // currency -> decimal string, summed per currency
)

// Int is an integer field: ids (account_id, invoice_id, case_id) and counts.
func Int(key string, v int64) Field { return Field{Key: key, Value: v} }

// Str is a string field: state, step, event, product...
func Str(key, v string) Field { return Field{Key: key, Value: v} }

// Bool is a true/false field (replay, ...).
func Bool(key string, v bool) Field { return Field{Key: key, Value: v} }

// Time is a time field, rendered as RFC 3339 in UTC (or in t's zone with offset when
// the zone matters, as for a recipient's local time: use TimeIn).
func Time(key string, t time.Time) Field {
	return Field{Key: key, Value: t.UTC().Format(time.RFC3339)}
}

// TimeIn renders t in its own location, with its offset (local send times).
func TimeIn(key string, t time.Time) Field { return Field{Key: key, Value: t.Format(time.RFC3339)} }

// Money is an amount as an exact decimal string, with its currency: two fields,
// "amount" and "currency" (or key and "currency" when key is not "amount"). In a
// folded run of like actions with one currency, the text report shows the sum.
func Money(key, decimal, currency string) []Field {
	return []Field{{Key: key, Value: decimal, role: roleDecimal}, {Key: "currency", Value: currency}}
}

// Seq is a time that places an action in a series, such as the hour a rating action
// rated. JSON renders it as Time does. The text report folds a run of three or more
// actions of one kind that differ only in their Seq field (strictly increasing) and
// in their Tally, Money and Amounts fields into one line: first and last subject,
// the number of actions and the sums. Use it only where the range tells the story
// (a catch-up of hours), not for ids, whose list is the information.
func Seq(key string, t time.Time) Field {
	return Field{Key: key, Value: t.UTC().Format(time.RFC3339), role: roleSeq}
}

// Tally is an integer that adds up (charges written in an hour): rendered as Int,
// summed when the text report folds a run of actions.
func Tally(key string, n int64) Field { return Field{Key: key, Value: n, role: roleTally} }

// Amounts is money in several currencies at once (an hour's charges), as a JSON
// object from currency code to exact decimal string; summed per currency when the
// text report folds a run of actions. A nil or empty map renders as {}.
func Amounts(key string, byCurrency map[string]string) Field {
	m := make(map[string]string, len(byCurrency))
	for c, v := range byCurrency {
		m[c] = v
	}
	return Field{Key: key, Value: m, role: roleAmounts}
}

// reservedKeys are the action's own keys; a field may not shadow them.
var reservedKeys = map[string]bool{"kind": true, "subject": true, "detail": true}

// MarshalJSON renders the action as one flat object: kind, subject, detail, then the
// fields in the order they were given (a later field with the same key wins).
func (a Action) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	write := func(k string, v any) error {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("report field %s: %w", k, err)
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
		return nil
	}
	_ = write("kind", a.Kind)
	_ = write("subject", a.Subject)
	if a.Detail != "" {
		_ = write("detail", a.Detail)
	}
	seen := map[string]int{}
	var order []string
	vals := map[string]any{}
	for _, f := range a.Fields {
		if reservedKeys[f.Key] || f.Key == "" {
			continue
		}
		if _, ok := seen[f.Key]; !ok {
			seen[f.Key] = len(order)
			order = append(order, f.Key)
		}
		vals[f.Key] = f.Value
	}
	for _, k := range order {
		if err := write(k, vals[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an action written by MarshalJSON; fields other than kind,
// subject and detail come back in key order with JSON's types (numbers as
// json.Number, so ids stay exact).
func (a *Action) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*a = Action{}
	a.Kind, _ = m["kind"].(string)
	a.Subject, _ = m["subject"].(string)
	a.Detail, _ = m["detail"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		if !reservedKeys[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		a.Fields = append(a.Fields, Field{Key: k, Value: m[k]})
	}
	return nil
}

// Field returns the value of the named field, or nil.
func (a Action) Field(key string) any {
	var v any
	for _, f := range a.Fields {
		if f.Key == key {
			v = f.Value
		}
	}
	return v
}

// NewReport returns an empty report for job.
func NewReport(job string) *Report {
	return &Report{Job: job, Counts: map[string]int64{}, Actions: []Action{}, Problems: []Action{}}
}

// Count adds n to the named tally.
func (r *Report) Count(name string, n int64) { r.Counts[name] += n }

// Act records an action (or a planned one in a dry run), with its structured fields.
func (r *Report) Act(kind, subject, detail string, fields ...Field) {
	r.Actions = append(r.Actions, Action{Kind: kind, Subject: subject, Detail: detail, Fields: fields})
}

// Problem records an item-level error or discrepancy, with its structured fields.
func (r *Report) Problem(kind, subject, detail string, fields ...Field) {
	r.Problems = append(r.Problems, Action{Kind: kind, Subject: subject, Detail: detail, Fields: fields})
}

// Merge appends other's counts, actions and problems to r (for jobs in phases).
func (r *Report) Merge(other *Report) {
	if other == nil {
		return
	}
	for k, v := range other.Counts {
		r.Counts[k] += v
	}
	r.Actions = append(r.Actions, other.Actions...)
	r.Problems = append(r.Problems, other.Problems...)
}

// Sort puts actions and problems in a deterministic order: by kind, then subject and
// detail compared naturally (so "account 9" comes before "account 10").
func (r *Report) Sort() {
	less := func(s []Action) func(i, j int) bool {
		return func(i, j int) bool {
			a, b := s[i], s[j]
			if a.Kind != b.Kind {
				return a.Kind < b.Kind
			}
			if c := naturalCompare(a.Subject, b.Subject); c != 0 {
				return c < 0
			}
			return naturalCompare(a.Detail, b.Detail) < 0
		}
	}
	sort.SliceStable(r.Actions, less(r.Actions))
	sort.SliceStable(r.Problems, less(r.Problems))
}

// WriteText renders the report as aligned tables for people. Runs of like actions
// are folded into one line each (see Seq); WriteJSON keeps every item.
func (r *Report) WriteText(w io.Writer) error {
	r.Sort()
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	mode := "run"
	if r.DryRun {
		mode = "dry run (nothing was changed)"
	}
	fmt.Fprintf(tw, "%s %s %s\n", r.Job, r.RunID, mode)
	names := make([]string, 0, len(r.Counts))
	for k := range r.Counts {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) > 0 {
		fmt.Fprintf(tw, "\nCOUNT\tVALUE\n")
		for _, k := range names {
			fmt.Fprintf(tw, "%s\t%d\n", k, r.Counts[k])
		}
	}
	section := func(title string, as []Action) {
		if len(as) == 0 {
			return
		}
		fmt.Fprintf(tw, "\n%s\tSUBJECT\tDETAIL\n", title)
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", oneLine(a.Kind), oneLine(a.Subject), oneLine(a.Detail))
		}
	}
	if r.DryRun {
		section("WOULD", fold(r.Actions))
	} else {
		section("ACTION", fold(r.Actions))
	}
	section("PROBLEM", fold(r.Problems))
	if len(r.Actions) == 0 && len(r.Problems) == 0 {
		fmt.Fprintf(tw, "\nnothing to do\n")
	}
	return tw.Flush()
}

// WriteJSON renders the report as one indented JSON document for programs.
func (r *Report) WriteJSON(w io.Writer) error {
	r.Sort()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Write renders in the named format, "text" or "json".
func (r *Report) Write(w io.Writer, format string) error {
	if format == "json" {
		return r.WriteJSON(w)
	}
	return r.WriteText(w)
}

// Total is the sum of all counts: the items a run touched, for metrics.
func (r *Report) Total() int64 {
	var n int64
	for _, v := range r.Counts {
		n += v
	}
	return n
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
}

// naturalCompare compares strings with runs of digits compared as numbers.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) - len(nb)
			}
			if na != nb {
				return strings.Compare(na, nb)
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitPrefix(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
