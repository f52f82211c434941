package reconcile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// StoredFinding is a finding as the store keeps it: the ticket, with its id, state
// and history, as `cronkit reconcile findings` lists it and a run reports it.
type StoredFinding struct {
	// ID is zero for a finding a dry run would open.
	ID            int64
	Class         string
	Fingerprint   string
	State         string
	AccountID     int64
	InvoiceID     int64
	ResourceID    string
	PaymentIntent string
	Amount        string
	Currency      string
	Detail        string
	Fixable       bool
	FirstSeen     time.Time
	LastSeen      time.Time
	// WindowFrom and WindowTo are the window of the check that last saw it, except
	// that a finding the payments check saw again by re-judging it from another
	// window keeps its own (Scope.Rejudges).
	WindowFrom, WindowTo time.Time

	AcknowledgedBy string
	AckReason      string
	AcknowledgedAt time.Time
	FixedBy        string
	FixReason      string
	FixedAt        time.Time
	ResolvedAt     time.Time

	// Events is the audit trail; Store.Get fills it, listings do not.
	Events []Event
}

// Event is one state change of a finding.
type Event struct {
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Event  string    `json:"event"`
	Actor  string    `json:"actor"`
	RunID  string    `json:"run_id,omitempty"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Fields are the finding's flat keys, as the report's problems and the JSON listing
// carry them: id, class, state, fingerprint, first_seen, last_seen, then whichever of
// account_id, invoice_id, resource_id, payment_intent, amount and currency apply.
func (f StoredFinding) Fields() []run.Field {
	var out []run.Field
	if f.ID != 0 {
		out = append(out, run.Int("id", f.ID))
	}
	out = append(out, run.Str("class", f.Class), run.Str("state", f.State), run.Str("fingerprint", f.Fingerprint),
		run.Time("first_seen", f.FirstSeen), run.Time("last_seen", f.LastSeen))
	if f.AccountID != 0 {
		out = append(out, run.Int("account_id", f.AccountID))
	}
	if f.InvoiceID != 0 {
		out = append(out, run.Int("invoice_id", f.InvoiceID))
	}
	if f.ResourceID != "" {
		out = append(out, run.Str("resource_id", f.ResourceID))
	}
	if f.PaymentIntent != "" {
		out = append(out, run.Str("payment_intent", f.PaymentIntent))
	}
	if f.Amount != "" {
		out = append(out, run.Money("amount", f.Amount, f.Currency)...)
	} else if f.Currency != "" {
		out = append(out, run.Str("currency", f.Currency))
	}
	return out
}

// MarshalJSON renders the finding as one flat object: its Fields, then detail,
// fixable and, where they apply, who acknowledged or fixed it and when.
func (f StoredFinding) MarshalJSON() ([]byte, error) {
	fields := f.Fields()
	fields = append(fields, run.Str("detail", f.Detail), run.Bool("fixable", f.Fixable))
	if f.AcknowledgedBy != "" {
		fields = append(fields, run.Str("acknowledged_by", f.AcknowledgedBy), run.Str("ack_reason", f.AckReason),
			run.Time("acknowledged_at", f.AcknowledgedAt))
	}
	if f.FixedBy != "" {
		fields = append(fields, run.Str("fixed_by", f.FixedBy), run.Str("fix_reason", f.FixReason), run.Time("fixed_at", f.FixedAt))
	}
	if !f.ResolvedAt.IsZero() {
		fields = append(fields, run.Time("resolved_at", f.ResolvedAt))
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, fl := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(fl.Key)
		v, err := json.Marshal(fl.Value)
		if err != nil {
			return nil, fmt.Errorf("finding %d field %s: %w", f.ID, fl.Key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	if len(f.Events) > 0 {
		ev, err := json.Marshal(f.Events)
		if err != nil {
			return nil, err
		}
		b.WriteString(`,"events":`)
		b.Write(ev)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Subject names the finding in a report line: "finding 17", or its fingerprint
// when a dry run would open it.
func (f StoredFinding) Subject() string {
	if f.ID == 0 {
		return "new finding " + f.Fingerprint
	}
	return "finding " + strconv.FormatInt(f.ID, 10)
}

// Findings is a listing, as `cronkit reconcile findings` prints it.
type Findings []StoredFinding

// WriteText prints one line per finding, then the count.
func (fs Findings) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLASS\tSTATE\tLAST SEEN\tDETAIL")
	for _, f := range fs {
		detail := f.Detail
		if f.State == StateAcknowledged {
			detail += " [ack " + f.AcknowledgedBy + ": " + f.AckReason + "]"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", f.ID, f.Class, f.State, f.LastSeen.UTC().Format("2006-01-02 15:04"), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d finding(s)\n", len(fs))
	return err
}
