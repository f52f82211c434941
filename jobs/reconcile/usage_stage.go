package reconcile

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

// The two sides of the usage check as sorted streams: the orchestrator's, staged
// into a TEMPORARY table on the run's own connection and read back in key order,
// and the metering side, read (and sorted by the database) on another connection
// while the first is staged.

// usageRun is one Run.
type usageRun struct {
	u                *UsageCheck
	emit             func(Finding) error
	now, from, to    time.Time
	settle           time.Duration
	tolerance        time.Duration
	lookback         time.Duration
	batch            int
	stats            UsageStats
	judgedTo         time.Time
	spanFrom, spanTo time.Time

	// suspended are the accounts cronkit holds suspended or terminated, by their
	// CloudStack account id.
	suspended map[string]*suspendedAccount
	// owners caches our account ids of CloudStack accounts, for findings.
	owners map[string]int64

	// Reused per resource by the merge.
	covered  []bool
	segs     []segment
	evs      []timedEvent
	events   []timedEvent
	rows     []meterRow
	ownerBuf []string
}

// suspendedAccount is an account cronkit suspended or terminated, and what CloudStack
// says of it.
type suspendedAccount struct {
	id                 int64
	status, csID       string
	caseID             int64
	machine, caseState string
	stateSince         sql.NullTime
	csState            string // empty: CloudStack has no such account
	running            int64
	runningVMs         []string
}

// maxEvidence caps the lists a finding's evidence carries.
const maxEvidence = 20

// orchRow is a staged row: an inventory row (event false) or an event.
type orchRow struct {
	kind  resourceKind
	event bool
	at    time.Time
	what  string // inventory state, or event type
	cs    string // CloudStack account id of the owner
}

// meterRow is a metering row: a raw record, or a usage_records row (usageType 0).
type meterRow struct {
	resource   string
	usageType  int
	start, end time.Time // end exclusive
	raw        string    // rawusage (hours), or a usage_records quantity
	cs         string    // CloudStack account id
	account    int64     // our account id (0: unknown)
	status     string    // collected, pending, ignored, usage_record
	product    string
}

// billable reports a row billing charges, or will once its problem is fixed.
func (m meterRow) billable() bool { return m.status != "ignored" }

func (r *usageRun) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := r.loadSuspended(ctx); err != nil {
		return err
	}
	if err := r.loadCoverage(ctx); err != nil {
		return err
	}
	sink, err := r.openStage(ctx)
	if err != nil {
		return err
	}
	// Cancel first: a cursor closed half-read is then dropped, not drained.
	defer func() {
		cancel()
		sink.close()
	}()
	meter := r.readMetering(ctx)
	defer meter.stop()
	if err := r.stage(ctx, sink); err != nil {
		return err
	}
	if err := sink.finish(ctx); err != nil {
		return err
	}
	src, err := sink.source(ctx)
	if err != nil {
		return err
	}
	if err := r.merge(ctx, src, meter); err != nil {
		return err
	}
	return r.checkSuspended(ctx)
}

// loadCoverage sets how far running_not_metered judges: the window's end, no later
// than Settle before now, nor than collect's coverage and last complete read.
func (r *usageRun) loadCoverage(ctx context.Context) error {
	r.judgedTo = r.to
	if t := r.now.Add(-r.settle).Truncate(time.Hour); t.Before(r.judgedTo) {
		r.judgedTo = t
	}
	var coverage, readTo sql.NullTime
	err := r.u.DB.QueryRowContext(ctx, selectCollectCoverageSQL).Scan(&coverage, &readTo)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("usage check: read collect's coverage: %w", err)
	}
	for _, t := range []sql.NullTime{coverage, readTo} {
		if t.Valid && t.Time.UTC().Truncate(time.Hour).Before(r.judgedTo) {
			r.judgedTo = t.Time.UTC().Truncate(time.Hour)
		}
	}
	if r.judgedTo.Before(r.from) {
		r.judgedTo = r.from
	}
	r.stats.JudgedTo = r.judgedTo
	return nil
}

func (r *usageRun) loadSuspended(ctx context.Context) error {
	r.suspended = map[string]*suspendedAccount{}
	rows, err := r.u.DB.QueryContext(ctx, selectSuspendedSQL)
	if err != nil {
		return fmt.Errorf("usage check: read suspended accounts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		a := &suspendedAccount{}
		if err := rows.Scan(&a.id, &a.status, &a.csID, &a.caseID, &a.machine, &a.caseState, &a.stateSince); err != nil {
			return fmt.Errorf("usage check: read suspended accounts: %w", err)
		}
		if _, dup := r.suspended[a.csID]; !dup { // several claiming one: the lowest id
			r.suspended[a.csID] = a
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("usage check: read suspended accounts: %w", err)
	}
	return nil
}

// stageSink is where the orchestrator's side is staged: the database's TEMPORARY
// table, or temporary files when the session may not create one.
type stageSink interface {
	add(ctx context.Context, r stagedRow) error
	// finish writes what is still buffered.
	finish(ctx context.Context) error
	// source reads the rows back in key order, once finished.
	source(ctx context.Context) (orchSource, error)
	close()
}

// Staging places, for UsageStats.Staging.
const (
	StagingDatabase = "database"
	StagingFiles    = "files"
)

// openStage creates the staging table on a pinned connection, or, when the session
// refuses (READ ONLY, or no CREATE TEMPORARY TABLES privilege), stages in files.
func (r *usageRun) openStage(ctx context.Context) (stageSink, error) {
	conn, err := r.u.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage check: connect: %w", err)
	}
	for _, q := range []string{dropStageSQL, createStageSQL} {
		if _, err = conn.ExecContext(ctx, q); err != nil {
			break
		}
	}
	if err == nil {
		r.stats.Staging = StagingDatabase
		return &dbStage{ctx: ctx, conn: conn, batch: r.batch}, nil
	}
	_ = conn.Close()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrStaging, err)
	}
	zerolog.Ctx(ctx).Info().Err(err).Msg("usage check: cannot create the staging table; staging in temporary files")
	r.stats.Staging = StagingFiles
	return &fileStage{dir: r.u.TempDir, runRows: orDefault(r.u.runRows, stageRunRows)}, nil
}

// dbStage buffers staged rows into multi-row INSERTs on the run's connection.
type dbStage struct {
	ctx   context.Context
	conn  *sql.Conn
	batch int
	n     int
	args  []any
	rows  *sql.Rows
}

func (s *dbStage) add(ctx context.Context, r stagedRow) error {
	at := time.Unix(r.at, 0).UTC()
	s.args = append(s.args, r.resource, uint8(r.kind), b2i(r.event), at, r.ord, r.eventID, r.what, r.cs)
	s.n++
	if s.n >= s.batch {
		return s.flush(ctx)
	}
	return nil
}

func (s *dbStage) flush(ctx context.Context) error {
	if s.n == 0 {
		return nil
	}
	if _, err := s.conn.ExecContext(ctx, insertStageSQL(s.n), s.args...); err != nil {
		return fmt.Errorf("usage check: stage %d rows: %w", s.n, err)
	}
	s.n, s.args = 0, s.args[:0]
	return nil
}

func (s *dbStage) finish(ctx context.Context) error { return s.flush(ctx) }

func (s *dbStage) source(ctx context.Context) (orchSource, error) {
	rows, err := s.conn.QueryContext(ctx, selectStageSQL)
	if err != nil {
		return nil, fmt.Errorf("usage check: read staged rows: %w", err)
	}
	s.rows = rows
	return &orchCursor{rows: rows}, nil
}

// close drops the staging table, even after the run's context ended, so the pooled
// connection goes back clean; one that cannot be cleaned is discarded.
func (s *dbStage) close() {
	if s.rows != nil {
		_ = s.rows.Close()
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 30*time.Second)
	defer cancel()
	if _, err := s.conn.ExecContext(dctx, dropStageSQL); err != nil {
		_ = s.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = s.conn.Close()
}

// stageable reports whether an id fits the staging table (CloudStack's are uuids).
func stageable(id string) bool { return id != "" && len(id) <= 64 }

// eventRetries is how many times the event log is read when it changed while read.
const eventRetries = 3

// stage reads the orchestrator's side into the staging table: accounts (only their
// states are kept, for the suspended accounts), VMs, volumes, addresses, then the
// event log from a lookback before the window up to now.
func (r *usageRun) stage(ctx context.Context, st stageSink) error {
	o := r.u.Orchestrator
	accounts, err := o.ListAccounts(ctx)
	if err != nil {
		return fmt.Errorf("usage check: %w", err)
	}
	r.stats.Accounts = int64(len(accounts))
	for _, a := range accounts {
		if s := r.suspended[a.ID]; s != nil {
			s.csState = a.State
		}
	}
	accounts = nil
	for vm, err := range o.VMs(ctx, orchestrator.ListVMs{}) {
		if err != nil {
			return fmt.Errorf("usage check: %w", err)
		}
		if !stageable(vm.ID) {
			continue
		}
		r.stats.VMs++
		if err := st.add(ctx, staged(vm.ID, kindVM, false, vm.Created, 0, "", vm.State, vm.AccountID)); err != nil {
			return err
		}
		if s := r.suspended[vm.AccountID]; s != nil && vm.State == orchestrator.VMRunning {
			s.running++
			if len(s.runningVMs) < maxEvidence {
				s.runningVMs = append(s.runningVMs, vm.ID)
			}
		}
	}
	for v, err := range o.Volumes(ctx) {
		if err != nil {
			return fmt.Errorf("usage check: %w", err)
		}
		if !stageable(v.ID) {
			continue
		}
		r.stats.Volumes++
		state := v.State
		if v.Destroyed {
			state = "Destroy"
		}
		if err := st.add(ctx, staged(v.ID, kindVolume, false, v.Created, 0, "", state, v.AccountID)); err != nil {
			return err
		}
	}
	for ip, err := range o.PublicIPs(ctx) {
		if err != nil {
			return fmt.Errorf("usage check: %w", err)
		}
		if !stageable(ip.ID) {
			continue
		}
		r.stats.IPs++
		if err := st.add(ctx, staged(ip.ID, kindIP, false, ip.Allocated, 0, "", ip.State, ip.AccountID)); err != nil {
			return err
		}
	}
	// The events up to now: after the inventory was read, so that the last event of
	// a resource is never older than what the inventory says of it.
	r.spanFrom = r.from.Add(-r.lookback)
	r.spanTo = r.u.now().UTC().Truncate(time.Second)
	if r.spanTo.Before(r.to) {
		r.spanTo = r.to
	}
	f := orchestrator.ListEvents{Start: r.spanFrom, End: r.spanTo, Types: orchestrator.UsageEventTypes()}
	for attempt := 1; ; attempt++ {
		err := r.stageEvents(ctx, st, f)
		if errors.Is(err, orchestrator.ErrListChanged) && attempt < eventRetries {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	return nil
}

// staged is a staged row; an unknown time is the epoch.
func staged(resource string, k resourceKind, event bool, at time.Time, ord uint8, eventID, what, cs string) stagedRow {
	sec := at.Unix()
	if at.IsZero() || sec < 0 {
		sec = 0
	}
	return stagedRow{resource: resource, kind: k, event: event, at: sec, ord: ord, eventID: eventID, what: what, cs: cs}
}

func (r *usageRun) stageEvents(ctx context.Context, st stageSink, f orchestrator.ListEvents) error {
	r.stats.Events, r.stats.EventsSkipped = 0, 0
	for ev, err := range r.u.Orchestrator.Events(ctx, f) {
		if err != nil {
			return fmt.Errorf("usage check: %w", err)
		}
		t, known := transitions[ev.Type]
		if !known || !ev.Succeeded() || ev.Invalid != "" || !stageable(ev.ResourceID) || len(ev.ID) > 64 {
			r.stats.EventsSkipped++
			continue
		}
		r.stats.Events++
		if err := st.add(ctx, staged(ev.ResourceID, t.kind, true, ev.Created, t.order, ev.ID, ev.Type, ev.AccountID)); err != nil {
			return err
		}
	}
	return nil
}

// meterBatch is a slice of metering rows in flight between the reader and the merge.
type meterBatch struct {
	rows []meterRow
	err  error
}

// meterStream is the metering side, read on its own connection by a goroutine.
type meterStream struct {
	ch     chan meterBatch
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the reader and waits for it.
func (m *meterStream) stop() {
	m.cancel()
	for range m.ch {
	}
	<-m.done
}

// meterBatchSize is how many metering rows travel together; a few batches are in
// flight at most.
const meterBatchSize = 512

// readMetering starts reading the metering side of the window. The database sorts it
// while the orchestrator's side is staged.
func (r *usageRun) readMetering(ctx context.Context) *meterStream {
	ctx, cancel := context.WithCancel(ctx)
	m := &meterStream{ch: make(chan meterBatch, 4), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		defer close(m.ch)
		send := func(b meterBatch) bool {
			select {
			case m.ch <- b:
				return true
			case <-ctx.Done():
				return false
			}
		}
		rows, err := r.u.DB.QueryContext(ctx, selectMeteringSQL,
			r.from.Add(-24*time.Hour), r.to, r.from, r.from, r.to)
		if err != nil {
			send(meterBatch{err: fmt.Errorf("usage check: read metering: %w", err)})
			return
		}
		defer rows.Close()
		batch := make([]meterRow, 0, meterBatchSize)
		for rows.Next() {
			var (
				m          meterRow
				res, cs    []byte
				start, end time.Time
			)
			if err := rows.Scan(&res, &m.usageType, &start, &end, &m.raw, &cs, &m.account, &m.status, &m.product); err != nil {
				send(meterBatch{err: fmt.Errorf("usage check: read metering: %w", err)})
				return
			}
			m.resource, m.cs = string(res), string(cs)
			m.start, m.end = start.UTC(), end.UTC().Add(time.Second)
			batch = append(batch, m)
			if len(batch) == meterBatchSize {
				if !send(meterBatch{rows: batch}) {
					return
				}
				batch = make([]meterRow, 0, meterBatchSize)
			}
		}
		if err := rows.Err(); err != nil {
			send(meterBatch{err: fmt.Errorf("usage check: read metering: %w", err)})
			return
		}
		if len(batch) > 0 {
			send(meterBatch{rows: batch})
		}
	}()
	return m
}

// meterCursor walks the metering stream one row at a time.
type meterCursor struct {
	m    *meterStream
	rows []meterRow
	i    int
	done bool
	err  error
}

// peek returns the next row without consuming it; false at the end or on error.
func (c *meterCursor) peek() (*meterRow, bool) {
	for !c.done && c.i >= len(c.rows) {
		b, ok := <-c.m.ch
		if !ok {
			c.done = true
			break
		}
		if b.err != nil {
			c.err, c.done = b.err, true
			break
		}
		c.rows, c.i = b.rows, 0
	}
	if c.done {
		return nil, false
	}
	return &c.rows[c.i], true
}

// orchCursor walks the staging table in key order.
type orchCursor struct {
	rows     *sql.Rows
	resource string
	row      orchRow
	have     bool
	done     bool
	e        error
}

func (c *orchCursor) take() orchRow {
	c.have = false
	return c.row
}

func (c *orchCursor) err() error { return c.e }

func (c *orchCursor) peek() (string, bool) {
	if c.have {
		return c.resource, true
	}
	if c.done {
		return "", false
	}
	if !c.rows.Next() {
		c.done, c.e = true, c.rows.Err()
		return "", false
	}
	var (
		res, cs []byte
		src     uint8
	)
	if err := c.rows.Scan(&res, &c.row.kind, &src, &c.row.at, &c.row.what, &cs); err != nil {
		c.done, c.e = true, err
		return "", false
	}
	c.resource, c.row.cs, c.row.event = string(res), string(cs), src == 1
	c.row.at = c.row.at.UTC()
	if c.row.at.Unix() <= 0 { // the epoch: unknown (DATETIME has no zero in strict mode)
		c.row.at = time.Time{}
	}
	c.have = true
	return c.resource, true
}

// merge reads both sides in resource order and evaluates each resource.
func (r *usageRun) merge(ctx context.Context, oc orchSource, meter *meterStream) error {
	mc := &meterCursor{m: meter}
	var (
		orch   []orchRow
		meters []meterRow
		last   string
		first  = true
	)
	check := func() error {
		if err := oc.err(); err != nil {
			return fmt.Errorf("usage check: read staged rows: %w", err)
		}
		return mc.err
	}
	for {
		oKey, oOK := oc.peek()
		mRow, mOK := mc.peek()
		if err := check(); err != nil {
			return err
		}
		if !oOK && !mOK {
			return nil
		}
		key := oKey
		if !oOK || (mOK && mRow.resource < oKey) {
			key = mRow.resource
		}
		if !first && key <= last {
			return fmt.Errorf("usage check: the two sides are not in one order (%q after %q)", key, last)
		}
		first, last = false, key
		orch, meters = orch[:0], meters[:0]
		for {
			k, ok := oc.peek()
			if !ok || k != key {
				break
			}
			orch = append(orch, oc.take())
		}
		for {
			m, ok := mc.peek()
			if !ok || m.resource != key {
				break
			}
			meters = append(meters, *m)
			mc.i++
			r.stats.MeteringRows++
		}
		if err := check(); err != nil {
			return err
		}
		r.stats.Resources++
		if err := r.evaluate(ctx, key, orch, meters); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
