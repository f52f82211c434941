package reconcile

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

// The states of a finding.
const (
	// StateOpen: the problem reproduces and nobody has looked at it yet; while any
	// finding is open, a run exits 3.
	StateOpen = "open"
	// StateAcknowledged: a person looked at it and said why (cronkit reconcile ack); it
	// is still tracked, and resolves when it no longer reproduces.
	StateAcknowledged = "acknowledged"
	// StateResolved: it no longer reproduced when its window was checked again.
	StateResolved = "resolved"
	// StateFixed: --fix repaired it.
	StateFixed = "fixed"
)

// ActorJob is the actor recorded for what a run does (opening, resolving, fixing);
// a person is "operator:<name>".
const ActorJob = "cronkit"

// ErrNotFound means there is no finding with that id.
var ErrNotFound = errors.New("no such finding")

// ErrState means the finding is not in a state that allows the change (an ack of a
// resolved finding, a second ack).
var ErrState = errors.New("finding is not open")

// Fingerprint is the fingerprint of a finding of class about the given ids (both
// sides' ids, never a time or an amount): the class, then the SHA-256 of the ids,
// so the same problem gets the same fingerprint on every night and on every host.
func Fingerprint(class string, ids ...string) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	return class + ":" + hex.EncodeToString(h.Sum(nil))[:40]
}

// Scope is what one check judged in one run. Record resolves the open and
// acknowledged findings of Classes that the run did not see again although their
// window lies inside [From, To) (or that the check re-judged by id, Rechecked):
// only a window that was checked can say a problem is gone.
type Scope struct {
	// Check names the check ("usage", "payments"), for logs and reports.
	Check string
	// Classes are the classes the check judges; recording another class is an error.
	Classes []string
	// From and To are the window judged (To exclusive, after any grace).
	From, To time.Time
	// Rechecked are ids of findings outside [From, To) that the check judged again
	// (a janitor re-asking about an old finding): unseen, they resolve too.
	Rechecked []int64
	// Rejudges says the check re-judges old findings by id from any window (the
	// payments check): a finding it sees again keeps its own window unless [From, To)
	// covers it. Otherwise a finding seen again takes the run's window.
	Rejudges bool
}

// Summary is what recording one check's findings did (or, in a dry run, would do).
type Summary struct {
	Check string
	// Seen counts the findings the check reported, by class.
	Seen map[string]int64
	// Opened are new findings; Reopened were resolved or fixed and reproduce again;
	// Resolved no longer reproduce.
	Opened, Reopened, Resolved int64
}

// Store keeps findings as tickets in reconcile_findings, every state change audited
// in reconcile_finding_events. A Store serves one run: in a dry run (DryRun) it
// writes nothing and remembers what it would have done, so that Open shows the
// findings as the run would leave them.
type Store struct {
	DB     *sql.DB
	Now    func() time.Time
	DryRun bool

	// The dry run's plan: findings that would open, ids seen again (a dry run writes
	// no last_run_id to tell them by), ids that would reopen or resolve.
	planned   []StoredFinding
	plannedN  int64
	seen      map[int64]bool
	reopening map[int64]bool
	resolving map[int64]bool
}

// maxPlanned bounds the new findings a dry run keeps to show.
const maxPlanned = 1000

// batch is how many findings are written in one transaction.
const batch = 200

func (s *Store) now() time.Time {
	clock := s.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

// Recording is one check's findings being recorded in a run: Add them (in as many
// batches as the check likes), then Finish to resolve what was not seen again.
type Recording struct {
	s     *Store
	scope Scope
	runID string
	sum   Summary
	// buffered are findings given to Emit, not yet written.
	buffered []Finding
}

// Begin starts recording scope's findings. The run id comes from the context
// (run.FromContext): every finding and event names the run that wrote it.
func (s *Store) Begin(ctx context.Context, scope Scope) (*Recording, error) {
	info := run.FromContext(ctx)
	if info.ID == "" {
		return nil, fmt.Errorf("record %s findings: no run id in the context", scope.Check)
	}
	if len(scope.Classes) == 0 || !scope.From.Before(scope.To) {
		return nil, fmt.Errorf("record %s findings: a scope needs classes and a window (from %s to %s)",
			scope.Check, scope.From.Format(time.RFC3339), scope.To.Format(time.RFC3339))
	}
	if s.DryRun && s.seen == nil {
		s.seen, s.reopening, s.resolving = map[int64]bool{}, map[int64]bool{}, map[int64]bool{}
	}
	return &Recording{s: s, scope: scope, runID: info.ID, sum: Summary{Check: scope.Check, Seen: map[string]int64{}}}, nil
}

// Record is Begin, Add and Finish in one call, for a check that holds its findings
// in a slice.
func (s *Store) Record(ctx context.Context, scope Scope, findings []Finding) (Summary, error) {
	r, err := s.Begin(ctx, scope)
	if err != nil {
		return Summary{}, err
	}
	if err := r.Add(ctx, findings...); err != nil {
		return r.sum, err
	}
	return r.Finish(ctx)
}

// Emit records one finding, in batches: the callback a check that streams its
// findings (the usage check's emit) is given. Finish writes what is buffered.
func (r *Recording) Emit(ctx context.Context) func(Finding) error {
	return func(f Finding) error {
		r.buffered = append(r.buffered, f)
		if len(r.buffered) < batch {
			return nil
		}
		return r.flush(ctx)
	}
}

func (r *Recording) flush(ctx context.Context) error {
	if len(r.buffered) == 0 {
		return nil
	}
	err := r.Add(ctx, r.buffered...)
	r.buffered = r.buffered[:0]
	return err
}

// Recheck adds findings outside the scope's window that the check judged again by
// id: Finish resolves them too when this run did not see them.
func (r *Recording) Recheck(ids ...int64) { r.scope.Rechecked = append(r.scope.Rechecked, ids...) }

// Add upserts findings by fingerprint: a new one opens, a known one moves its
// last_seen (and opens again if it was resolved or fixed). A finding without a
// fingerprint gets Fingerprint(class, the ids it carries).
func (r *Recording) Add(ctx context.Context, findings ...Finding) error {
	for len(findings) > 0 {
		n := min(batch, len(findings))
		if err := r.addBatch(ctx, findings[:n]); err != nil {
			return err
		}
		findings = findings[n:]
	}
	return nil
}

// prepared is a finding checked and encoded for writing.
type prepared struct {
	f        Finding
	evidence string
	seen     time.Time
}

func (r *Recording) prepare(f Finding) (prepared, error) {
	if !slices.Contains(r.scope.Classes, f.Class) {
		return prepared{}, fmt.Errorf("record %s findings: class %q is not one the check judges %v", r.scope.Check, f.Class, r.scope.Classes)
	}
	if f.Fingerprint == "" {
		f.Fingerprint = Fingerprint(f.Class, fmt.Sprint(f.AccountID), fmt.Sprint(f.InvoiceID), f.ResourceID, f.PaymentIntent)
	}
	if len(f.Fingerprint) > 128 {
		return prepared{}, fmt.Errorf("record %s findings: fingerprint %q longer than 128 bytes", r.scope.Check, f.Fingerprint)
	}
	ev := f.Evidence
	if ev == nil {
		ev = map[string]any{}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return prepared{}, fmt.Errorf("record finding %s: evidence: %w", f.Fingerprint, err)
	}
	seen := f.Seen
	if seen.IsZero() {
		seen = r.s.now()
	}
	f.Detail = clip(f.Detail, 2000)
	return prepared{f: f, evidence: string(b), seen: seen.UTC()}, nil
}

func (r *Recording) addBatch(ctx context.Context, findings []Finding) error {
	// The last of a fingerprint wins, in the order given.
	byFP := map[string]int{}
	var ps []prepared
	for _, f := range findings {
		p, err := r.prepare(f)
		if err != nil {
			return err
		}
		if i, ok := byFP[p.f.Fingerprint]; ok {
			ps[i] = p
			continue
		}
		byFP[p.f.Fingerprint] = len(ps)
		ps = append(ps, p)
	}
	for _, p := range ps {
		r.sum.Seen[p.f.Class]++
	}
	if r.s.DryRun {
		return r.planBatch(ctx, ps)
	}
	var opened, reopened int64
	err := mysql.InTx(ctx, r.s.DB, nil, func(tx *sql.Tx) error {
		opened, reopened = 0, 0
		known, err := lockByFingerprint(ctx, tx, ps, true)
		if err != nil {
			return err
		}
		for _, p := range ps {
			k, ok := known[p.f.Fingerprint]
			if !ok {
				if err := r.insert(ctx, tx, p); err != nil {
					return err
				}
				opened++
				continue
			}
			reopen := k.state == StateResolved || k.state == StateFixed
			if err := r.update(ctx, tx, k.id, p, reopen); err != nil {
				return err
			}
			if reopen {
				if err := insertEvent(ctx, tx, k.id, k.state, StateOpen, "reopened", ActorJob, r.runID,
					"reproduces again: "+p.f.Detail, nil, p.seen); err != nil {
					return err
				}
				reopened++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record %s findings: %w", r.scope.Check, err)
	}
	r.sum.Opened += opened
	r.sum.Reopened += reopened
	return nil
}

type knownFinding struct {
	id    int64
	state string
}

// lockByFingerprint reads (FOR UPDATE outside a dry run) the findings of ps that
// exist already.
func lockByFingerprint(ctx context.Context, q querier, ps []prepared, lock bool) (map[string]knownFinding, error) {
	args := make([]any, len(ps))
	for i, p := range ps {
		args[i] = p.f.Fingerprint
	}
	query := fmt.Sprintf(sqlFindingsByFingerprint, inList(len(ps)))
	if lock {
		query += " FOR UPDATE"
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	known := map[string]knownFinding{}
	for rows.Next() {
		var k knownFinding
		var fp string
		if err := rows.Scan(&k.id, &k.state, &fp); err != nil {
			return nil, err
		}
		known[fp] = k
	}
	return known, rows.Err()
}

func (r *Recording) insert(ctx context.Context, tx *sql.Tx, p prepared) error {
	f := p.f
	res, err := tx.ExecContext(ctx, sqlInsertFinding, f.Class, f.Fingerprint, nullInt(f.AccountID), nullInt(f.InvoiceID),
		nullStr(f.ResourceID), nullStr(f.PaymentIntent), nullStr(f.Amount), nullStr(f.Currency), f.Detail, p.evidence,
		f.Fixable, p.seen, p.seen, r.runID, r.runID, r.scope.From, r.scope.To, p.seen)
	if err != nil {
		return fmt.Errorf("insert finding %s: %w", f.Fingerprint, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	return insertEvent(ctx, tx, id, "", StateOpen, "opened", ActorJob, r.runID, f.Detail, nil, p.seen)
}

func (r *Recording) update(ctx context.Context, tx *sql.Tx, id int64, p prepared, reopen bool) error {
	f := p.f
	_, err := tx.ExecContext(ctx, sqlSeenAgain, reopen, reopen, p.seen, nullInt(f.AccountID), nullInt(f.InvoiceID),
		nullStr(f.ResourceID), nullStr(f.PaymentIntent), nullStr(f.Amount), nullStr(f.Currency), f.Detail, p.evidence,
		f.Fixable, p.seen, r.runID, !r.scope.Rejudges, r.scope.From, r.scope.To, r.scope.To,
		!r.scope.Rejudges, r.scope.From, r.scope.To, r.scope.From, id)
	if err != nil {
		return fmt.Errorf("update finding %d: %w", id, err)
	}
	return nil
}

// planBatch is addBatch in a dry run: it reads which findings exist and remembers
// what would change.
func (r *Recording) planBatch(ctx context.Context, ps []prepared) error {
	known, err := lockByFingerprint(ctx, r.s.DB, ps, false)
	if err != nil {
		return fmt.Errorf("plan %s findings: %w", r.scope.Check, err)
	}
	s := r.s
	for _, p := range ps {
		k, ok := known[p.f.Fingerprint]
		switch {
		case !ok:
			r.sum.Opened++
			s.plannedN++
			if len(s.planned) < maxPlanned {
				s.planned = append(s.planned, storedFromFinding(p))
			}
			continue
		case k.state == StateResolved || k.state == StateFixed:
			r.sum.Reopened++
			s.reopening[k.id] = true
		}
		s.seen[k.id] = true
		delete(s.resolving, k.id)
	}
	return nil
}

// Finish resolves the open and acknowledged findings of the scope that this run did
// not see again, each with its event, a page at a time.
func (r *Recording) Finish(ctx context.Context) (Summary, error) {
	if err := r.flush(ctx); err != nil {
		return r.sum, err
	}
	classes := make([]any, len(r.scope.Classes))
	for i, c := range r.scope.Classes {
		classes[i] = c
	}
	recheck := ""
	var recheckArgs []any
	if len(r.scope.Rechecked) > 0 {
		recheck = " OR id IN (" + inList(len(r.scope.Rechecked)) + ")"
		for _, id := range r.scope.Rechecked {
			recheckArgs = append(recheckArgs, id)
		}
	}
	query := fmt.Sprintf(sqlUnseenInScope, inList(len(classes)), recheck)
	now := r.s.now()
	var after int64
	for {
		args := append(slices.Clone(classes), r.runID, r.scope.From, r.scope.To)
		args = append(args, recheckArgs...)
		args = append(args, after, batch)
		page, err := unseenPage(ctx, r.s.DB, query, args)
		if err != nil {
			return r.sum, fmt.Errorf("resolve %s findings: %w", r.scope.Check, err)
		}
		if len(page) == 0 {
			return r.sum, nil
		}
		after = page[len(page)-1].id
		if r.s.DryRun {
			for _, k := range page {
				if !r.s.seen[k.id] && !r.s.resolving[k.id] {
					r.s.resolving[k.id] = true
					r.sum.Resolved++
				}
			}
			continue
		}
		var resolved int64
		err = mysql.InTx(ctx, r.s.DB, nil, func(tx *sql.Tx) error {
			resolved = 0
			for _, k := range page {
				var state, lastRun string
				if err := tx.QueryRowContext(ctx, sqlLockFinding, k.id).Scan(&state, &lastRun); err != nil {
					return err
				}
				if (state != StateOpen && state != StateAcknowledged) || lastRun == r.runID {
					continue // changed since the page was read
				}
				if _, err := tx.ExecContext(ctx, sqlResolveFinding, now, now, r.runID, k.id); err != nil {
					return err
				}
				reason := fmt.Sprintf("no longer reproduces: %s checked %s .. %s", r.scope.Check,
					r.scope.From.UTC().Format(time.RFC3339), r.scope.To.UTC().Format(time.RFC3339))
				if err := insertEvent(ctx, tx, k.id, state, StateResolved, "resolved", ActorJob, r.runID, reason, nil, now); err != nil {
					return err
				}
				resolved++
			}
			return nil
		})
		if err != nil {
			return r.sum, fmt.Errorf("resolve %s findings: %w", r.scope.Check, err)
		}
		r.sum.Resolved += resolved
	}
}

func unseenPage(ctx context.Context, q querier, query string, args []any) ([]knownFinding, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []knownFinding
	for rows.Next() {
		var k knownFinding
		if err := rows.Scan(&k.id, &k.state); err != nil {
			return nil, err
		}
		page = append(page, k)
	}
	return page, rows.Err()
}

// OpenWindows returns the distinct windows of the open findings of classes whose
// window starts at or after since, oldest first, at most limit of them: the windows
// a run judges again so that a problem cured since its night (late usage collected)
// resolves instead of staying open for ever.
func (s *Store) OpenWindows(ctx context.Context, classes []string, since time.Time, limit int) ([]Window, error) {
	if len(classes) == 0 || limit <= 0 {
		return nil, nil
	}
	args := make([]any, 0, len(classes)+2)
	for _, c := range classes {
		args = append(args, c)
	}
	args = append(args, since.UTC(), limit)
	rows, err := s.DB.QueryContext(ctx, fmt.Sprintf(sqlOpenWindows, inList(len(classes))), args...)
	if err != nil {
		return nil, fmt.Errorf("windows of open findings: %w", err)
	}
	defer rows.Close()
	var out []Window
	for rows.Next() {
		var w Window
		if err := rows.Scan(&w.From, &w.To); err != nil {
			return nil, fmt.Errorf("windows of open findings: %w", err)
		}
		out = append(out, Window{From: w.From.UTC(), To: w.To.UTC()})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("windows of open findings: %w", err)
	}
	return out, nil
}

// FindingIDs returns the ids of the findings with the given fingerprints (those that
// exist), for a repair to name what it fixed.
func (s *Store) FindingIDs(ctx context.Context, fingerprints []string) (map[string]int64, error) {
	out := map[string]int64{}
	for len(fingerprints) > 0 {
		n := min(batch, len(fingerprints))
		ps := make([]prepared, n)
		for i, fp := range fingerprints[:n] {
			ps[i].f.Fingerprint = fp
		}
		known, err := lockByFingerprint(ctx, s.DB, ps, false)
		if err != nil {
			return nil, fmt.Errorf("finding ids: %w", err)
		}
		for fp, k := range known {
			out[fp] = k.id
		}
		fingerprints = fingerprints[n:]
	}
	return out, nil
}

// Acknowledge records that a person looked at an open finding, and why. It is not a
// run: the event names the actor and no run id.
func (s *Store) Acknowledge(ctx context.Context, id int64, actor, reason string) (StoredFinding, error) {
	if strings.TrimSpace(actor) == "" || strings.TrimSpace(reason) == "" {
		return StoredFinding{}, fmt.Errorf("acknowledge finding %d: an actor and a reason are required", id)
	}
	now := s.now()
	err := mysql.InTx(ctx, s.DB, nil, func(tx *sql.Tx) error {
		var state, lastRun string
		err := tx.QueryRowContext(ctx, sqlLockFinding, id).Scan(&state, &lastRun)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %d", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		if state != StateOpen {
			return fmt.Errorf("%w: finding %d is %s", ErrState, id, state)
		}
		if _, err := tx.ExecContext(ctx, sqlAcknowledgeFinding, now, actor, now, clip(reason, 2000), id); err != nil {
			return err
		}
		return insertEvent(ctx, tx, id, state, StateAcknowledged, "acknowledged", actor, "", clip(reason, 2000), nil, now)
	})
	if err != nil {
		return StoredFinding{}, fmt.Errorf("acknowledge finding %d: %w", id, err)
	}
	return s.Get(ctx, id)
}

// MarkFixed records, inside the fix's own transaction tx, that --fix repaired the
// open or acknowledged finding id: the repair and the finding's state commit
// together, so a crash leaves both or neither. detail (JSON) says what changed. It
// returns false, changing nothing, when the finding is no longer open.
func (s *Store) MarkFixed(ctx context.Context, tx *sql.Tx, id int64, runID, reason string, detail any) (bool, error) {
	var state, lastRun string
	if err := tx.QueryRowContext(ctx, sqlLockFinding, id).Scan(&state, &lastRun); err != nil {
		return false, fmt.Errorf("mark finding %d fixed: %w", id, err)
	}
	if state != StateOpen && state != StateAcknowledged {
		return false, nil
	}
	now := s.now()
	if _, err := tx.ExecContext(ctx, sqlFixFinding, now, ActorJob, now, runID, clip(reason, 2000), id); err != nil {
		return false, fmt.Errorf("mark finding %d fixed: %w", id, err)
	}
	if err := insertEvent(ctx, tx, id, state, StateFixed, "fixed", ActorJob, runID, clip(reason, 2000), detail, now); err != nil {
		return false, fmt.Errorf("mark finding %d fixed: %w", id, err)
	}
	return true, nil
}

func insertEvent(ctx context.Context, tx *sql.Tx, id int64, from, to, event, actor, runID, reason string, detail any, at time.Time) error {
	var d sql.NullString
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("event of finding %d: %w", id, err)
		}
		d = sql.NullString{String: string(b), Valid: true}
	}
	if _, err := tx.ExecContext(ctx, sqlInsertEvent, id, nullStr(from), to, event, actor, nullStr(runID), clip(reason, 2000), d, at); err != nil {
		return fmt.Errorf("event of finding %d: %w", id, err)
	}
	return nil
}

// querier is what reads need of *sql.DB and *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func nullInt(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: v != 0} }

func nullStr(v string) sql.NullString { return sql.NullString{String: v, Valid: v != ""} }

// clip shortens s to at most n bytes without cutting a character in two.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Filter narrows a listing of findings.
type Filter struct {
	State string // "" for any
	Class string // "" for any
}

// List streams the findings that match f, oldest first.
func (s *Store) List(ctx context.Context, f Filter) iter.Seq2[StoredFinding, error] {
	return func(yield func(StoredFinding, error) bool) {
		var after int64
		for {
			page, err := s.listPage(ctx, f, after)
			if err != nil {
				yield(StoredFinding{}, fmt.Errorf("list findings: %w", err))
				return
			}
			for _, sf := range page {
				if !yield(sf, nil) {
					return
				}
			}
			if len(page) < batch {
				return
			}
			after = page[len(page)-1].ID
		}
	}
}

func (s *Store) listPage(ctx context.Context, f Filter, after int64) ([]StoredFinding, error) {
	rows, err := s.DB.QueryContext(ctx, sqlListFindings, f.State, f.State, f.Class, f.Class, after, batch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []StoredFinding
	for rows.Next() {
		sf, err := scanFinding(rows)
		if err != nil {
			return nil, err
		}
		page = append(page, sf)
	}
	return page, rows.Err()
}

// Get reads one finding and its events.
func (s *Store) Get(ctx context.Context, id int64) (StoredFinding, error) {
	sf, err := scanFinding(s.DB.QueryRowContext(ctx, sqlFindingByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return StoredFinding{}, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if err != nil {
		return StoredFinding{}, fmt.Errorf("finding %d: %w", id, err)
	}
	rows, err := s.DB.QueryContext(ctx, sqlFindingEvents, id)
	if err != nil {
		return sf, fmt.Errorf("finding %d events: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e Event
		var from sql.NullString
		if err := rows.Scan(&from, &e.To, &e.Event, &e.Actor, &e.RunID, &e.Reason, &e.At); err != nil {
			return sf, fmt.Errorf("finding %d events: %w", id, err)
		}
		e.From, e.At = from.String, e.At.UTC()
		sf.Events = append(sf.Events, e)
	}
	return sf, rows.Err()
}

// Open streams the open findings as the run leaves them: in a dry run, those in the
// database that would not resolve, those that would reopen, and the new ones it
// would open (up to a bound; see PlannedOpen for their number).
func (s *Store) Open(ctx context.Context) iter.Seq2[StoredFinding, error] {
	return func(yield func(StoredFinding, error) bool) {
		if s.DryRun {
			for sf, err := range s.List(ctx, Filter{}) {
				if err != nil {
					yield(sf, err)
					return
				}
				switch {
				case sf.State == StateOpen && s.resolving[sf.ID]:
					continue
				case (sf.State == StateResolved || sf.State == StateFixed) && s.reopening[sf.ID]:
					sf.State = StateOpen
				case sf.State != StateOpen:
					continue
				}
				if !yield(sf, nil) {
					return
				}
			}
			for _, sf := range s.planned {
				if !yield(sf, nil) {
					return
				}
			}
			return
		}
		for sf, err := range s.List(ctx, Filter{State: StateOpen}) {
			if !yield(sf, err) || err != nil {
				return
			}
		}
	}
}

// PlannedOpen is how many new findings a dry run would open (Open shows at most
// 1000 of them).
func (s *Store) PlannedOpen() int64 { return s.plannedN }

type scanner interface{ Scan(dest ...any) error }

func scanFinding(row scanner) (StoredFinding, error) {
	var sf StoredFinding
	var ackAt, fixedAt, resolvedAt sql.NullTime
	err := row.Scan(&sf.ID, &sf.Class, &sf.Fingerprint, &sf.State, &sf.AccountID, &sf.InvoiceID, &sf.ResourceID,
		&sf.PaymentIntent, &sf.Amount, &sf.Currency, &sf.Detail, &sf.Fixable, &sf.FirstSeen, &sf.LastSeen,
		&sf.WindowFrom, &sf.WindowTo, &sf.AcknowledgedBy, &sf.AckReason, &ackAt, &sf.FixedBy, &sf.FixReason,
		&fixedAt, &resolvedAt)
	if err != nil {
		return sf, err
	}
	sf.FirstSeen, sf.LastSeen = sf.FirstSeen.UTC(), sf.LastSeen.UTC()
	sf.WindowFrom, sf.WindowTo = sf.WindowFrom.UTC(), sf.WindowTo.UTC()
	sf.AcknowledgedAt, sf.FixedAt, sf.ResolvedAt = utcTime(ackAt), utcTime(fixedAt), utcTime(resolvedAt)
	return sf, nil
}

func utcTime(t sql.NullTime) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

func storedFromFinding(p prepared) StoredFinding {
	f := p.f
	return StoredFinding{Class: f.Class, Fingerprint: f.Fingerprint, State: StateOpen, AccountID: f.AccountID,
		InvoiceID: f.InvoiceID, ResourceID: f.ResourceID, PaymentIntent: f.PaymentIntent, Amount: f.Amount,
		Currency: f.Currency, Detail: f.Detail, Fixable: f.Fixable, FirstSeen: p.seen, LastSeen: p.seen}
}
