package drip

import (
	"fmt"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

// Planned is one funnel message a run queued or, in a dry run, would queue: the
// report line for programs (Fields) and for people (Detail).
type Planned struct {
	AccountID int64
	Step      string
	DueAt     time.Time
	// QueuedAt is the run's instant.
	QueuedAt time.Time
	// SendAt is when delivery may start, after the window and the cap.
	SendAt time.Time
	// Location is the recipient's zone as used; ZoneFallback says it is the funnel's
	// fallback, AccountTimeZone being empty or invalid.
	Location        *time.Location
	ZoneFallback    bool
	AccountTimeZone string
}

// Planned turns a send decision into its plan line; queuedAt is the run's instant.
func (d Decision) Planned(accountID int64, queuedAt time.Time) Planned {
	return Planned{AccountID: accountID, Step: d.Step, DueAt: d.DueAt.UTC(), QueuedAt: queuedAt.UTC(),
		SendAt: d.SendAt.UTC(), Location: d.Location, ZoneFallback: d.ZoneFallback, AccountTimeZone: d.AccountTimeZone}
}

// Fields are the report's structured fields (docs/report-json.md): times in UTC,
// local_time with the recipient's offset. An account on the fallback zone also gets
// time_zone_fallback and its own (bad) account_time_zone, so ops can fix it.
func (p Planned) Fields() []run.Field {
	fields := []run.Field{
		run.Int("account_id", p.AccountID),
		run.Str("step", p.Step),
		run.Time("due_at", p.DueAt),
		run.Time("queued_at", p.QueuedAt),
		run.Time("send_at", p.SendAt),
		run.TimeIn("local_time", p.SendAt.In(p.Location)),
		run.Str("time_zone", p.Location.String()),
		run.Str("category", string(mail.Marketing)), // every step, the welcome included
	}
	if p.ZoneFallback {
		fields = append(fields, run.Bool("time_zone_fallback", true), run.Str("account_time_zone", p.AccountTimeZone))
	}
	return fields
}

// Detail is the text report's line: when the message goes out, in the recipient's
// time and in UTC.
func (p Planned) Detail() string {
	s := fmt.Sprintf("%s: due %s, sends %s (%s, %s)", p.Step, p.DueAt.Format(time.RFC3339),
		p.SendAt.In(p.Location).Format("Mon 2006-01-02 15:04 MST"), p.Location, p.SendAt.Format(time.RFC3339))
	if p.ZoneFallback {
		s += fmt.Sprintf("; account time zone %q unusable, fallback used", p.AccountTimeZone)
	}
	return s
}
