package drip

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/run"
)

func TestPlannedReportFields(t *testing.T) {
	f := DefaultFunnel()
	queued := utc("2026-03-28T23:00:00Z")
	// Saturday 23:00 in UTC is midnight in Paris, the night the clocks go forward:
	// tips goes out Sunday 09:00 CEST.
	d := f.Decide(Input{Case: at("first_vm"), SignupAt: utc("2026-03-23T23:00:00Z"), TimeZone: "Europe/Paris"}, queued)
	if d.Event != EventSend {
		t.Fatalf("%+v", d)
	}
	rep := run.NewReport("drip")
	p := d.Planned(42, queued)
	rep.Act("queue", "account 42", p.Detail(), p.Fields()...)
	bad := f.Decide(Input{SignupAt: utc("2026-03-28T20:00:00Z"), TimeZone: "Europe/Pariss"}, queued)
	p = bad.Planned(43, queued)
	rep.Act("queue", "account 43", p.Detail(), p.Fields()...)

	var out, b bytes.Buffer
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&b, out.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"kind":"queue","subject":"account 42","detail":"tips: due 2026-03-28T23:00:00Z, sends Sun 2026-03-29 09:00 CEST (Europe/Paris, 2026-03-29T07:00:00Z)",` +
			`"account_id":42,"step":"tips","due_at":"2026-03-28T23:00:00Z","queued_at":"2026-03-28T23:00:00Z","send_at":"2026-03-29T07:00:00Z",` +
			`"local_time":"2026-03-29T09:00:00+02:00","time_zone":"Europe/Paris","category":"marketing"}`,
		`"detail":"welcome: due 2026-03-28T20:00:00Z, sends Sun 2026-03-29 09:00 UTC (UTC, 2026-03-29T09:00:00Z); account time zone \"Europe/Pariss\" unusable, fallback used",` +
			`"account_id":43,"step":"welcome","due_at":"2026-03-28T20:00:00Z","queued_at":"2026-03-28T23:00:00Z","send_at":"2026-03-29T09:00:00Z",` +
			`"local_time":"2026-03-29T09:00:00Z","time_zone":"UTC","category":"marketing","time_zone_fallback":true,"account_time_zone":"Europe/Pariss"}`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks\n%s\nin\n%s", want, b.String())
		}
	}
}
