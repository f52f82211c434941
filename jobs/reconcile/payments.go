package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// Stripe is what the payments check reads from the payment provider: *payment.Client,
// or in a dry run its stand-in. Nothing here moves money.
type Stripe interface {
	ListPaymentIntents(ctx context.Context, p payment.ListParams) iter.Seq2[payment.PaymentIntent, error]
	GetPaymentIntent(ctx context.Context, id string) (payment.PaymentIntent, error)
	SearchPaymentIntents(ctx context.Context, metadata map[string]string) iter.Seq2[payment.PaymentIntent, error]
	ListRefunds(ctx context.Context, p payment.RefundListParams) iter.Seq2[payment.Refund, error]
	ListDisputes(ctx context.Context, p payment.RefundListParams) iter.Seq2[payment.Dispute, error]
}

// BillingReplayWindow is how long cronkit billing replays an attempt left pending,
// with its idempotency key, before leaving it to a person (billing's
// idempotencyWindow): until then a PaymentIntent may still appear for it.
const BillingReplayWindow = 23 * time.Hour

// Payments is the payments check: Stripe's PaymentIntents, refunds and disputes of a
// window against billing's payments and invoices and the refunds and disputes
// recorded here.
type Payments struct {
	Stripe Stripe
	// RecheckLimit bounds the old findings re-judged per run, oldest first (default
	// 1000).
	RecheckLimit int
	// RunSize is how many Stripe objects a dry run sorts in memory at once before
	// spilling to disk (default 50,000).
	RunSize int
}

// Name is the check's verb: cronkit reconcile payments.
func (p *Payments) Name() string { return "payments" }

// groupBatch is how many invoices are judged together: one IN-list query each for
// what the window's cursor did not bring, one transaction of findings.
const groupBatch = 200

// paymentsRun is one run of the payments check.
type paymentsRun struct {
	p     *Payments
	env   *CheckEnv
	je    judgeEnv
	rec   *Recording
	stage stage
	fixer *fixer
	rep   *run.Report
	// rechecks are old findings re-judged, by invoice; a group left partly unjudged
	// (too young) takes its findings out of the recheck.
	rechecks    map[int64][]int64
	notRecheck  map[int64]bool
	stripeTotal map[string]int64
	localTotal  map[string]int64
}

// Run judges the window: stage Stripe's side, read ours in the same order, judge each
// invoice, record the findings, fix what is safe (with --fix), then the totals.
func (p *Payments) Run(ctx context.Context, env *CheckEnv) error {
	if p.Stripe == nil {
		return run.Usagef("the payments check needs Stripe (--stripe-key)")
	}
	cutoff := env.Now.Add(-env.Grace)
	to := env.Window.To
	if to.After(cutoff) {
		env.Report.Count("payments_window_cut_seconds", int64(to.Sub(cutoff).Seconds()))
		to = cutoff
	}
	if !env.Window.From.Before(to) {
		return run.Usagef("payments: the window %s .. %s ends within --grace (%s) of now: nothing is old enough to judge",
			env.Window.From.Format(time.RFC3339), env.Window.To.Format(time.RFC3339), env.Grace)
	}
	r := &paymentsRun{p: p, env: env, rep: env.Report,
		je:       judgeEnv{From: env.Window.From, To: to, Cutoff: cutoff, Now: env.Now, Grace: env.Grace, ReplayWindow: BillingReplayWindow},
		rechecks: map[int64][]int64{}, notRecheck: map[int64]bool{}, stripeTotal: map[string]int64{}, localTotal: map[string]int64{}}
	rec, err := env.Store.Begin(ctx, Scope{Check: p.Name(), Classes: PaymentClasses(), From: r.je.From, To: r.je.To, Rejudges: true})
	if err != nil {
		return err
	}
	r.rec = rec
	if env.DryRun {
		r.stage, err = newDiskStage(env.TempDir, p.RunSize)
	} else {
		r.stage, err = newTableStage(ctx, env.DB)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err := r.stage.Close(); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("drop the staged Stripe objects")
		}
	}()
	if env.Fix {
		r.fixer = &fixer{env: env, stripe: p.Stripe, rep: env.Report}
	}
	if err := r.stageWindow(ctx); err != nil {
		return err
	}
	if err := r.stageRechecks(ctx); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Interface("counts", env.Report.Counts).Msg("payments: Stripe's side staged")
	if err := r.merge(ctx); err != nil {
		return err
	}
	if err := r.drift(ctx); err != nil {
		return err
	}
	var rechecked []int64
	for _, ids := range r.rechecks {
		for _, id := range ids {
			if !r.notRecheck[id] {
				rechecked = append(rechecked, id)
			}
		}
	}
	slices.Sort(rechecked)
	r.rec.Recheck(rechecked...)
	sum, err := r.rec.Finish(ctx)
	if err != nil {
		return err
	}
	reportSummary(env.Report, sum, r.je.From, r.je.To)
	return nil
}

// stageWindow lists the window's PaymentIntents, refunds and disputes into the stage.
func (r *paymentsRun) stageWindow(ctx context.Context) error {
	from, to := r.je.From, r.je.To
	buf := make([]remote, 0, 500)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := r.stage.Add(ctx, buf)
		buf = buf[:0]
		return err
	}
	progress := run.ProgressFrom(ctx)
	var n int64
	for pi, err := range r.p.Stripe.ListPaymentIntents(ctx, payment.ListParams{CreatedFrom: from, CreatedTo: to}) {
		if err != nil {
			return fmt.Errorf("payments: list Stripe's PaymentIntents: %w", err)
		}
		rm, ok := intentRemote(pi, true)
		if !ok {
			r.rep.Count("stripe_foreign", 1)
			continue
		}
		r.rep.Count("stripe_payment_intents", 1)
		if n++; n%10_000 == 0 {
			progress.Step("staging Stripe's PaymentIntents", n, 0)
		}
		if buf = append(buf, rm); len(buf) == cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	for re, err := range r.p.Stripe.ListRefunds(ctx, payment.RefundListParams{CreatedFrom: from, CreatedTo: to}) {
		if err != nil {
			return fmt.Errorf("payments: list Stripe's refunds: %w", err)
		}
		rm, ok := refundRemote(re, true)
		if !ok {
			r.rep.Count("stripe_foreign", 1)
			continue
		}
		r.rep.Count("stripe_refunds", 1)
		if buf = append(buf, rm); len(buf) == cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	for d, err := range r.p.Stripe.ListDisputes(ctx, payment.RefundListParams{CreatedFrom: from, CreatedTo: to}) {
		if err != nil {
			return fmt.Errorf("payments: list Stripe's disputes: %w", err)
		}
		rm, ok := disputeRemote(d, true)
		if !ok {
			r.rep.Count("stripe_foreign", 1)
			continue
		}
		r.rep.Count("stripe_disputes", 1)
		if buf = append(buf, rm); len(buf) == cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// stageRechecks stages what is judged whatever the window: the invoices of old
// findings still open (all their PaymentIntents, refunds and disputes, asked again),
// disputes whose outcome is pending, and attempts left pending.
func (r *paymentsRun) stageRechecks(ctx context.Context) error {
	db := r.env.DB
	classes := PaymentClasses()
	args := make([]any, 0, len(classes)+3)
	for _, c := range classes {
		if c != ClassBalanceDrift {
			args = append(args, c)
		}
	}
	n := len(args)
	limit := r.p.RecheckLimit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, r.je.From, r.je.To, limit)
	rows, err := db.QueryContext(ctx, fmt.Sprintf(sqlFindingsToRecheck, inList(n)), args...)
	if err != nil {
		return fmt.Errorf("payments: findings to re-judge: %w", err)
	}
	type old struct {
		id, invoice int64
		pi          string
	}
	var olds []old
	for rows.Next() {
		var o old
		if err := rows.Scan(&o.id, &o.invoice, &o.pi); err != nil {
			rows.Close()
			return fmt.Errorf("payments: findings to re-judge: %w", err)
		}
		olds = append(olds, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: findings to re-judge: %w", err)
	}
	var extra []remote
	intentsDone := map[string]bool{}
	stageIntent := func(pi payment.PaymentIntent) error {
		if intentsDone[pi.ID] {
			return nil
		}
		intentsDone[pi.ID] = true
		rm, ok := intentRemote(pi, false)
		if !ok {
			return nil
		}
		extra = append(extra, rm, remote{Invoice: rm.Invoice, Kind: kindMarker})
		return r.stageChildren(ctx, pi.ID, &extra)
	}
	for _, o := range olds {
		if o.pi != "" {
			pi, err := r.p.Stripe.GetPaymentIntent(ctx, o.pi)
			switch {
			case errors.Is(err, payment.ErrNotFound):
			case err != nil:
				return fmt.Errorf("payments: re-judge finding %d: %w", o.id, err)
			default:
				if o.invoice == 0 {
					o.invoice, _ = strconv.ParseInt(pi.Metadata["invoice_id"], 10, 64)
				}
				if err := stageIntent(pi); err != nil {
					return err
				}
			}
		}
		if o.invoice == 0 {
			continue
		}
		for pi, err := range r.p.Stripe.SearchPaymentIntents(ctx, map[string]string{"invoice_id": strconv.FormatInt(o.invoice, 10)}) {
			if err != nil {
				return fmt.Errorf("payments: re-judge finding %d: %w", o.id, err)
			}
			if err := stageIntent(pi); err != nil {
				return err
			}
		}
		extra = append(extra, remote{Invoice: o.invoice, Kind: kindMarker})
		r.rechecks[o.invoice] = append(r.rechecks[o.invoice], o.id)
		r.rep.Count("findings_rechecked", 1)
	}

	// Disputes recorded here with no outcome yet: ask again.
	rows, err = db.QueryContext(ctx, sqlOpenDisputes)
	if err != nil {
		return fmt.Errorf("payments: open disputes: %w", err)
	}
	type disputed struct {
		invoice int64
		pi      string
	}
	var open []disputed
	for rows.Next() {
		var d disputed
		if err := rows.Scan(&d.invoice, &d.pi); err != nil {
			rows.Close()
			return fmt.Errorf("payments: open disputes: %w", err)
		}
		open = append(open, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: open disputes: %w", err)
	}
	for _, d := range open {
		for dp, err := range r.p.Stripe.ListDisputes(ctx, payment.RefundListParams{PaymentIntent: d.pi}) {
			if err != nil {
				return fmt.Errorf("payments: disputes of %s: %w", d.pi, err)
			}
			if rm, ok := disputeRemote(dp, false); ok {
				extra = append(extra, rm)
			}
		}
		extra = append(extra, remote{Invoice: d.invoice, Kind: kindMarker})
	}

	// Attempts left pending past the grace, of any age: the janitor's work.
	rows, err = db.QueryContext(ctx, sqlStalePendingInvs, r.je.Cutoff)
	if err != nil {
		return fmt.Errorf("payments: pending attempts: %w", err)
	}
	for rows.Next() {
		var inv int64
		if err := rows.Scan(&inv); err != nil {
			rows.Close()
			return fmt.Errorf("payments: pending attempts: %w", err)
		}
		extra = append(extra, remote{Invoice: inv, Kind: kindMarker})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: pending attempts: %w", err)
	}
	return r.stage.Add(ctx, extra)
}

// stageChildren appends a PaymentIntent's refunds and disputes, asked again.
func (r *paymentsRun) stageChildren(ctx context.Context, pi string, out *[]remote) error {
	for re, err := range r.p.Stripe.ListRefunds(ctx, payment.RefundListParams{PaymentIntent: pi}) {
		if err != nil {
			return fmt.Errorf("payments: refunds of %s: %w", pi, err)
		}
		if rm, ok := refundRemote(re, false); ok {
			*out = append(*out, rm)
		}
	}
	for d, err := range r.p.Stripe.ListDisputes(ctx, payment.RefundListParams{PaymentIntent: pi}) {
		if err != nil {
			return fmt.Errorf("payments: disputes of %s: %w", pi, err)
		}
		if rm, ok := disputeRemote(d, false); ok {
			*out = append(*out, rm)
		}
	}
	return nil
}

// localRow is one row of the local cursor: a payment and its invoice.
type localRow struct {
	pay localPayment
	inv *invoiceRow
}

// localCursor streams the window's payments in invoice order.
func (r *paymentsRun) localCursor(ctx context.Context) iter.Seq2[localRow, error] {
	return func(yield func(localRow, error) bool) {
		rows, err := r.env.DB.QueryContext(ctx, sqlWindowPayments, r.je.From, r.je.To)
		if err != nil {
			yield(localRow{}, fmt.Errorf("payments: read the window's payments: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var lr localRow
			var inv nullableInvoice
			dest := append(paymentDest(&lr.pay), inv.dest()...)
			if err := rows.Scan(dest...); err != nil {
				yield(localRow{}, fmt.Errorf("payments: read the window's payments: %w", err))
				return
			}
			lr.pay.Created = lr.pay.Created.UTC()
			lr.inv = inv.row()
			if !yield(lr, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(localRow{}, fmt.Errorf("payments: read the window's payments: %w", err))
		}
	}
}

func paymentDest(p *localPayment) []any {
	return []any{&p.ID, &p.Invoice, &p.Account, &p.Attempt, &p.Amount, &p.Currency, &p.Status, &p.PI, &p.Decline, &p.Created}
}

// nullableInvoice scans the LEFT JOINed invoice columns.
type nullableInvoice struct {
	id, account, total, paid, attempts sql.NullInt64
	currency, status, collection       sql.NullString
}

func (n *nullableInvoice) dest() []any {
	return []any{&n.id, &n.account, &n.currency, &n.total, &n.paid, &n.status, &n.attempts, &n.collection}
}

func (n *nullableInvoice) row() *invoiceRow {
	if !n.id.Valid {
		return nil
	}
	return &invoiceRow{ID: n.id.Int64, Account: n.account.Int64, Currency: n.currency.String, Total: n.total.Int64,
		Paid: n.paid.Int64, Status: n.status.String, Attempts: int(n.attempts.Int64), Collection: n.collection.String}
}

// merge walks the staged objects and the window's payments together, in invoice
// order, and judges the invoices a batch at a time.
func (r *paymentsRun) merge(ctx context.Context) error {
	nextR, stopR := iter.Pull2(r.stage.Sorted(ctx))
	defer stopR()
	nextL, stopL := iter.Pull2(r.localCursor(ctx))
	defer stopL()
	rem, remErr, remOK := nextR()
	loc, locErr, locOK := nextL()
	var batch []*group
	progress := run.ProgressFrom(ctx)
	var done int64
	for remOK || locOK {
		if remOK && remErr != nil {
			return remErr
		}
		if locOK && locErr != nil {
			return locErr
		}
		var inv int64
		switch {
		case !locOK:
			inv = rem.Invoice
		case !remOK:
			inv = loc.pay.Invoice
		default:
			inv = min(rem.Invoice, loc.pay.Invoice)
		}
		g := &group{invoice: inv}
		for remOK && remErr == nil && rem.Invoice == inv {
			switch rem.Kind {
			case kindMarker:
				g.marked = true
			case kindIntent:
				g.intents = append(g.intents, rem)
			case kindRefund:
				g.refunds = append(g.refunds, rem)
			case kindDispute:
				g.disputes = append(g.disputes, rem)
			}
			rem, remErr, remOK = nextR()
		}
		for locOK && locErr == nil && loc.pay.Invoice == inv {
			g.local = append(g.local, loc.pay)
			if g.inv == nil {
				g.inv = loc.inv
			}
			r.rep.Count("local_payments", 1)
			loc, locErr, locOK = nextL()
		}
		batch = append(batch, g)
		if len(batch) == groupBatch {
			if err := r.process(ctx, batch); err != nil {
				return err
			}
			done += int64(len(batch))
			progress.Step("judging invoices", done, 0)
			batch = batch[:0]
		}
	}
	return r.process(ctx, batch)
}

// process completes, judges, records and fixes a batch of invoices.
func (r *paymentsRun) process(ctx context.Context, groups []*group) error {
	if len(groups) == 0 {
		return nil
	}
	r.rep.Count("invoices_judged", int64(len(groups)))
	var load []*group
	for _, g := range groups {
		r.dropYoung(g)
		if needsLocal(g) {
			load = append(load, g)
		}
	}
	if err := r.loadLocal(ctx, load); err != nil {
		return err
	}
	v := newVerdict()
	for _, g := range groups {
		if err := r.complete(ctx, g); err != nil {
			return err
		}
		judge(g, r.je, v)
		if g.young {
			for _, id := range r.rechecks[g.invoice] {
				r.notRecheck[id] = true
			}
		}
	}
	for c, n := range v.stripe {
		r.stripeTotal[c] += n
	}
	for c, n := range v.local {
		r.localTotal[c] += n
	}
	if err := r.rec.Add(ctx, v.findings...); err != nil {
		return err
	}
	if r.fixer != nil && len(v.fixes) > 0 {
		return r.fixer.apply(ctx, v.fixes)
	}
	return nil
}

// dropYoung leaves out what is younger than the grace: Stripe's and our side may not
// agree yet.
func (r *paymentsRun) dropYoung(g *group) {
	young := func(t time.Time) bool { return !t.Before(r.je.Cutoff) }
	keep := func(rs []remote) []remote {
		return slices.DeleteFunc(rs, func(o remote) bool {
			if young(o.Created) {
				g.young = true
				r.rep.Count("not_judged_young", 1)
				return true
			}
			return false
		})
	}
	g.intents, g.refunds, g.disputes = keep(g.intents), keep(g.refunds), keep(g.disputes)
}

// needsLocal says whether the window's cursor may not have brought everything the
// invoice's judgement needs: every payment of the invoice, and its refunds and
// disputes. The common case, one attempt in the window that matches its
// PaymentIntent, needs nothing more.
func needsLocal(g *group) bool {
	if g.marked || len(g.refunds) > 0 || len(g.disputes) > 0 {
		return true
	}
	if len(g.intents) == 0 {
		return false
	}
	if g.inv == nil || g.inv.Attempts != len(g.local) {
		return true
	}
	byPI := map[string]bool{}
	byAttempt := map[int]bool{}
	for _, l := range g.local {
		byPI[l.PI] = true
		if l.PI == "" {
			byAttempt[l.Attempt] = true
		}
	}
	for _, p := range g.intents {
		if !byPI[p.ID] && !byAttempt[p.Attempt] {
			return true
		}
	}
	return false
}

// loadLocal reads, for each group, the invoice, every payment of it and its recorded
// refunds and disputes, in one IN-list query per table.
func (r *paymentsRun) loadLocal(ctx context.Context, groups []*group) error {
	if len(groups) == 0 {
		return nil
	}
	byInvoice := map[int64]*group{}
	args := make([]any, 0, len(groups))
	for _, g := range groups {
		byInvoice[g.invoice] = g
		args = append(args, g.invoice)
		g.inv, g.local, g.localComplete = nil, nil, true
	}
	in := inList(len(args))
	db := r.env.DB
	rows, err := db.QueryContext(ctx, fmt.Sprintf(sqlInvoicesIn, in), args...)
	if err != nil {
		return fmt.Errorf("payments: read invoices: %w", err)
	}
	for rows.Next() {
		var n nullableInvoice
		if err := rows.Scan(n.dest()...); err != nil {
			rows.Close()
			return fmt.Errorf("payments: read invoices: %w", err)
		}
		if inv := n.row(); inv != nil && byInvoice[inv.ID] != nil {
			byInvoice[inv.ID].inv = inv
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: read invoices: %w", err)
	}
	rows, err = db.QueryContext(ctx, fmt.Sprintf(sqlPaymentsIn, in), args...)
	if err != nil {
		return fmt.Errorf("payments: read payments: %w", err)
	}
	for rows.Next() {
		var p localPayment
		if err := rows.Scan(paymentDest(&p)...); err != nil {
			rows.Close()
			return fmt.Errorf("payments: read payments: %w", err)
		}
		p.Created = p.Created.UTC()
		if g := byInvoice[p.Invoice]; g != nil {
			g.local = append(g.local, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: read payments: %w", err)
	}
	rows, err = db.QueryContext(ctx, fmt.Sprintf(sqlLocalRefundsIn, in), args...)
	if err != nil {
		return fmt.Errorf("payments: read refunds: %w", err)
	}
	for rows.Next() {
		var lr localRefund
		if err := rows.Scan(&lr.ID, &lr.PI, &lr.Invoice, &lr.Amount, &lr.Currency, &lr.Status); err != nil {
			rows.Close()
			return fmt.Errorf("payments: read refunds: %w", err)
		}
		if g := byInvoice[lr.Invoice]; g != nil {
			g.localRefunds = append(g.localRefunds, lr)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: read refunds: %w", err)
	}
	rows, err = db.QueryContext(ctx, fmt.Sprintf(sqlLocalDisputesIn, in), args...)
	if err != nil {
		return fmt.Errorf("payments: read disputes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ld localDispute
		if err := rows.Scan(&ld.ID, &ld.PI, &ld.Invoice, &ld.Amount, &ld.Currency, &ld.Status); err != nil {
			return fmt.Errorf("payments: read disputes: %w", err)
		}
		if g := byInvoice[ld.Invoice]; g != nil {
			g.localDisputes = append(g.localDisputes, ld)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("payments: read disputes: %w", err)
	}
	r.rep.Count("invoices_read_again", int64(len(groups)))
	return nil
}

// complete asks Stripe what the group lacks to be judged: the PaymentIntent of a
// payment recorded as succeeded or left pending (by id, or through search on the
// attempt's metadata when no id was recorded), and, when two PaymentIntents took
// money for the invoice, what was refunded of each.
func (r *paymentsRun) complete(ctx context.Context, g *group) error {
	have := map[string]bool{}
	attempts := map[int]bool{}
	for _, p := range g.intents {
		have[p.ID] = true
		attempts[p.Attempt] = true
	}
	add := func(pi payment.PaymentIntent) {
		if have[pi.ID] {
			return
		}
		rm, ok := intentRemote(pi, false)
		if !ok || rm.Invoice != g.invoice {
			return
		}
		if !rm.Created.Before(r.je.Cutoff) {
			g.young = true
			return
		}
		have[pi.ID] = true
		attempts[rm.Attempt] = true
		g.intents = append(g.intents, rm)
	}
	for _, l := range g.local {
		if !l.Created.Before(r.je.Cutoff) {
			continue
		}
		inScope := g.marked || r.je.inWindow(l.Created) || l.Status == "pending"
		switch {
		case !inScope, l.Status != "succeeded" && l.Status != "pending":
			continue
		case l.PI != "" && have[l.PI]:
			continue
		case l.PI == "" && attempts[l.Attempt]:
			continue
		case l.PI != "":
			pi, err := r.p.Stripe.GetPaymentIntent(ctx, l.PI)
			if errors.Is(err, payment.ErrNotFound) {
				if g.missing == nil {
					g.missing = map[string]bool{}
				}
				g.missing[l.PI] = true
				continue
			}
			if err != nil {
				return fmt.Errorf("payments: ask Stripe about %s: %w", l.PI, err)
			}
			r.rep.Count("stripe_asked_again", 1)
			add(pi)
		case l.Status == "pending":
			for pi, err := range r.p.Stripe.SearchPaymentIntents(ctx, map[string]string{
				"invoice_id": strconv.FormatInt(l.Invoice, 10), "attempt": strconv.Itoa(l.Attempt)}) {
				if err != nil {
					return fmt.Errorf("payments: search Stripe for invoice %d attempt %d: %w", l.Invoice, l.Attempt, err)
				}
				add(pi)
			}
			r.rep.Count("stripe_searched", 1)
		}
	}
	succeeded := 0
	for _, p := range g.intents {
		if p.Status == "succeeded" {
			succeeded++
		}
	}
	if succeeded < 2 {
		return nil
	}
	g.refunded = map[string]int64{}
	for _, p := range g.intents {
		if p.Status != "succeeded" {
			continue
		}
		for re, err := range r.p.Stripe.ListRefunds(ctx, payment.RefundListParams{PaymentIntent: p.ID}) {
			if err != nil {
				return fmt.Errorf("payments: refunds of %s: %w", p.ID, err)
			}
			if refundTakes(re.Status) {
				g.refunded[p.ID] += re.AmountMinor
			}
		}
	}
	return nil
}

// drift records a balance_drift finding for each currency whose window totals
// differ, and reports the totals.
func (r *paymentsRun) drift(ctx context.Context) error {
	currencies := slices.Sorted(maps.Keys(r.stripeTotal))
	for c := range r.localTotal {
		if _, ok := r.stripeTotal[c]; !ok {
			currencies = append(currencies, c)
		}
	}
	slices.Sort(currencies)
	var findings []Finding
	window := r.je.From.UTC().Format(time.RFC3339) + " .. " + r.je.To.UTC().Format(time.RFC3339)
	for _, c := range currencies {
		s, l := r.stripeTotal[c], r.localTotal[c]
		d := s - l
		fields := append(run.Money("stripe", decimal(s, c), c), run.Str("local", decimal(l, c)), run.Str("drift", decimal(d, c)),
			run.Time("from", r.je.From), run.Time("to", r.je.To))
		r.rep.Act("totals", "payments "+c, fmt.Sprintf("%s: Stripe %s, here %s, drift %s", window, money(s, c), money(l, c), money(d, c)), fields...)
		if d == 0 {
			continue
		}
		// The drift's identity is its currency and the start of the window, never its
		// end: a run with --to now judges up to now minus the grace, so its end moves
		// with every run, while the problem (the totals of this currency's objects
		// from that start on disagree) is the same one, and grows or shrinks as the
		// end moves. So runs over the same start (a --to now run during the day, the
		// nightly run of that day, a re-run of it on a later night) keep one finding
		// that moves its window to the widest one judged and resolves when a run over
		// it finds the totals equal. A currency alone would not do: a rolling finding
		// seen on one night from one window and judged on the next from another
		// could never be resolved by either; each night's window, starting
		// elsewhere, has its own.
		findings = append(findings, Finding{Class: ClassBalanceDrift,
			Fingerprint: Fingerprint(ClassBalanceDrift, c, r.je.From.UTC().Format(time.RFC3339)),
			Amount:      decimal(d, c), Currency: c,
			Detail: fmt.Sprintf("%s %s: Stripe took %s net of refunds, the books here show %s for the same objects: drift %s",
				c, window, money(s, c), money(l, c), money(d, c)),
			Evidence: map[string]any{"stripe_minor": s, "local_minor": l, "drift_minor": d, "from": r.je.From, "to": r.je.To}})
	}
	return r.rec.Add(ctx, findings...)
}

// intentRemote stages a PaymentIntent that carries cronkit's metadata (invoice_id);
// ok is false for one made elsewhere.
func intentRemote(pi payment.PaymentIntent, inWindow bool) (remote, bool) {
	inv, ok := pi.Metadata["invoice_id"]
	if !ok {
		return remote{}, false
	}
	r := remote{Kind: kindIntent, ID: pi.ID, Intent: pi.ID, Customer: pi.Customer, Amount: pi.AmountMinor,
		Received: pi.AmountReceived, Currency: strings.ToUpper(pi.Currency), Status: pi.Status, Code: pi.DeclineCode,
		ErrorCode: pi.ErrorCode, PaymentMethod: pi.PaymentMethod, Created: pi.Created.UTC(), InWindow: inWindow}
	r.Invoice, _ = strconv.ParseInt(inv, 10, 64)
	r.Attempt, _ = strconv.Atoi(pi.Metadata["attempt"])
	r.Account, _ = strconv.ParseInt(pi.Metadata["account_id"], 10, 64)
	return r, true
}

func refundRemote(re payment.Refund, inWindow bool) (remote, bool) {
	inv, ok := re.IntentMetadata["invoice_id"]
	if !ok {
		return remote{}, false
	}
	r := remote{Kind: kindRefund, ID: re.ID, Intent: re.PaymentIntent, Amount: re.AmountMinor,
		Currency: strings.ToUpper(re.Currency), Status: re.Status, Code: re.Reason, Created: re.Created.UTC(), InWindow: inWindow}
	r.Invoice, _ = strconv.ParseInt(inv, 10, 64)
	r.Account, _ = strconv.ParseInt(re.IntentMetadata["account_id"], 10, 64)
	return r, true
}

func disputeRemote(d payment.Dispute, inWindow bool) (remote, bool) {
	inv, ok := d.IntentMetadata["invoice_id"]
	if !ok {
		return remote{}, false
	}
	r := remote{Kind: kindDispute, ID: d.ID, Intent: d.PaymentIntent, Amount: d.AmountMinor,
		Currency: strings.ToUpper(d.Currency), Status: d.Status, Code: d.Reason, Created: d.Created.UTC(), Due: d.EvidenceDueBy,
		InWindow: inWindow}
	r.Invoice, _ = strconv.ParseInt(inv, 10, 64)
	r.Account, _ = strconv.ParseInt(d.IntentMetadata["account_id"], 10, 64)
	return r, true
}
