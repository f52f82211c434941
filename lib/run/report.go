package run

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
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
type Action struct {
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	Detail  string `json:"detail,omitempty"`
}

// NewReport returns an empty report for job.
func NewReport(job string) *Report {
	return &Report{Job: job, Counts: map[string]int64{}, Actions: []Action{}, Problems: []Action{}}
}

// Count adds n to the named tally.
func (r *Report) Count(name string, n int64) { r.Counts[name] += n }

// Act records an action (or a planned one in a dry run).
func (r *Report) Act(kind, subject, detail string) {
	r.Actions = append(r.Actions, Action{kind, subject, detail})
}

// Problem records an item-level error or discrepancy.
func (r *Report) Problem(kind, subject, detail string) {
	r.Problems = append(r.Problems, Action{kind, subject, detail})
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

// WriteText renders the report as aligned tables for people.
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
		section("WOULD", r.Actions)
	} else {
		section("ACTION", r.Actions)
	}
	section("PROBLEM", r.Problems)
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
