package run

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the per-run logger: JSON lines (journald/Loki friendly) or, for a
// person at a terminal, zerolog's console format. Every line carries the run's
// context fields; entity fields are added with child loggers by the job.
func NewLogger(w io.Writer, format string, color bool, level zerolog.Level, fields map[string]any) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !color}
	}
	// A logger per run, not zerolog's globals: the time field format is set on the
	// context below instead of zerolog.TimeFieldFormat.
	l := zerolog.New(w).Level(level).With().Timestamp()
	for _, k := range []string{"run_id", "job", "host", "version", "dry_run"} {
		if v, ok := fields[k]; ok {
			l = l.Interface(k, v)
		}
	}
	return l.Logger()
}
