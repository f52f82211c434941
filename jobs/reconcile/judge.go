package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
)

// The payments check's decisions: pure functions of one invoice's objects on both
// sides (a group), the window and the clock.

// invoiceRow is an invoice as the payments check reads it.
type invoiceRow struct {
	ID, Account int64
	Currency    string
	Total, Paid int64 // minor units
	Status      string
	Attempts    int
	Collection  string
}

// localPayment is a row of billing's payments table: one charge attempt.
type localPayment struct {
	ID, Invoice, Account int64
	Attempt              int
	Amount               int64
	Currency             string
	Status               string // pending, succeeded, soft_declined, hard_declined, failed
	PI                   string
	Decline              string
	Created              time.Time
}

// localRefund and localDispute are the rows of payment_refunds and payment_disputes.
type localRefund struct {
	ID, PI   string
	Invoice  int64
	Amount   int64
	Currency string
	Status   string
}

type localDispute struct {
	ID, PI   string
	Invoice  int64
	Amount   int64
	Currency string
	Status   string
}

// group is everything known about one invoice: the Stripe objects carrying its id
// and the local rows.
type group struct {
	invoice  int64
	inv      *invoiceRow // nil: no such invoice here
	marked   bool        // judge in full: an old finding or a stale attempt
	intents  []remote
	refunds  []remote
	disputes []remote
	local    []localPayment
	// localComplete: local holds every payment of the invoice, with its refunds and
	// disputes (otherwise only the window's payments).
	localComplete bool
	localRefunds  []localRefund
	localDisputes []localDispute
	// missing are PaymentIntents local rows name that Stripe does not have;
	// refunded is what Stripe refunded of each PaymentIntent (read for duplicates).
	missing  map[string]bool
	refunded map[string]int64
	// young: an object of the group was too young to judge and was left out.
	young bool
}

// judgeEnv is the frame of a judgement.
type judgeEnv struct {
	From, To time.Time // the window judged, To after grace
	Cutoff   time.Time // objects created at or after it are not judged yet
	Now      time.Time
	Grace    time.Duration
	// ReplayWindow is how long billing replays a pending attempt itself.
	ReplayWindow time.Duration
}

func (e judgeEnv) inWindow(t time.Time) bool { return !t.Before(e.From) && t.Before(e.To) }

// fixKind is what --fix does about a finding.
type fixKind int

const (
	fixRecordPayment fixKind = iota + 1 // paid_not_recorded: record Stripe's success, mark the invoice paid
	fixSettleAttempt                    // payment_unsettled: record the attempt's outcome
	fixRecordRefund                     // refunded_not_recorded
	fixRecordDispute                    // disputed
)

// fix is a repair --fix may make, as judged; it re-checks everything before acting.
type fix struct {
	kind        fixKind
	fingerprint string
	class       string
	invoice     int64
	intent      *remote
	local       *localPayment
	object      *remote // the refund or dispute
	// outcome is how a pending attempt settles: soft_declined, hard_declined, or
	// failed (Stripe never received it).
	outcome string
	code    string
}

// verdict collects the judgements of a batch of groups.
type verdict struct {
	findings []Finding
	fixes    []fix
	// Totals of the window, per currency: what Stripe took minus what it gave back,
	// and the same objects as recorded here.
	stripe, local map[string]int64
}

func newVerdict() *verdict {
	return &verdict{stripe: map[string]int64{}, local: map[string]int64{}}
}

func (v *verdict) add(f Finding, fx *fix) {
	v.findings = append(v.findings, f)
	if fx != nil {
		fx.fingerprint, fx.class = f.Fingerprint, f.Class
		v.fixes = append(v.fixes, *fx)
	}
}

// refundTakes says whether a refund in this status gives (or will give) money back.
func refundTakes(status string) bool { return status == "succeeded" || status == "pending" }

// inFlight are PaymentIntent statuses with no outcome yet: nothing to settle.
func inFlight(status string) bool {
	switch status {
	case "processing", "requires_capture", "requires_confirmation":
		return true
	}
	return false
}

// judge decides one group's findings, the fixes that are safe, and its share of the
// window's totals.
func judge(g *group, e judgeEnv, v *verdict) {
	inv := g.inv
	byPI := map[string]*localPayment{}
	byAttempt := map[int]*localPayment{}
	localSucceeded := false
	for i := range g.local {
		l := &g.local[i]
		if l.PI != "" {
			byPI[l.PI] = l
		}
		byAttempt[l.Attempt] = l
		localSucceeded = localSucceeded || l.Status == "succeeded"
	}
	match := func(p *remote) *localPayment {
		if l := byPI[p.ID]; l != nil {
			return l
		}
		if l := byAttempt[p.Attempt]; l != nil && l.PI == "" && p.Attempt > 0 {
			return l
		}
		return nil
	}
	intents := slices.Clone(g.intents)
	slices.SortFunc(intents, func(a, b remote) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	matched := map[int64]*remote{}
	firstUnrecorded := true
	for i := range intents {
		p := &intents[i]
		l := match(p)
		if l != nil {
			matched[l.ID] = p
		}
		if p.Status == "succeeded" {
			switch {
			case l != nil && l.Status == "succeeded":
				if !strings.EqualFold(l.Currency, p.Currency) {
					v.add(mismatch(ClassCurrencyMismatch, g, p, l,
						fmt.Sprintf("%s took %s; payment %d recorded %s", p.ID, money(p.Received, p.Currency), l.ID, money(l.Amount, l.Currency))), nil)
				} else if l.Amount != p.Received {
					v.add(mismatch(ClassAmountMismatch, g, p, l,
						fmt.Sprintf("%s took %s; payment %d recorded %s", p.ID, money(p.Received, p.Currency), l.ID, money(l.Amount, l.Currency))), nil)
				}
			case inv == nil:
				v.add(unknownPayment(g, p, "succeeded at Stripe for an invoice this database does not have"), nil)
			default:
				f, fx := paidNotRecorded(g, p, l, byAttempt[p.Attempt], localSucceeded, firstUnrecorded)
				firstUnrecorded = false
				v.add(f, fx)
			}
			continue
		}
		switch {
		case l == nil:
			v.add(unknownPayment(g, p, "carries cronkit's metadata but no payment here records it"), nil)
		case l.Status == "succeeded":
			v.add(recordedNotPaid(g, l, p, fmt.Sprintf("payment %d (attempt %d) is succeeded here; Stripe has %s %s",
				l.ID, l.Attempt, p.ID, p.Status)), nil)
		case l.Status == "pending" && l.Created.Before(e.Cutoff):
			if f, fx, ok := unsettled(g, l, p, e); ok {
				v.add(f, fx)
			}
		}
	}
	for i := range g.local {
		l := &g.local[i]
		if matched[l.ID] != nil || !l.Created.Before(e.Cutoff) {
			continue
		}
		if !g.marked && !e.inWindow(l.Created) && l.Status != "pending" {
			continue
		}
		switch l.Status {
		case "succeeded":
			switch {
			case l.PI == "":
				v.add(recordedNotPaid(g, l, nil, fmt.Sprintf("payment %d (attempt %d) is succeeded here with no PaymentIntent", l.ID, l.Attempt)), nil)
			case g.missing[l.PI]:
				v.add(recordedNotPaid(g, l, nil, fmt.Sprintf("payment %d (attempt %d) is succeeded here; Stripe has no %s", l.ID, l.Attempt, l.PI)), nil)
			}
		case "pending":
			if f, fx, ok := unsettled(g, l, nil, e); ok {
				v.add(f, fx)
			}
		}
	}
	duplicates(g, intents, v)
	judgeRefunds(g, v)
	judgeDisputes(g, v)

	// The window's totals: Stripe's in-window objects and what records them here,
	// and payments of the window recorded here that Stripe does not have.
	for i := range intents {
		p := &intents[i]
		if !p.InWindow || p.Status != "succeeded" {
			continue
		}
		v.stripe[p.Currency] += p.Received
		if l := match(p); l != nil && l.Status == "succeeded" {
			v.local[strings.ToUpper(l.Currency)] += l.Amount
		}
	}
	for i := range g.local {
		l := &g.local[i]
		if matched[l.ID] == nil && l.Status == "succeeded" && e.inWindow(l.Created) && (l.PI == "" || g.missing[l.PI]) {
			v.local[strings.ToUpper(l.Currency)] += l.Amount
		}
	}
	localRefunds := map[string]*localRefund{}
	for i := range g.localRefunds {
		localRefunds[g.localRefunds[i].ID] = &g.localRefunds[i]
	}
	for i := range g.refunds {
		r := &g.refunds[i]
		if !r.InWindow || !refundTakes(r.Status) {
			continue
		}
		v.stripe[r.Currency] -= r.Amount
		if lr := localRefunds[r.ID]; lr != nil && refundTakes(lr.Status) {
			v.local[strings.ToUpper(lr.Currency)] -= lr.Amount
		}
	}
}

// ids fills a finding's ids from the group and the objects.
func ids(g *group, p *remote, l *localPayment) Finding {
	f := Finding{InvoiceID: g.invoice}
	switch {
	case g.inv != nil:
		f.AccountID = g.inv.Account
	case l != nil:
		f.AccountID = l.Account
	case p != nil:
		f.AccountID = p.Account
	}
	if p != nil {
		f.PaymentIntent = p.Intent
	} else if l != nil {
		f.PaymentIntent = l.PI
	}
	return f
}

func paidNotRecorded(g *group, p *remote, l, slot *localPayment, localSucceeded, oldest bool) (Finding, *fix) {
	f := ids(g, p, l)
	f.Class = ClassPaidNotRecorded
	f.Fingerprint = Fingerprint(f.Class, p.ID)
	f.Amount, f.Currency = decimal(p.Received, p.Currency), p.Currency
	here := fmt.Sprintf("no payment of invoice %d records it", g.invoice)
	if l != nil {
		here = fmt.Sprintf("here attempt %d is %s", l.Attempt, l.Status)
	}
	f.Detail = fmt.Sprintf("%s took %s at Stripe (attempt %d); %s, invoice %d is %s", p.ID, money(p.Received, p.Currency),
		p.Attempt, here, g.invoice, g.inv.Status)
	f.Evidence = map[string]any{"stripe": intentEvidence(p), "local": localEvidence(l), "invoice": invoiceEvidence(g.inv)}
	inv := g.inv
	var why string
	switch {
	case inv.Status != "open":
		why = "the invoice is " + inv.Status
	case !strings.EqualFold(inv.Currency, p.Currency):
		why = "Stripe's currency is not the invoice's"
	case p.Received != inv.Total-inv.Paid:
		why = fmt.Sprintf("Stripe took %s of %s due", money(p.Received, p.Currency), money(inv.Total-inv.Paid, inv.Currency))
	case localSucceeded:
		why = "another payment of the invoice is recorded as succeeded"
	case !oldest:
		why = "an older PaymentIntent of the invoice is not recorded either"
	case p.Attempt <= 0:
		why = "Stripe's metadata names no attempt"
	case l == nil && slot != nil:
		why = fmt.Sprintf("attempt %d is recorded here with another PaymentIntent", p.Attempt)
	}
	if why != "" {
		f.Detail += "; for a person: " + why
		return f, nil
	}
	f.Fixable = true
	return f, &fix{kind: fixRecordPayment, invoice: g.invoice, intent: p, local: l}
}

func recordedNotPaid(g *group, l *localPayment, p *remote, detail string) Finding {
	f := ids(g, p, l)
	f.Class = ClassRecordedNotPaid
	f.Fingerprint = Fingerprint(f.Class, "payment", strconv.FormatInt(l.ID, 10))
	f.Amount, f.Currency = decimal(l.Amount, l.Currency), strings.ToUpper(l.Currency)
	f.Detail = detail
	var stripe any
	if p != nil {
		stripe = intentEvidence(p)
	}
	f.Evidence = map[string]any{"stripe": stripe, "local": localEvidence(l), "invoice": invoiceEvidence(g.inv)}
	return f
}

func mismatch(class string, g *group, p *remote, l *localPayment, detail string) Finding {
	f := ids(g, p, l)
	f.Class = class
	f.Fingerprint = Fingerprint(class, p.ID)
	f.Amount, f.Currency = decimal(p.Received, p.Currency), p.Currency
	f.Detail = detail
	f.Evidence = map[string]any{"stripe": intentEvidence(p), "local": localEvidence(l)}
	return f
}

func unknownPayment(g *group, p *remote, why string) Finding {
	f := ids(g, p, nil)
	f.Class = ClassUnknownPayment
	f.Fingerprint = Fingerprint(f.Class, p.ID)
	f.Amount, f.Currency = decimal(p.Amount, p.Currency), p.Currency
	f.Detail = fmt.Sprintf("%s (%s, %s, invoice %d attempt %d) %s", p.ID, p.Status, money(p.Amount, p.Currency), g.invoice, p.Attempt, why)
	f.Evidence = map[string]any{"stripe": intentEvidence(p), "local": nil, "invoice": invoiceEvidence(g.inv)}
	return f
}

// unsettled judges an attempt still pending here, with Stripe's PaymentIntent for it
// (p) or none found. ok is false when there is nothing to say yet: Stripe has no
// outcome, or billing may still replay the attempt itself.
func unsettled(g *group, l *localPayment, p *remote, e judgeEnv) (Finding, *fix, bool) {
	f := ids(g, p, l)
	f.Class = ClassPaymentUnsettled
	f.Fingerprint = Fingerprint(f.Class, "payment", strconv.FormatInt(l.ID, 10))
	f.Amount, f.Currency = decimal(l.Amount, l.Currency), strings.ToUpper(l.Currency)
	age := e.Now.Sub(l.Created).Round(time.Minute)
	fx := &fix{kind: fixSettleAttempt, invoice: g.invoice, intent: p, local: l}
	var stripe any
	if p != nil {
		if inFlight(p.Status) || p.Status == "succeeded" {
			return Finding{}, nil, false
		}
		stripe = intentEvidence(p)
		switch payment.Classify(p.Status, p.ErrorCode, p.Code) {
		case payment.OutcomeHardDecline:
			fx.outcome = "hard_declined"
		default:
			fx.outcome = "soft_declined"
		}
		fx.code = cmp.Or(p.Code, p.ErrorCode, p.Status)
		f.Detail = fmt.Sprintf("attempt %d of invoice %d pending here for %s; Stripe's %s is %s (%s)", l.Attempt, g.invoice, age,
			p.ID, p.Status, fx.code)
	} else {
		if e.Now.Sub(l.Created) <= e.ReplayWindow+e.Grace {
			return Finding{}, nil, false
		}
		fx.outcome, fx.code = "failed", "not_at_provider"
		f.Detail = fmt.Sprintf("attempt %d of invoice %d pending here for %s, beyond billing's replays; Stripe has no PaymentIntent for it",
			l.Attempt, g.invoice, age)
	}
	f.Evidence = map[string]any{"stripe": stripe, "local": localEvidence(l), "invoice": invoiceEvidence(g.inv)}
	f.Fixable = true
	return f, fx, true
}

// duplicates finds two or more PaymentIntents that took money for one invoice and
// kept it (not refunded in full).
func duplicates(g *group, intents []remote, v *verdict) {
	var kept []*remote
	var currency string
	var total, largest int64
	seen := map[string]bool{}
	for i := range intents {
		p := &intents[i]
		if p.Status != "succeeded" || seen[p.ID] {
			continue
		}
		seen[p.ID] = true
		if net := p.Received - g.refunded[p.ID]; net > 0 {
			kept = append(kept, p)
			currency = p.Currency
			total += net
			largest = max(largest, net)
		}
	}
	var others []string
	for _, l := range g.local {
		if l.Status == "succeeded" && l.PI != "" && !seen[l.PI] && !g.missing[l.PI] {
			others = append(others, l.PI) // succeeded here, outside what was read from Stripe
		}
	}
	if len(kept)+len(others) < 2 || len(kept) == 0 {
		return
	}
	f := ids(g, kept[0], nil)
	f.Class = ClassDuplicateCharge
	f.PaymentIntent = ""
	f.Fingerprint = Fingerprint(f.Class, "invoice", strconv.FormatInt(g.invoice, 10))
	names := make([]string, 0, len(kept)+len(others))
	evidence := make([]any, 0, len(kept))
	for _, p := range kept {
		names = append(names, p.ID)
		evidence = append(evidence, intentEvidence(p))
	}
	names = append(names, others...)
	if len(others) == 0 {
		f.Amount, f.Currency = decimal(total-largest, currency), currency
	}
	f.Detail = fmt.Sprintf("invoice %d was paid %d times: %s", g.invoice, len(names), strings.Join(names, ", "))
	f.Evidence = map[string]any{"stripe": evidence, "local_succeeded_elsewhere": others, "invoice": invoiceEvidence(g.inv)}
	v.add(f, nil)
}

func judgeRefunds(g *group, v *verdict) {
	local := map[string]*localRefund{}
	for i := range g.localRefunds {
		local[g.localRefunds[i].ID] = &g.localRefunds[i]
	}
	for i := range g.refunds {
		r := &g.refunds[i]
		lr := local[r.ID]
		var here string
		switch {
		case lr == nil && !refundTakes(r.Status):
			continue // a failed or canceled refund gave nothing back
		case lr == nil:
			here = "not recorded here"
		case lr.Status != r.Status || lr.Amount != r.Amount || !strings.EqualFold(lr.Currency, r.Currency):
			here = fmt.Sprintf("recorded here as %s %s", lr.Status, money(lr.Amount, strings.ToUpper(lr.Currency)))
		default:
			continue
		}
		f := Finding{Class: ClassRefundedNotRecorded, Fingerprint: Fingerprint(ClassRefundedNotRecorded, r.ID),
			InvoiceID: g.invoice, AccountID: r.Account, ResourceID: r.ID, PaymentIntent: r.Intent,
			Amount: decimal(r.Amount, r.Currency), Currency: r.Currency,
			Detail:   fmt.Sprintf("refund %s of %s (%s, %s) is %s", r.ID, r.Intent, money(r.Amount, r.Currency), r.Status, here),
			Evidence: map[string]any{"stripe": objectEvidence(r), "local": lr}}
		if g.inv != nil {
			f.AccountID = g.inv.Account
		}
		var fx *fix
		if g.inv != nil {
			f.Fixable = true
			fx = &fix{kind: fixRecordRefund, invoice: g.invoice, object: r}
		}
		v.add(f, fx)
	}
}

func judgeDisputes(g *group, v *verdict) {
	local := map[string]*localDispute{}
	for i := range g.localDisputes {
		local[g.localDisputes[i].ID] = &g.localDisputes[i]
	}
	for i := range g.disputes {
		d := &g.disputes[i]
		ld := local[d.ID]
		var here string
		switch {
		case ld == nil:
			here = "not recorded here"
		case ld.Status != d.Status || ld.Amount != d.Amount:
			here = fmt.Sprintf("recorded here as %s %s", ld.Status, money(ld.Amount, strings.ToUpper(ld.Currency)))
		default:
			continue
		}
		due := ""
		if !d.Due.IsZero() {
			due = ", evidence due by " + d.Due.UTC().Format(time.RFC3339)
		}
		f := Finding{Class: ClassDisputed, Fingerprint: Fingerprint(ClassDisputed, d.ID), InvoiceID: g.invoice,
			AccountID: d.Account, ResourceID: d.ID, PaymentIntent: d.Intent, Amount: decimal(d.Amount, d.Currency), Currency: d.Currency,
			Detail: fmt.Sprintf("dispute %s of %s (%s, %s, %s%s) is %s", d.ID, d.Intent, money(d.Amount, d.Currency), d.Status,
				d.Code, due, here),
			Evidence: map[string]any{"stripe": objectEvidence(d), "local": ld}}
		if g.inv != nil {
			f.AccountID = g.inv.Account
		}
		var fx *fix
		if g.inv != nil {
			f.Fixable = true
			fx = &fix{kind: fixRecordDispute, invoice: g.invoice, object: d}
		}
		v.add(f, fx)
	}
}

func intentEvidence(p *remote) map[string]any {
	m := map[string]any{"id": p.ID, "status": p.Status, "amount_minor": p.Amount, "amount_received_minor": p.Received,
		"currency": p.Currency, "created": p.Created.UTC().Format(time.RFC3339), "attempt": p.Attempt}
	if p.Code != "" {
		m["decline_code"] = p.Code
	}
	if p.ErrorCode != "" {
		m["error_code"] = p.ErrorCode
	}
	return m
}

func objectEvidence(o *remote) map[string]any {
	m := map[string]any{"id": o.ID, "payment_intent": o.Intent, "status": o.Status, "amount_minor": o.Amount,
		"currency": o.Currency, "created": o.Created.UTC().Format(time.RFC3339), "reason": o.Code}
	if !o.Due.IsZero() {
		m["evidence_due_by"] = o.Due.UTC().Format(time.RFC3339)
	}
	return m
}

func localEvidence(l *localPayment) any {
	if l == nil {
		return nil
	}
	return map[string]any{"payment_id": l.ID, "attempt": l.Attempt, "status": l.Status, "amount_minor": l.Amount,
		"currency": l.Currency, "payment_intent": l.PI, "created": l.Created.UTC().Format(time.RFC3339)}
}

func invoiceEvidence(inv *invoiceRow) any {
	if inv == nil {
		return nil
	}
	return map[string]any{"id": inv.ID, "status": inv.Status, "total_minor": inv.Total, "paid_minor": inv.Paid,
		"currency": inv.Currency, "collection": inv.Collection, "attempts": inv.Attempts}
}
