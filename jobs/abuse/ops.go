package abuse

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/run"
)

// TagNeverSuspend is the tag `cronkit abuse exclude` sets; the shipped policy excludes
// accounts that carry it from both machines.
const TagNeverSuspend = "never_suspend"

// Operator commands. Each is recorded as a transition with actor "operator:<name>"
// and the operator's reason, under the same optimistic concurrency as a run. The
// orchestrator actions they require (lifting a suspension) are queued and performed
// by the next run (`cronkit abuse --account ID` performs them at once).
const (
	OpClear   = "clear"
	OpApprove = "approve"
	OpConfirm = "confirm"
	OpExclude = "exclude"
)

// OperatorResult is what an operator command did.
type OperatorResult struct {
	Case  *Case  `json:"case"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	Event string `json:"event,omitempty"`
	// Reason is the transition's recorded reason (the operator's, plus notes).
	Reason string `json:"reason,omitempty"`
	// Tagged is set by exclude: the tag added to the account.
	Tagged string `json:"tagged,omitempty"`
	// PendingActions are the side effects left for the next run.
	PendingActions int `json:"pending_actions"`
}

// OperatorEvidence is the evidence of an operator's transition.
type OperatorEvidence struct {
	Operator string `json:"operator"`
	Reason   string `json:"reason"`
	Command  string `json:"command"`
}

// Operate runs an operator command (clear, approve, confirm, exclude) on a case. actor
// is the person (from $CRONKIT_OPERATOR, $SUDO_USER or $USER) and reason is required.
// approve on a free-credit case is confirm: the person's word that the abuse is real,
// after which the account is terminated once the retention period has passed.
func (j *Job) Operate(ctx context.Context, op string, caseID int64, actor, reason string) (*OperatorResult, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return nil, run.Usagef("%s: --reason is required: say why, it is kept in the audit trail", op)
	}
	if strings.TrimSpace(actor) == "" {
		return nil, run.Usagef("%s: no operator name: set CRONKIT_OPERATOR", op)
	}
	if err := j.check(false); err != nil {
		return nil, err
	}
	tmpl, err := j.templates()
	if err != nil {
		return nil, err
	}
	r := newRunState(j, j.now(), "", false, tmpl)
	c, err := r.store.Case(ctx, j.DB, caseID)
	if errors.Is(err, cases.ErrNoCase) {
		return nil, run.Usagef("%s: case %d does not exist", op, caseID)
	}
	if err != nil {
		return nil, err
	}
	event, err := operatorEvent(op, c.Machine)
	if err != nil {
		return nil, err
	}
	actorName := "operator:" + actor
	res := &OperatorResult{}
	if op == OpExclude {
		res.Tagged = TagNeverSuspend
		if !IsOpen(c.Machine, c.State) {
			// Nothing to close: tag the account so no case opens again.
			if err := addTag(ctx, j.DB, c.AccountID, TagNeverSuspend, reason, actorName, r.now); err != nil {
				return nil, err
			}
			res.Case = c
			return res, nil
		}
	}
	if !canFire(c.Machine, c.State, event) {
		return nil, run.Usagef("%s: case %d (%s) is %s; %s is possible only from %s", op, caseID, c.Machine, c.State,
			op, strings.Join(sourcesOf(c.Machine, event), ", "))
	}
	ap, err := r.apply(ctx, transitionReq{machine: c.Machine, account: c.AccountID, caseID: caseID, event: event,
		actor: actorName, eval: operatorEval(event, op, actor, reason),
		before: func(ctx context.Context, tx *sql.Tx) error {
			if op != OpExclude {
				return nil
			}
			return addTag(ctx, tx, c.AccountID, TagNeverSuspend, reason, actorName, r.now)
		}})
	if err != nil {
		var inv fsm.InvalidEventError
		if errors.As(err, &inv) {
			return nil, run.Usagef("%s: case %d changed meanwhile: %v", op, caseID, err)
		}
		return nil, err
	}
	if ap.conflict || ap.c == nil {
		return nil, fmt.Errorf("%s: case %d changed meanwhile; look again (cronkit abuse show %d)", op, caseID, c.AccountID)
	}
	res.Case, res.From, res.To, res.Event, res.Reason = ap.c, ap.from, ap.to, ap.event, ap.reason
	after, err := r.store.Case(ctx, j.DB, caseID)
	if err != nil {
		return nil, err
	}
	res.Case = after
	res.PendingActions = after.PendingActions
	return res, nil
}

// operatorEvent maps a command to the machine's event.
func operatorEvent(op, machine string) (string, error) {
	switch op {
	case OpClear:
		return EventClear, nil
	case OpExclude:
		return EventExclude, nil
	case OpApprove:
		if machine == FreeCredit {
			return EventConfirm, nil
		}
		return EventApprove, nil
	case OpConfirm:
		if machine != FreeCredit {
			return "", run.Usagef("confirm is for free-credit cases; a dunning termination is approved (cronkit abuse approve)")
		}
		return EventConfirm, nil
	}
	return "", run.Usagef("unknown operator command %q", op)
}

// sourcesOf lists the states event can fire from.
func sourcesOf(machine, event string) []string {
	m, err := machineDef(machine)
	if err != nil {
		return nil
	}
	return m.Sources(event)
}

// operatorEval returns the operator's event whatever the facts say: the person
// decides. The account is read for the notice the transition may send.
func operatorEval(event, op, actor, reason string) evaluator {
	return func(ctx context.Context, q querier, c *Case, fresh bool) (evaluation, error) {
		if c == nil {
			return evaluation{}, cases.ErrNoCase
		}
		var f DunningFacts
		err := q.QueryRowContext(ctx, `SELECT id, email, name, COALESCE(cloudstack_account_id, '') FROM accounts WHERE id = ?`,
			c.AccountID).Scan(&f.AccountID, &f.Email, &f.Name, &f.CloudStackAccountID)
		if err != nil {
			return evaluation{}, fmt.Errorf("account %d: %w", c.AccountID, err)
		}
		d := Decision{Event: event, Reason: fmt.Sprintf("%s by %s: %s", op, actor, reason),
			Evidence: OperatorEvidence{Operator: actor, Reason: reason, Command: op},
			SignOff:  event == EventApprove || event == EventConfirm}
		return evaluation{Decision: d, subject: subject{email: f.Email, cloudstack: f.CloudStackAccountID,
			notice: noticeData{Name: f.Name, Email: f.Email, AccountID: f.AccountID}}}, nil
	}
}

func addTag(ctx context.Context, q querier, account int64, tag, reason, actor string, now time.Time) error {
	_, err := q.ExecContext(ctx, `INSERT INTO account_tags (account_id, tag, reason, actor, created_at) VALUES (?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE account_id = account_id`, account, tag, reason, actor, now)
	if err != nil {
		return fmt.Errorf("tag account %d %s: %w", account, tag, err)
	}
	return nil
}

// Tag is a manual tag on an account.
type Tag struct {
	Tag       string    `json:"tag"`
	Reason    string    `json:"reason"`
	Actor     string    `json:"actor"`
	CreatedAt time.Time `json:"created_at"`
}

// Transition is one row of the audit trail (lib/cases).
type Transition = cases.Transition

// ActionRecord is one side effect of a case and where it stands (lib/cases).
type ActionRecord = cases.ActionRecord

// CaseHistory is a case with its full transition history and actions.
type CaseHistory struct {
	Case
	Transitions []Transition   `json:"transitions"`
	Actions     []ActionRecord `json:"actions"`
}

// AccountHistory answers "what happened to account 42?".
type AccountHistory struct {
	AccountID  int64         `json:"account_id"`
	Email      string        `json:"email"`
	Name       string        `json:"name"`
	Status     string        `json:"status"`
	CloudStack string        `json:"cloudstack_account_id,omitempty"`
	Tags       []Tag         `json:"tags"`
	Cases      []CaseHistory `json:"cases"`
}

// Show reads an account's cases (newest first), their transitions and actions.
func (j *Job) Show(ctx context.Context, account int64) (*AccountHistory, error) {
	h := &AccountHistory{AccountID: account, Tags: []Tag{}, Cases: []CaseHistory{}}
	err := j.DB.QueryRowContext(ctx, `SELECT email, name, status, COALESCE(cloudstack_account_id, '') FROM accounts WHERE id = ?`,
		account).Scan(&h.Email, &h.Name, &h.Status, &h.CloudStack)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, run.Usagef("show: account %d does not exist", account)
	}
	if err != nil {
		return nil, fmt.Errorf("show account %d: %w", account, err)
	}
	rows, err := j.DB.QueryContext(ctx, `SELECT tag, reason, actor, created_at FROM account_tags WHERE account_id = ? ORDER BY tag`, account)
	if err != nil {
		return nil, fmt.Errorf("show account %d: tags: %w", account, err)
	}
	for rows.Next() {
		var t Tag
		if err := rows.Scan(&t.Tag, &t.Reason, &t.Actor, &t.CreatedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("show account %d: tags: %w", account, err)
		}
		t.CreatedAt = t.CreatedAt.UTC()
		h.Tags = append(h.Tags, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("show account %d: tags: %w", account, err)
	}
	store := &cases.Store{DB: j.DB, Machines: machineDefs()}
	list, err := store.CasesOf(ctx, j.DB, account)
	if err != nil {
		return nil, fmt.Errorf("show account %d: %w", account, err)
	}
	for _, c := range list {
		h.Cases = append(h.Cases, CaseHistory{Case: *c, Transitions: []Transition{}, Actions: []ActionRecord{}})
	}
	for i := range h.Cases {
		ch := &h.Cases[i]
		if ch.Transitions, err = store.Transitions(ctx, j.DB, ch.ID); err != nil {
			return nil, err
		}
		if ch.Actions, err = store.ActionRecords(ctx, j.DB, ch.ID); err != nil {
			return nil, err
		}
	}
	return h, nil
}

const showTime = "2006-01-02 15:04:05Z07:00"

// WriteText renders the history for a person.
func (h *AccountHistory) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "account %d  %s", h.AccountID, h.Email)
	if h.Name != "" {
		fmt.Fprintf(&b, " (%s)", h.Name)
	}
	fmt.Fprintf(&b, "  status %s", h.Status)
	if h.CloudStack != "" {
		fmt.Fprintf(&b, "  cloudstack %s", h.CloudStack)
	}
	b.WriteString("\n")
	for _, t := range h.Tags {
		fmt.Fprintf(&b, "tag %s  by %s at %s: %s\n", t.Tag, t.Actor, t.CreatedAt.Format(showTime), t.Reason)
	}
	if len(h.Cases) == 0 {
		b.WriteString("\nno abuse or dunning case\n")
	}
	for _, c := range h.Cases {
		fmt.Fprintf(&b, "\ncase %d  %s  %s  (version %d)\n", c.ID, c.Machine, c.State, c.Version)
		fmt.Fprintf(&b, "  opened %s, in %s since %s", c.OpenedAt.Format(showTime), c.State, c.StateSince.Format(showTime))
		if c.ClosedAt != nil {
			fmt.Fprintf(&b, ", closed %s", c.ClosedAt.Format(showTime))
		}
		b.WriteString("\n")
		if c.ApprovedAt != nil {
			fmt.Fprintf(&b, "  approved by %s at %s\n", c.ApprovedBy, c.ApprovedAt.Format(showTime))
		}
		if c.PendingActions > 0 {
			fmt.Fprintf(&b, "  %d action(s) pending: the next run performs them\n", c.PendingActions)
		}
		fmt.Fprintf(&b, "  evidence: %s\n", compactJSON(c.Evidence))
		b.WriteString("  transitions:\n")
		for _, t := range c.Transitions {
			by := t.Actor
			if t.RunID != "" {
				by += " run " + t.RunID
			}
			fmt.Fprintf(&b, "    v%d %s  %s -> %s (%s) by %s\n", t.CaseVersion, t.At.Format(showTime), t.From, t.To, t.Event, by)
			fmt.Fprintf(&b, "       reason: %s\n", t.Reason)
			fmt.Fprintf(&b, "       evidence: %s\n", compactJSON(t.Evidence))
		}
		if len(c.Actions) > 0 {
			b.WriteString("  actions:\n")
			for _, a := range c.Actions {
				fmt.Fprintf(&b, "    %-16s %-40s %-9s attempts %d", a.Action, a.Target, a.Status, a.Attempts)
				if a.DoneAt != nil {
					fmt.Fprintf(&b, "  done %s", a.DoneAt.Format(showTime))
				}
				if a.Outcome != "" {
					fmt.Fprintf(&b, "  %s", a.Outcome)
				}
				if a.LastError != "" {
					fmt.Fprintf(&b, "  last error: %s", a.LastError)
				}
				b.WriteString("\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
