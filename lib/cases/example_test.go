package cases_test

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/cases"
)

// How a job such as drip uses the store: its machine, one decision per candidate,
// a transition (with its side effect recorded as intent) only where the decision
// says so, then the pending side effects performed and confirmed. (Compiled, not
// run: it needs a migrated database.)
func Example() {
	var db *sql.DB // mysql.Open(...), migrated
	ctx := context.Background()
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	onboarding := &cases.Machine{
		Name: "onboarding", Initial: "signed_up", Open: []string{"welcomed"},
		Events: fsm.Events{
			{Name: "welcome", Src: []string{"signed_up"}, Dst: "welcomed"},
			{Name: "convert", Src: []string{"welcomed"}, Dst: "converted"},
		},
	}
	store := &cases.Store{DB: db, Machines: []*cases.Machine{onboarding}, Now: func() time.Time { return now }}

	// The candidates' open cases, in one query per chunk of accounts.
	accounts := []int64{42, 43}
	open, err := store.OpenCases(ctx, db, "onboarding", accounts)
	if err != nil {
		return
	}
	decide := func(ctx context.Context, q cases.Querier, c *cases.Case) (cases.Decision, error) {
		if c == nil { // read the facts through q here: inside the transaction, they are fresh
			return cases.Decision{Event: "welcome", Reason: "signed up", Evidence: map[string]any{"signup": "2026-11-20"}}, nil
		}
		return cases.Decision{}, nil
	}
	for _, id := range accounts {
		if d, _ := decide(ctx, db, open[id]); d.Event == "" {
			continue // nothing changes: no transaction
		}
		_, err := store.Apply(ctx, cases.Request{
			Machine: "onboarding", AccountID: id, Expect: open[id], Actor: "cronkit", RunID: "01K...",
			Decide: decide,
			Effects: func(ctx context.Context, ch *cases.Change) error {
				ch.Act(1, "send", "welcome", nil) // intent, in the transition's transaction
				return nil
			},
		})
		if err != nil { // cases.ErrConflict: the case moved since the plan; the next run decides again
			fmt.Println(err)
		}
	}

	// After the commits: perform, then confirm. A crash in between leaves the action
	// pending, and the next run performs it again (with the same Key).
	_ = store.Drive(ctx, cases.DriveOptions{
		Concurrency: 4,
		Perform: func(ctx context.Context, a *cases.Action) (cases.Outcome, error) {
			return cases.Outcome{Detail: "queued", InTx: func(ctx context.Context, tx *sql.Tx) error {
				// e.g. mail.Outbox.Enqueue(ctx, tx, a.Key(), msg): queued exactly when confirmed
				return nil
			}}, nil
		},
	})
}
