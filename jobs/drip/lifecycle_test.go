package drip

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/run"
)

// Two weeks of hourly runs on MariaDB, the fake CloudStack and the SMTP sink, with
// signups in four zones:
//   - 10 signed up before the funnel started: never mailed;
//   - 11, Paris, goes through every step; another campaign's message fills its
//     local day once, so first_vm waits a day (the cap); completes;
//   - 12, New York, signs up at 22:00 local (welcome waits for 09:00), starts a VM
//     (first_vm skipped), verifies a card after tips was queued for the next
//     morning: converted, tips cancelled, no more mail;
//   - 13, Tokyo, unsubscribes with a one-click POST after the welcome: exited, no
//     more marketing mail from any campaign, transactional mail still delivered;
//   - 14, an invalid zone (fallback UTC, reported), hard-bounces on its welcome:
//     suppressed, exited.
func TestJobLifecycleOverTwoWeeks(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T00:00:00Z"))
	w.signup(10, "old@example.com", "Old Customer", "UTC", "", utc("2025-06-01T10:00:00Z"))
	w.signup(11, "ada@example.com", "Ada", "Europe/Paris", "cs-11", utc("2026-03-02T08:00:00Z"))
	w.trial(11, "50", utc("2026-03-02T08:00:00Z"), utc("2026-03-16T08:00:00Z"))
	w.signup(12, "bob@example.com", "Bob", "America/New_York", "cs-12", utc("2026-03-02T03:00:00Z"))
	w.signup(13, "chie@example.com", "", "Asia/Tokyo", "", utc("2026-03-02T01:00:00Z"))
	w.signup(14, "dan@example.com", "Dan", "Mars/Olympus", "", utc("2026-03-05T15:00:00Z"))

	h, err := mail.NewUnsubscribeHandler(w.keys, w.job(), "Example Cloud")
	if err != nil {
		t.Fatal(err)
	}
	unsub := httptest.NewServer(h)
	t.Cleanup(unsub.Close)
	ctx := context.Background()

	hooks := map[string]func(){
		// 13 got its welcome at 10:00 JST; it unsubscribes from the mail's header link.
		"2026-03-02T05:00:00Z": func() {
			if got := w.received("chie@example.com"); !slices.Equal(got, []string{"onboarding:welcome"}) {
				t.Fatalf("13 before unsubscribing: %v", got)
			}
			link := unsubscribeLink(t, w, "chie@example.com")
			target := unsub.URL + "?" + link.RawQuery
			// A preview fetch (GET) changes nothing; a forged token is refused.
			if res := httpDo(t, http.MethodGet, target, ""); res != http.StatusOK || w.scalar(`SELECT COUNT(*) FROM mail_suppressions`) != "0" {
				t.Fatalf("GET: %d, suppressions %s", res, w.scalar(`SELECT COUNT(*) FROM mail_suppressions`))
			}
			forged := strings.Replace(target, "13.onboarding.", "11.onboarding.", 1)
			if res := httpDo(t, http.MethodPost, forged, "List-Unsubscribe=One-Click"); res != http.StatusForbidden {
				t.Fatalf("forged token: %d", res)
			}
			for i := 0; i < 2; i++ { // mailbox providers post twice
				if res := httpDo(t, http.MethodPost, target, "List-Unsubscribe=One-Click"); res != http.StatusOK {
					t.Fatalf("one-click POST: %d", res)
				}
			}
		},
		// Another campaign fills 11's local day (Paris) when first_vm is due.
		"2026-03-03T23:00:00Z": func() {
			news := &mail.Outbox{DB: w.db.DB, Now: func() time.Time { return w.now }, KeyPrefix: "news:"}
			msg := mail.Message{Category: mail.Marketing, From: testFrom, To: "ada@example.com", Subject: "Our March news",
				Text: "News. Unsubscribe: https://cloud.example/u?x=1", ListUnsubscribeURL: "https://cloud.example/u?x=1"}
			if _, err := news.EnqueueAt(ctx, nil, "news:2026-03:11", msg, utc("2026-03-04T07:30:00Z")); err != nil {
				t.Fatal(err)
			}
		},
		"2026-03-03T12:00:00Z": func() {
			if _, err := w.fake.AddVM(fakecloudstack.VM{ID: "vm-12", AccountID: "cs-12", State: "Running", Created: w.now}); err != nil {
				t.Fatal(err)
			}
		},
		"2026-03-05T15:00:00Z": func() { w.sink.FailNextWith(1, 550, "5.1.1 <dan@example.com>: no such user") },
		// Tips was queued at 03:00 UTC for 09:00 New York time; the card comes first.
		"2026-03-07T10:00:00Z": func() {
			if s := w.scalar(`SELECT status FROM mail_outbox WHERE dedupe_key = 'drip:onboarding:12:tips'`); s != "queued" {
				t.Fatalf("12's tips: %q, want queued", s)
			}
			w.exec(`UPDATE accounts SET payment_method_verified = 1 WHERE id = 12`)
		},
	}

	var problems []string
	reports := map[string]*run.Report{}
	for w.now = w.start(); !w.now.After(utc("2026-03-17T00:00:00Z")); w.now = w.now.Add(time.Hour) {
		at := w.now.Format(time.RFC3339)
		if hook := hooks[at]; hook != nil {
			hook()
		}
		rep := w.runJob(nil)
		reports[at] = rep
		for _, p := range rep.Problems {
			problems = append(problems, at+" "+p.Kind+" "+p.Subject+": "+p.Detail)
		}
	}

	// The only problem of two weeks is the bounce, reported by the run that met it.
	if len(problems) != 1 || !strings.Contains(problems[0], "2026-03-05T15:00:00Z mail account 14") ||
		!strings.Contains(problems[0], "hard bounce") {
		t.Errorf("problems:\n%s", strings.Join(problems, "\n"))
	}

	for _, tc := range []struct {
		id          int64
		email       string
		received    []string
		transitions string
	}{
		{10, "old@example.com", nil, ""},
		{11, "ada@example.com", []string{"onboarding:welcome", "onboarding:first_vm", "onboarding:tips", "onboarding:trial_ending", "onboarding:last_call"},
			"signed_up->welcome(send) welcome->first_vm(send) first_vm->tips(send) tips->trial_ending(send) trial_ending->last_call(send) last_call->completed(complete)"},
		{12, "bob@example.com", []string{"onboarding:welcome"},
			"signed_up->welcome(send) welcome->first_vm(skip) first_vm->tips(send) tips->converted(convert)"},
		{13, "chie@example.com", []string{"onboarding:welcome"}, "signed_up->welcome(send) welcome->exited(exit)"},
		{14, "dan@example.com", nil, "signed_up->welcome(send) welcome->exited(exit)"},
	} {
		if got := w.received(tc.email); !slices.Equal(got, tc.received) {
			t.Errorf("%d received %v, want %v", tc.id, got, tc.received)
		}
		if got := w.transitions(tc.id); got != tc.transitions {
			t.Errorf("%d transitions %q, want %q", tc.id, got, tc.transitions)
		}
	}

	// Send times: 09:00 in Paris (08:00 UTC), the capped first_vm a day late.
	sent := strings.Join(w.list(`SELECT CONCAT(SUBSTRING_INDEX(dedupe_key, ':', -1), '@', DATE_FORMAT(sent_at, '%m-%d %H:%i'))
FROM mail_outbox WHERE dedupe_key LIKE 'drip:onboarding:11:%' ORDER BY sent_at`), " ")
	if want := "welcome@03-02 08:00 first_vm@03-05 08:00 tips@03-07 08:00 trial_ending@03-13 08:00 last_call@03-15 08:00"; sent != want {
		t.Errorf("11's send times %q, want %q", sent, want)
	}
	// New York: a 22:00 signup's welcome goes at 09:00 local (14:00 UTC before DST).
	if s := w.scalar(`SELECT DATE_FORMAT(sent_at, '%m-%d %H:%i') FROM mail_outbox WHERE dedupe_key = 'drip:onboarding:12:welcome'`); s != "03-02 14:00" {
		t.Errorf("12's welcome sent %s", s)
	}
	if s := w.scalar(`SELECT CONCAT(status, ': ', last_error) FROM mail_outbox WHERE dedupe_key = 'drip:onboarding:12:tips'`); !strings.HasPrefix(s, "cancelled: ") {
		t.Errorf("12's tips: %q, want cancelled", s)
	}
	rep := reports["2026-03-07T14:00:00Z"]
	if !hasAct(rep, EventConvert, "account 12", "tips -> converted: goal met: payment method verified") || rep.Counts["mail_cancelled"] != 1 {
		t.Errorf("12's conversion run: %+v", rep)
	}
	// The bounce: failed, suppressed for everything, and the fallback zone reported.
	if s := w.scalar(`SELECT kind FROM mail_suppressions WHERE email = 'dan@example.com'`); s != "bounce" {
		t.Errorf("14's suppression: %q", s)
	}
	rep = reports["2026-03-05T15:00:00Z"]
	if rep.Counts["time_zone_fallbacks"] != 1 || rep.Counts["mail_bounced"] != 1 ||
		!hasAct(rep, EventExit, "account 14", "welcome -> exited: address suppressed (bounce)") {
		t.Errorf("14's bounce run: %+v", rep)
	}
	// Everyone's out: no next look left, and the old customer never enrolled.
	if n := w.scalar(`SELECT COUNT(*) FROM drip_due WHERE check_at IS NOT NULL`); n != "0" {
		t.Errorf("%s accounts still have a next look", n)
	}
	if n := w.scalar(`SELECT COUNT(*) FROM drip_due WHERE account_id = 10`); n != "0" {
		t.Errorf("the customer from before the funnel was enrolled")
	}
	// A second run at the same instant does nothing.
	if rep := w.runJob(nil); len(rep.Actions) != 0 || len(rep.Problems) != 0 {
		t.Errorf("rerun: %+v", rep)
	}

	// 13 unsubscribed from marketing: another campaign's marketing mail is suppressed,
	// its invoice notice goes out.
	other := &mail.Outbox{DB: w.db.DB, Now: func() time.Time { return w.now }, KeyPrefix: "abuse:"}
	notice := mail.Message{From: testFrom, To: "chie@example.com", Subject: "Your invoice", Text: "Invoice 1001 is due."}
	promo := mail.Message{Category: mail.Marketing, From: testFrom, To: "chie@example.com", Subject: "Promo",
		Text: "Promo. Unsubscribe: https://cloud.example/u?x=2", ListUnsubscribeURL: "https://cloud.example/u?x=2"}
	if _, err := other.Enqueue(ctx, nil, "abuse:invoice:1001", notice); err != nil {
		t.Fatal(err)
	}
	if res, err := other.EnqueueAt(ctx, nil, "abuse:promo:13", promo, time.Time{}); err != nil || res.Suppressed == nil {
		t.Fatalf("promo to an unsubscribed address: %+v %v", res, err)
	}
	if dr, err := other.Deliver(ctx, w.sender, 10); err != nil || dr.Sent != 1 {
		t.Fatalf("notice delivery: %+v %v", dr, err)
	}
	if last, _ := w.sink.Last(); last.Header.Get("Subject") != "Your invoice" {
		t.Fatalf("the notice did not reach 13: %q", last.Header.Get("Subject"))
	}
	if s := w.scalar(`SELECT reason FROM case_transitions WHERE account_id = 13 AND event = 'exit'`); !strings.Contains(s, "one-click unsubscribe (RFC 8058)") {
		t.Errorf("13's exit reason %q", s)
	}
	if s := w.scalar(`SELECT actor FROM case_transitions WHERE account_id = 13 AND event = 'exit'`); s != "recipient:one-click" {
		t.Errorf("13's exit actor %q", s)
	}
}

// unsubscribeLink is the https List-Unsubscribe link of the latest funnel message to
// email, checked against the headers RFC 8058 asks for.
func unsubscribeLink(t *testing.T, w *world, email string) *url.URL {
	t.Helper()
	for _, m := range slices.Backward(w.sink.Messages()) {
		if m.To[0] != email {
			continue
		}
		if m.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
			t.Fatalf("no one-click header: %v", m.Header)
		}
		lu := m.Header.Get("List-Unsubscribe")
		https, mailto, ok := strings.Cut(lu, ", ")
		if !ok || !strings.HasPrefix(https, "<"+testUnsubURL+"?token=") || !strings.HasPrefix(mailto, "<mailto:unsubscribe@cloud.example?subject=unsubscribe%20") {
			t.Fatalf("List-Unsubscribe %q", lu)
		}
		u, err := url.Parse(strings.Trim(https, "<>"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(m.Data), u.Query().Get("token")) {
			t.Fatal("the body does not show the unsubscribe link")
		}
		return u
	}
	t.Fatalf("no message to %s", email)
	return nil
}

func httpDo(t *testing.T, method, target, form string) int {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
