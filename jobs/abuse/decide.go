package abuse

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/cases"
)

// Case is a persisted case as decisions and operators see it: lib/cases keeps it.
// PendingActions counts side effects (orchestrator calls, notices) of the case's
// transitions not confirmed yet: a case never advances past a step whose side effects
// are pending.
type Case = cases.Case

// Decision is what a decision function returns: the event to fire (none: ""), the
// reason in words and the evidence it rests on, recorded with the transition.
type Decision = cases.Decision

// UnpaidInvoice is an open invoice with amount_paid_minor < total_minor. One with a
// partial payment (0 < paid < total) is still unpaid and keeps the dunning clock; a
// payment that completes the oldest moves the clock to the next oldest.
type UnpaidInvoice struct {
	ID         int64     `json:"id"`
	Currency   string    `json:"currency"`
	TotalMinor int64     `json:"total_minor"`
	PaidMinor  int64     `json:"paid_minor"`
	DueAt      time.Time `json:"due_at"`
	// Retrying: billing still has a card retry scheduled (collection 'retrying'), or
	// an attempt of the invoice is still pending (its outcome unknown until billing or
	// cronkit reconcile settles it: the customer may have paid).
	Retrying bool `json:"retrying"`
}

// DunningFacts is everything the dunning decision reads about an account.
type DunningFacts struct {
	AccountID int64
	Email     string
	Name      string
	// TimeZone is the account's IANA zone: days are counted in it.
	TimeZone            string
	Tags                []string
	CloudStackAccountID string
	// AccountStatus is accounts.status: a terminated account gets no new case.
	AccountStatus string
	// Unpaid is ordered by due date, oldest first.
	Unpaid []UnpaidInvoice
}

// DunningEvidence is recorded with every dunning transition.
type DunningEvidence struct {
	Level          string            `json:"level"`
	DaysLate       int               `json:"days_late"`
	OldestInvoice  int64             `json:"oldest_invoice,omitempty"`
	OldestDueAt    *time.Time        `json:"oldest_due_at,omitempty"`
	TimeZone       string            `json:"time_zone"`
	UnpaidInvoices int               `json:"unpaid_invoices"`
	Unpaid         map[string]string `json:"unpaid,omitempty"`
	PartlyPaid     []int64           `json:"partly_paid,omitempty"`
	Retrying       bool              `json:"retrying"`
	ExcludedBy     string            `json:"excluded_by,omitempty"`
}

// Dunning levels, in order: an account is at the highest level whose conditions and
// those of every level below hold.
const (
	levelNone = iota
	levelReminder
	levelWarning
	levelSuspension
	levelTermination
)

var levelNames = []string{"none", "reminder", "warning", "suspension", "termination"}

// holdLevel is the level a case in state needs to stay open: below it the case
// resolves (payment). Reminded and warned cases stay while anything is overdue; a
// suspension is lifted as soon as the account is no longer at suspension level.
func holdLevel(state string) int {
	switch state {
	case StateReminded, StateWarned:
		return levelReminder
	case StateSuspended, StateTerminationProposed, StateTerminationApproved:
		return levelSuspension
	}
	return levelNone
}

// location returns the account's zone, UTC when unknown.
func location(name string) *time.Location {
	if name == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC
	}
	return loc
}

// DaysLate counts the calendar days, in loc, from due to now: the largest n with
// due + n days (same wall-clock time in loc) <= now. Across a DST change a day is 23
// or 25 hours long. It is -1 before due.
func DaysLate(due, now time.Time, loc *time.Location) int {
	if now.Before(due) {
		return -1
	}
	d := due.In(loc)
	n := int(now.Sub(due) / (24 * time.Hour))
	for n > 0 && d.AddDate(0, 0, n).After(now) {
		n--
	}
	for !d.AddDate(0, 0, n+1).After(now) {
		n++
	}
	return n
}

// dunningView is the derived facts of an account: the clock and the balance.
type dunningView struct {
	days     int
	oldest   *UnpaidInvoice
	count    int
	balances map[string]int64
	retrying bool
	loc      *time.Location
}

func viewDunning(f DunningFacts, now time.Time) dunningView {
	v := dunningView{days: -1, balances: map[string]int64{}, loc: location(f.TimeZone)}
	for i := range f.Unpaid {
		inv := &f.Unpaid[i]
		if inv.TotalMinor <= inv.PaidMinor {
			continue
		}
		v.count++
		v.balances[inv.Currency] += inv.TotalMinor - inv.PaidMinor
		v.retrying = v.retrying || inv.Retrying
		if v.oldest == nil || inv.DueAt.Before(v.oldest.DueAt) || (inv.DueAt.Equal(v.oldest.DueAt) && inv.ID < v.oldest.ID) {
			v.oldest = inv
		}
	}
	if v.oldest != nil {
		v.days = DaysLate(v.oldest.DueAt, now, v.loc)
	}
	return v
}

// met reports whether the account meets one level's conditions.
func (v dunningView) met(l Level) bool {
	if v.oldest == nil || v.days < l.AfterDays || v.count < l.MinUnpaidInvoices {
		return false
	}
	if l.WaitWhileRetrying && v.retrying {
		return false
	}
	for cur, bal := range v.balances {
		if bal > 0 && bal >= l.threshold(cur) {
			return true
		}
	}
	return false
}

func (v dunningView) level(p DunningPolicy) int {
	lvl := levelNone
	for i, l := range []Level{p.Reminder, p.Warning, p.Suspension, p.Termination} {
		if !v.met(l) {
			break
		}
		lvl = i + 1
	}
	return lvl
}

// amountText is the unpaid balance, "EUR 12.50" (currencies joined with " + ").
func (v dunningView) amountText() string {
	curs := make([]string, 0, len(v.balances))
	for c := range v.balances {
		curs = append(curs, c)
	}
	sort.Strings(curs)
	amounts := make([]string, len(curs))
	for i, c := range curs {
		amounts[i] = formatMinor(v.balances[c], c)
	}
	return strings.Join(amounts, " + ")
}

func (v dunningView) unpaidText() string {
	if v.count == 0 {
		return "nothing unpaid"
	}
	s := fmt.Sprintf("invoice %d due %s is %d days overdue; unpaid %s in %d invoice%s",
		v.oldest.ID, v.oldest.DueAt.In(v.loc).Format("2006-01-02 15:04 MST"), max(v.days, 0),
		v.amountText(), v.count, plural(v.count))
	if v.retrying {
		s += "; billing still retrying the card"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (v dunningView) evidence(f DunningFacts, lvl int, excludedBy string) DunningEvidence {
	e := DunningEvidence{Level: levelNames[lvl], DaysLate: v.days, TimeZone: v.loc.String(),
		UnpaidInvoices: v.count, Retrying: v.retrying, ExcludedBy: excludedBy}
	if v.oldest != nil {
		e.OldestInvoice = v.oldest.ID
		due := v.oldest.DueAt.UTC()
		e.OldestDueAt = &due
	}
	if len(v.balances) > 0 {
		e.Unpaid = map[string]string{}
		for c, b := range v.balances {
			e.Unpaid[c] = strings.TrimPrefix(formatMinor(b, c), c+" ")
		}
	}
	for _, inv := range f.Unpaid {
		if inv.PaidMinor > 0 && inv.PaidMinor < inv.TotalMinor {
			e.PartlyPaid = append(e.PartlyPaid, inv.ID)
		}
	}
	return e
}

// excludedBy returns the first of the account's tags the policy excludes on.
func excludedBy(tags, exclude []string) string {
	for _, t := range exclude {
		if slices.Contains(tags, t) {
			return t
		}
	}
	return ""
}

// DecideDunning is the late-payment decision: a pure function of the case (nil: none
// open), the facts, the instant and the policy, returning the event to fire.
//
//   - An exclusion tag closes an open case (exclude) and keeps new ones from opening.
//   - Below the level a case holds (payment, a partial payment that re-anchors the
//     clock, a void), the case resolves; a suspension is lifted.
//   - Otherwise the case climbs one step at a time: reminder, warning, then suspension
//     once the warning is min_notice old; an account first seen past the warning
//     level is warned, never suspended on the spot.
//   - Termination is proposed at its level once the suspension is confirmed, and
//     carried out only after a person approved it and the retention period passed.
func DecideDunning(c *Case, f DunningFacts, now time.Time, p DunningPolicy) Decision {
	v := viewDunning(f, now)
	lvl := v.level(p)
	tag := excludedBy(f.Tags, p.ExcludeTags)
	d := Decision{Evidence: v.evidence(f, lvl, tag)}
	state := StateGood
	if c != nil {
		state = c.State
	}
	if tag != "" {
		if c != nil && IsOpen(Dunning, state) {
			d.Event, d.Reason = EventExclude, fmt.Sprintf("account tagged %s", tag)
		} else {
			d.Reason = fmt.Sprintf("account tagged %s: never dunned", tag)
		}
		return d
	}
	if c != nil && !IsOpen(Dunning, state) {
		d.Reason = "case closed"
		return d
	}
	if c == nil && f.AccountStatus == "terminated" {
		d.Reason = "account terminated"
		return d
	}
	if state != StateGood && lvl < holdLevel(state) {
		d.Event = EventResolve
		if v.count == 0 {
			d.Reason = "paid: nothing unpaid"
		} else {
			d.Reason = fmt.Sprintf("below %s level: %s", levelNames[holdLevel(state)], v.unpaidText())
		}
		return d
	}
	facts := v.unpaidText()
	switch state {
	case StateGood:
		switch {
		case lvl >= levelWarning:
			d.Event, d.Reason = EventWarn, facts
			if lvl > levelWarning {
				d.Reason += fmt.Sprintf(" (%s level, but a warning comes first)", levelNames[lvl])
			}
		case lvl == levelReminder:
			d.Event, d.Reason = EventRemind, facts
		default:
			d.Reason = "not overdue enough: " + facts
		}
	case StateReminded:
		if lvl >= levelWarning {
			d.Event, d.Reason = EventWarn, facts
		}
	case StateWarned:
		if lvl >= levelSuspension {
			notice := c.StateSince.Add(p.MinNotice.Duration)
			if now.Before(notice) {
				d.Reason = fmt.Sprintf("suspension due, but the warning's notice runs until %s: %s",
					notice.UTC().Format(time.RFC3339), facts)
				break
			}
			d.Event = EventSuspend
			d.Reason = fmt.Sprintf("%s; warned %s", facts, c.StateSince.UTC().Format(time.RFC3339))
		}
	case StateSuspended:
		if lvl >= levelTermination {
			if c.PendingActions > 0 {
				d.Reason = "termination level, but the suspension is not confirmed yet"
				break
			}
			d.Event = EventProposeTermination
			d.Reason = facts + "; a person must approve termination (cronkit abuse approve)"
		}
	case StateTerminationProposed:
		d.Reason = "waiting for a person to approve termination"
	case StateTerminationApproved:
		d.Event, d.Reason = terminateAfterRetention(c, now, p.Retention.Duration, facts)
	}
	return d
}

// terminateAfterRetention decides a termination a person approved: only once the
// retention period has passed and the suspension is confirmed.
func terminateAfterRetention(c *Case, now time.Time, retention time.Duration, facts string) (string, string) {
	if c.ApprovedAt == nil {
		return "", "approval missing"
	}
	at := c.ApprovedAt.Add(retention)
	if now.Before(at) {
		return "", fmt.Sprintf("approved by %s; retention runs until %s", c.ApprovedBy, at.UTC().Format(time.RFC3339))
	}
	if c.PendingActions > 0 {
		return "", "retention over, but earlier actions are not confirmed yet"
	}
	return EventTerminate, fmt.Sprintf("approved by %s at %s, retention of %s over; %s",
		c.ApprovedBy, c.ApprovedAt.UTC().Format(time.RFC3339), Duration{retention}, facts)
}

// VMFact is one of the account's VMs as the orchestrator reported it this run.
type VMFact struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	Created    time.Time `json:"created"`
	CPUPercent float64   `json:"cpu_percent"`
}

// CPUSample is one reading of an account's running VMs: how many, and how many at or
// above the policy's hot_percent.
type CPUSample struct {
	At      time.Time `json:"at"`
	Running int       `json:"running"`
	Hot     int       `json:"hot"`
	AvgCPU  float64   `json:"avg_cpu"`
}

// FreeCreditFacts is everything the free-credit decision reads about an account.
type FreeCreditFacts struct {
	AccountID             int64
	Email                 string
	Name                  string
	CreatedAt             time.Time
	SignupIP              string
	PaymentMethodVerified bool
	// HasFreeCredit: an unexpired credit grant.
	HasFreeCredit       bool
	Tags                []string
	CloudStackAccountID string
	// VMs are this run's reading of the orchestrator.
	VMs []VMFact
	// CPUSamples are the recent readings, oldest first, this run's included.
	CPUSamples []CPUSample
	// IPSignupsTotal counts the other accounts that signed up from SignupIP within
	// the policy's window around CreatedAt; IPSignups lists up to ten of them.
	IPSignupsTotal int
	IPSignups      []int64
	// DisposableDomain is the listed domain the email matched ("" if none).
	DisposableDomain string
}

// Signal is one free-credit signal: whether it fired, its weight, and the facts.
type Signal struct {
	Name   string `json:"name"`
	Fired  bool   `json:"fired"`
	Weight int    `json:"weight"`
	Detail string `json:"detail"`
}

// FreeCreditEvidence is recorded with every free-credit transition.
type FreeCreditEvidence struct {
	Score                 int      `json:"score"`
	OpenScore             int      `json:"open_score"`
	Signals               []Signal `json:"signals"`
	PaymentMethodVerified bool     `json:"payment_method_verified"`
	FreeCredit            bool     `json:"free_credit"`
	ExcludedBy            string   `json:"excluded_by,omitempty"`
}

// sampleIsHot: most running VMs (hot_share of them) are near 100 %.
func sampleIsHot(s CPUSample, p CPUSignal) bool {
	return s.Running > 0 && float64(s.Hot) >= p.HotShare*float64(s.Running)-1e-9
}

// CPUSustained is the CPU signal: the streak of hot samples ending at the latest one
// (itself no older than max_gap), with no gap longer than max_gap, must hold at least
// min_samples samples and span at least sustained.
func CPUSustained(samples []CPUSample, now time.Time, p CPUSignal) Signal {
	s := Signal{Name: "cpu", Weight: p.Weight}
	sorted := slices.Clone(samples)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].At.Before(sorted[j].At) })
	n := 0
	var start, next time.Time
	for i := len(sorted) - 1; i >= 0; i-- {
		x := sorted[i]
		if x.At.After(now) {
			continue
		}
		if !sampleIsHot(x, p) {
			break
		}
		if n == 0 && now.Sub(x.At) > p.MaxGap.Duration {
			break
		}
		if n > 0 && next.Sub(x.At) > p.MaxGap.Duration {
			break
		}
		start, next = x.At, x.At
		n++
	}
	if n == 0 {
		last := "no samples"
		if len(sorted) > 0 {
			x := sorted[len(sorted)-1]
			last = fmt.Sprintf("latest sample %d of %d running VMs >= %g%% CPU", x.Hot, x.Running, p.HotPercent)
		}
		s.Detail = "not hot: " + last
		return s
	}
	span := now.Sub(start)
	s.Fired = n >= p.MinSamples && span >= p.Sustained.Duration
	latest := sorted[len(sorted)-1]
	s.Detail = fmt.Sprintf("%d of %d running VMs >= %g%% CPU; hot in %d samples over %s (need %d over %s)",
		latest.Hot, latest.Running, p.HotPercent, n, shortDuration(span.Round(time.Minute)), p.MinSamples, p.Sustained)
	return s
}

// FastInstances is the "many instances soon after signup" signal.
func FastInstances(vms []VMFact, signup time.Time, p CountSignal) Signal {
	s := Signal{Name: "fast_instances", Weight: p.Weight}
	n := 0
	for _, vm := range vms {
		if !vm.Created.IsZero() && vm.Created.Before(signup.Add(p.Within.Duration)) {
			n++
		}
	}
	s.Fired = n >= p.Count
	s.Detail = fmt.Sprintf("%d instances within %s of signup (threshold %d)", n, p.Within, p.Count)
	return s
}

// DisposableEmailSignal fires when the email's domain is on the disposable list.
func DisposableEmailSignal(matched string, p DisposableEmail) Signal {
	s := Signal{Name: "disposable_email", Weight: p.Weight, Fired: matched != ""}
	if s.Fired {
		s.Detail = "email domain on the disposable list: " + matched
	} else {
		s.Detail = "email domain not on the disposable list"
	}
	return s
}

// IPVelocity is the "several signups from one IP" signal; the account itself counts.
func IPVelocity(ip string, others int, sample []int64, p CountSignal) Signal {
	s := Signal{Name: "ip_velocity", Weight: p.Weight}
	if ip == "" {
		s.Detail = "no signup IP recorded"
		return s
	}
	n := 1 + others
	s.Fired = n >= p.Count
	ids := make([]string, len(sample))
	for i, id := range sample {
		ids[i] = fmt.Sprint(id)
	}
	s.Detail = fmt.Sprintf("%d signups from %s within %s (threshold %d)", n, ip, p.Within, p.Count)
	if len(ids) > 0 {
		s.Detail += "; other accounts " + strings.Join(ids, ", ")
		if others > len(sample) {
			s.Detail += ", ..."
		}
	}
	return s
}

// Score adds the weights of the signals that fire. Signals of weight 0 are off.
func Score(f FreeCreditFacts, now time.Time, p FreeCreditPolicy) (int, []Signal) {
	var sigs []Signal
	if p.CPU.Weight > 0 {
		sigs = append(sigs, CPUSustained(f.CPUSamples, now, p.CPU))
	}
	if p.FastInstances.Weight > 0 {
		sigs = append(sigs, FastInstances(f.VMs, f.CreatedAt, p.FastInstances))
	}
	if p.DisposableEmail.Weight > 0 {
		sigs = append(sigs, DisposableEmailSignal(f.DisposableDomain, p.DisposableEmail))
	}
	if p.IPVelocity.Weight > 0 {
		sigs = append(sigs, IPVelocity(f.SignupIP, f.IPSignupsTotal, f.IPSignups, p.IPVelocity))
	}
	score := 0
	for _, s := range sigs {
		if s.Fired {
			score += s.Weight
		}
	}
	return score, sigs
}

// DecideFreeCredit is the free-credit abuse decision, pure like DecideDunning:
//
//   - An account with no open case, on free credit without a verified payment method,
//     is flagged when its score reaches open_score;
//   - a flagged case is suspended at once (VMs stopped, account disabled);
//   - a suspended case waits for a person: clear (re-enable) or confirm;
//   - a confirmed case is terminated once the retention period has passed;
//   - an exclusion tag closes an open case (cleared) and keeps new ones from opening.
func DecideFreeCredit(c *Case, f FreeCreditFacts, now time.Time, p FreeCreditPolicy) Decision {
	score, sigs := Score(f, now, p)
	tag := excludedBy(f.Tags, p.ExcludeTags)
	ev := FreeCreditEvidence{Score: score, OpenScore: p.OpenScore, Signals: sigs,
		PaymentMethodVerified: f.PaymentMethodVerified, FreeCredit: f.HasFreeCredit, ExcludedBy: tag}
	d := Decision{Evidence: ev}
	state := StateGood
	if c != nil {
		state = c.State
	}
	if c != nil && !IsOpen(FreeCredit, state) {
		d.Reason = "case closed"
		return d
	}
	if tag != "" {
		if c != nil {
			d.Event, d.Reason = EventExclude, fmt.Sprintf("account tagged %s", tag)
		} else {
			d.Reason = fmt.Sprintf("account tagged %s: never flagged", tag)
		}
		return d
	}
	switch state {
	case StateGood:
		switch {
		case f.PaymentMethodVerified:
			d.Reason = "payment method verified"
		case !f.HasFreeCredit:
			d.Reason = "no free credit"
		case score >= p.OpenScore:
			d.Event = EventFlag
			d.Reason = fmt.Sprintf("score %d >= %d: %s", score, p.OpenScore, firedText(sigs))
		default:
			d.Reason = fmt.Sprintf("score %d < %d", score, p.OpenScore)
		}
	case StateFlagged:
		d.Event, d.Reason = EventSuspend, "flagged: suspended at once, pending review (cronkit abuse clear|confirm)"
	case StateSuspended:
		d.Reason = "waiting for a person to clear or confirm"
	case StateConfirmed:
		d.Event, d.Reason = terminateAfterRetention(c, now, p.Retention.Duration, fmt.Sprintf("score %d", score))
	}
	return d
}

func firedText(sigs []Signal) string {
	var parts []string
	for _, s := range sigs {
		if s.Fired {
			parts = append(parts, fmt.Sprintf("%s (+%d: %s)", s.Name, s.Weight, s.Detail))
		}
	}
	return strings.Join(parts, "; ")
}
