package run

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Record is one row of job_runs.
type Record struct {
	ID       string     `json:"id"`
	Job      string     `json:"job"`
	Host     string     `json:"host"`
	Version  string     `json:"version"`
	Args     string     `json:"args"`
	Started  time.Time  `json:"started_at"`
	Finished *time.Time `json:"finished_at,omitempty"`
	Status   string     `json:"status"`
	ExitCode *int       `json:"exit_code,omitempty"`
	Counts   string     `json:"counts,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// History returns the newest runs, of one job or (job "") of all.
func History(ctx context.Context, db *sql.DB, job string, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = 20
	}
	rows, err := db.QueryContext(ctx, `SELECT id, job, host, version, args, started_at, finished_at, status,
		exit_code, COALESCE(counts, ''), COALESCE(error, '')
		FROM job_runs WHERE (? = '' OR job = ?) ORDER BY started_at DESC, id DESC LIMIT ?`, job, job, limit)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var rec Record
		var fin sql.NullTime
		var code sql.NullInt64
		if err := rows.Scan(&rec.ID, &rec.Job, &rec.Host, &rec.Version, &rec.Args, &rec.Started, &fin,
			&rec.Status, &code, &rec.Counts, &rec.Error); err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		if fin.Valid {
			t := fin.Time
			rec.Finished = &t
		}
		if code.Valid {
			c := int(code.Int64)
			rec.ExitCode = &c
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return out, nil
}

// WriteHistory prints runs as a table, newest first.
func WriteHistory(w io.Writer, recs []Record) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN ID\tJOB\tSTARTED (UTC)\tDURATION\tSTATUS\tEXIT\tHOST\tCOUNTS\tERROR")
	for _, r := range recs {
		dur, exit := "-", "-"
		if r.Finished != nil {
			dur = r.Finished.Sub(r.Started).Round(time.Millisecond).String()
		}
		if r.ExitCode != nil {
			exit = fmt.Sprint(*r.ExitCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Job, r.Started.UTC().Format("2006-01-02 15:04:05"),
			dur, r.Status, exit, r.Host, shortCounts(r.Counts), oneLine(r.Error))
	}
	if len(recs) == 0 {
		fmt.Fprintln(tw, "(no runs recorded)")
	}
	return tw.Flush()
}

// countsWidth is how much of a run's counts the table shows: a reconcile run counts
// dozens of things, and a column a thousand characters wide pushes ERROR off every
// screen. --output json has them all.
const countsWidth = 80

// shortCounts cuts counts to countsWidth characters, marking the cut.
func shortCounts(c string) string {
	if len(c) <= countsWidth {
		return c
	}
	cut := strings.LastIndexByte(c[:countsWidth], ',')
	if cut < 0 {
		cut = countsWidth
	}
	return c[:cut] + ",…}"
}

// Runs is a list of runs with a text rendering, so a command prints it as text or
// JSON through one writer.
type Runs []Record

// WriteText renders the runs as WriteHistory does.
func (rs Runs) WriteText(w io.Writer) error { return WriteHistory(w, rs) }
