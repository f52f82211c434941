package billing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// UsageSource is where collect reads usage: *orchestrator.Client, or its dry-run
// stand-in (reads only).
type UsageSource interface {
	UsagePages(ctx context.Context, f orchestrator.ListUsage) iter.Seq2[orchestrator.UsagePage, error]
	UsageCoverage(ctx context.Context) (time.Time, error)
}

// DefaultCollectLookback is how far behind its last read each collect run reads
// again: the usage server writes late and re-processes periods.
const DefaultCollectLookback = 48 * time.Hour

// collectRetries is how many times a window whose pages disagreed with their count
// (the usage server wrote meanwhile) is read before the run fails.
const collectRetries = 3

// Collect reads CloudStack's usage records (listUsageRecords) into the raw table
// cloudstack_usage and the usage_records rating reads:
//
//   - it reads whole UTC days, from the day of its coverage (or last read) minus
//     Config.CollectLookback up to now, paged, one page at a time;
//   - every record is kept raw, once, under its natural identity; the same record
//     read again writes nothing, a record listed twice in one read (the usage
//     server's duplicates) is counted and reported, a changed record is an update;
//   - records are mapped to products by Config.Products; a record for an unknown
//     account, usage type or offering is kept raw as pending, reported (exit 3), and
//     collected by the first run after the account or mapping exists;
//   - each usage_records row (resource = the usage id, product, the record's start
//     hour) is the sum of its raw records, written only when its value changes, so
//     recorded_at moves exactly then and late or corrected usage reaches rating
//     through the late-usage path. A record longer than an hour (a daily usage
//     server) stays whole on its start hour, and is counted;
//   - coverage, the end of the latest period the usage server has finished, is
//     saved for close.
//
// Each page commits on its own (raw records and the usage rows they change in one
// transaction), so a run killed at any point leaves a state the next run completes.
// Memory is a page in flight plus, for the duplicate check, 9 bytes per record of
// the day being read.
func (j *Job) Collect(ctx context.Context) (*run.Report, error) {
	c := &collector{j: j, rep: run.NewReport("billing"), now: j.now().Truncate(time.Second), log: zerolog.Ctx(ctx),
		accounts: map[string]accountMatch{}, hours: map[time.Time]*hourWrites{}, problems: map[problemKey]*problemAgg{}}
	if j.Config.DryRun {
		c.plannedRaw = map[[32]byte]*rawRow{}
		c.plannedByKey = map[usageKey]map[[32]byte]*rawRow{}
		c.plannedUsage = map[usageKey]usageVal{}
	}
	err := c.run(ctx)
	c.closeStmts()
	c.finish()
	return c.rep, err
}

// collectPhase is Collect as the first phase of Run. When CloudStack cannot be read
// (down, refusing, a listing that keeps changing), the failure is reported (exit 3)
// and rating goes on with the usage already collected: close waits for coverage, and
// usage collected later reaches rating as late usage. A cancelled run, or a usage
// error, stops the run as any phase's error does.
func (j *Job) collectPhase(ctx context.Context) (*run.Report, error) {
	rep, err := j.Collect(ctx)
	if err == nil || ctx.Err() != nil || errors.Is(err, run.ErrUsage) {
		return rep, err
	}
	zerolog.Ctx(ctx).Error().Err(err).Msg("collect failed; rating the usage already collected")
	rep.Problem("collect_failed", "cloudstack usage", err.Error())
	return rep, nil
}

// collectLookback is Config.CollectLookback or the default.
func (j *Job) collectLookback() time.Duration {
	if j.Config.CollectLookback > 0 {
		return j.Config.CollectLookback
	}
	return DefaultCollectLookback
}

type collector struct {
	j        *Job
	rep      *run.Report
	now      time.Time
	log      *zerolog.Logger
	accounts map[string]accountMatch

	// A dry run's view of what it would have written, so later pages plan on top
	// of earlier ones as the real run would. Empty in a real run.
	plannedRaw   map[[32]byte]*rawRow
	plannedByKey map[usageKey]map[[32]byte]*rawRow
	plannedUsage map[usageKey]usageVal

	hours    map[time.Time]*hourWrites
	problems map[problemKey]*problemAgg
	updates  capped
	dupLines capped
	maxEnd   time.Time

	// The window being read: identities seen (the first 8 bytes of each) and the
	// records listed more than once.
	seen map[uint64]uint8
	dups map[[32]byte]*dupRecord

	// stmts are the statements of full batches, prepared once per run (and
	// connection) instead of per batch: preparing the INSERT of 1,000 raw records
	// (22,000 placeholders) took 21 ms of its 55 ms.
	stmts map[string]*sql.Stmt
}

// fullBatch returns query prepared once for the run when n is a full batch, whose
// statements repeat, or nil: a short batch's statement is sent as it is.
func (c *collector) fullBatch(ctx context.Context, n int, query string) (*sql.Stmt, error) {
	if n != writeBatch {
		return nil, nil
	}
	if st := c.stmts[query]; st != nil {
		return st, nil
	}
	st, err := c.j.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if c.stmts == nil {
		c.stmts = map[string]*sql.Stmt{}
	}
	c.stmts[query] = st
	return st, nil
}

// closeStmts frees the prepared statements on the server.
func (c *collector) closeStmts() {
	for _, st := range c.stmts {
		_ = st.Close()
	}
	c.stmts = nil
}

// accountMatch is what accounts.cloudstack_account_id says of a CloudStack account:
// our account id, and how many of ours claim it (0 unknown, >1 ambiguous).
type accountMatch struct {
	id int64
	n  int
}

// rawRow is a cloudstack_usage row: the record and what collect made of it.
type rawRow struct {
	identity, contentHash                  [32]byte
	usageID                                string
	usageType                              int
	offering                               string
	start, end                             time.Time
	csAccount, accountName, domainID, vmID string
	rawUsage                               string
	size                                   int64
	description                            string
	status, problem                        string
	accountID                              int64
	product                                string
	hour                                   time.Time
	quantity                               Micros
}

// Raw record statuses.
const (
	rawCollected = "collected"
	rawIgnored   = "ignored"
	rawPending   = "pending"
)

// Problems found while reading.
const (
	problemInvalidRecord = "invalid_usage_record"
	problemNoUsageID     = "no_usage_id"
)

// usageKey is a usage_records key: resource (the usage id), product, hour.
type usageKey struct {
	resource, product string
	hour              time.Time
}

type usageVal struct {
	exists    bool
	accountID int64
	quantity  Micros
}

type hourWrites struct {
	newRows, changed int
	products         map[string]*productWrites
}

type productWrites struct {
	rows  int
	delta Micros
}

type problemKey struct{ kind, subject string }

type problemAgg struct {
	records  int64
	from, to time.Time
	detail   string
	fields   []run.Field
}

type dupRecord struct {
	row    *rawRow
	copies int
}

// natural identity and content of a record.
func identityOf(r orchestrator.UsageRecord) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%d\x00%d\x00%s", r.UsageID, r.UsageType, r.OfferingID, r.Start.Unix(), r.End.Unix(), r.AccountID)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func contentOf(r orchestrator.UsageRecord) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\x00%s", r.RawUsage, r.Size, r.Account, r.VirtualMachineID, r.DomainID)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func rowFromRecord(r orchestrator.UsageRecord) *rawRow {
	return &rawRow{
		identity: identityOf(r), contentHash: contentOf(r),
		usageID: r.UsageID, usageType: r.UsageType, offering: r.OfferingID, start: r.Start, end: r.End,
		csAccount: r.AccountID, accountName: truncate(r.Account, 255), domainID: r.DomainID, vmID: r.VirtualMachineID,
		rawUsage: r.RawUsage, size: r.Size, description: truncate(r.Description, 512),
	}
}

func (r *rawRow) key() usageKey { return usageKey{r.usageID, r.product, r.hour} }

func (c *collector) run(ctx context.Context) error {
	if c.j.Config.Products == nil {
		return run.Usagef("collect needs a product mapping (--products)")
	}
	if c.j.Usage == nil {
		return run.Usagef("collect needs CloudStack (--cloudstack-url, --cloudstack-api-key, --cloudstack-secret-key)")
	}
	if c.j.Config.Account != 0 {
		return run.Usagef("collect reads every account's usage; --account does not apply to it")
	}
	var coverage, readTo sql.NullTime
	err := c.j.DB.QueryRowContext(ctx, selectCollectStateSQL).Scan(&coverage, &readTo)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("collect: load state: %w", err)
	}
	if err := c.retryPending(ctx); err != nil {
		return err
	}
	base := c.now
	for _, t := range []sql.NullTime{readTo, coverage} {
		if t.Valid && t.Time.Before(base) {
			base = t.Time.UTC()
		}
	}
	first := base.Add(-c.j.collectLookback()).Truncate(24 * time.Hour)
	for day := first; !day.After(c.now); day = day.Add(24 * time.Hour) {
		if ctx.Err() != nil {
			return fmt.Errorf("collect stopped before %s: %w", day.Format(time.DateOnly), cause(ctx))
		}
		end := day.Add(24*time.Hour - time.Second)
		if end.After(c.now) {
			end = c.now
		}
		if err := c.window(ctx, day, end); err != nil {
			return err
		}
	}
	return c.saveCoverage(ctx, coverage)
}

// window reads one day, again when its pages changed under it.
func (c *collector) window(ctx context.Context, from, to time.Time) error {
	label := from.Format(time.DateOnly)
	for attempt := 1; ; attempt++ {
		c.seen, c.dups = map[uint64]uint8{}, map[[32]byte]*dupRecord{}
		n, err := c.readWindow(ctx, from, to)
		if errors.Is(err, orchestrator.ErrListChanged) && attempt < collectRetries {
			c.rep.Count("windows_reread", 1)
			c.log.Warn().Err(err).Str("day", label).Msg("usage listing changed while read; reading the day again")
			continue
		}
		if err != nil {
			return fmt.Errorf("collect %s: %w", label, err)
		}
		c.rep.Count("windows", 1)
		c.rep.Act("collect", "day "+label, fmt.Sprintf("%s read", plural(int64(n), "record")),
			run.Time("from", from), run.Time("to", to), run.Int("records", int64(n)))
		return c.finishWindow(ctx)
	}
}

type pageResult struct {
	page orchestrator.UsagePage
	err  error
}

// readWindow processes the pages of [from, to] while the next page is fetched.
func (c *collector) readWindow(ctx context.Context, from, to time.Time) (int, error) {
	rctx, cancel := context.WithCancel(ctx)
	pages := make(chan pageResult, 1)
	go func() {
		defer close(pages)
		for pg, err := range c.j.Usage.UsagePages(rctx, orchestrator.ListUsage{Start: from, End: to, PageSize: c.j.Config.CollectPageSize}) {
			select {
			case pages <- pageResult{pg, err}:
			case <-rctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		for range pages { // let the reader finish before returning
		}
	}()
	n := 0
	var batch []orchestrator.UsageRecord
	for p := range pages {
		if p.err != nil {
			return n, p.err
		}
		n += len(p.page.Records)
		batch = append(batch, p.page.Records...)
		if len(batch) < writeBatch {
			continue
		}
		if err := c.page(ctx, batch); err != nil {
			return n, err
		}
		batch = batch[:0]
	}
	if len(batch) > 0 {
		return n, c.page(ctx, batch)
	}
	return n, nil
}

// writeBatch is how many records are written together: two of CloudStack's largest
// pages, so each statement's fixed cost is spread over more rows.
const writeBatch = 1000

// page handles a batch of records (writeBatch, or a window's last): drops the
// window's duplicates, skips what is stored unchanged, maps the rest and writes it
// with the usage rows it changes.
func (c *collector) page(ctx context.Context, recs []orchestrator.UsageRecord) error {
	c.rep.Count("records_read", int64(len(recs)))
	cand := make([]*rawRow, 0, len(recs))
	for _, rec := range recs {
		if rec.Invalid != "" {
			c.problem(problemInvalidRecord, "usage "+rec.UsageID, rec.Invalid, rec.Start, run.Str("usage_id", rec.UsageID))
			continue
		}
		r := rowFromRecord(rec)
		k := binary.BigEndian.Uint64(r.identity[:8])
		if n := c.seen[k]; n > 0 {
			if n < 255 {
				c.seen[k] = n + 1
			}
			c.rep.Count("records_duplicate", 1)
			if d := c.dups[r.identity]; d != nil {
				d.copies++
			} else {
				c.dups[r.identity] = &dupRecord{row: r, copies: 2}
			}
			continue
		}
		c.seen[k] = 1
		if e := r.end.Add(time.Second); e.After(c.maxEnd) && !r.end.After(c.now) {
			c.maxEnd = e
		}
		cand = append(cand, r)
	}
	if len(cand) == 0 {
		return nil
	}
	stored, err := c.loadRaw(ctx, cand)
	if err != nil {
		return err
	}
	var writes []*rawRow
	var oldKeys []usageKey
	for _, r := range cand {
		old, ok := stored[r.identity]
		if ok && old.contentHash == r.contentHash {
			c.rep.Count("records_unchanged", 1)
			continue
		}
		writes = append(writes, r)
		if ok {
			if old.status == rawCollected {
				oldKeys = append(oldKeys, old.key())
			}
		}
	}
	if len(writes) == 0 {
		return nil
	}
	if err := c.prefetchAccounts(ctx, writes); err != nil {
		return err
	}
	for _, r := range writes {
		old, changed := stored[r.identity]
		c.evaluate(r)
		if changed {
			c.rep.Count("records_changed", 1)
			if c.updates.ok() {
				c.rep.Act("update", "usage "+r.usageID,
					fmt.Sprintf("type %d %s: rawusage %s -> %s, size %d -> %d", r.usageType, fmtHour(r.start), old.rawUsage, r.rawUsage, old.size, r.size),
					run.Str("usage_id", r.usageID), run.Int("usage_type", int64(r.usageType)), run.Int("account_id", r.accountID),
					run.Time("start", r.start), run.Time("end", r.end))
			}
		} else {
			c.rep.Count("records_new", 1)
		}
		c.countStatus(r)
	}
	return c.write(ctx, writes, oldKeys)
}

// countStatus counts a written record by what it became.
func (c *collector) countStatus(r *rawRow) {
	switch r.status {
	case rawCollected:
		c.rep.Count("records_collected", 1)
		if r.end.Sub(r.start) >= time.Hour {
			c.rep.Count("records_longer_than_an_hour", 1)
		}
	case rawIgnored:
		c.rep.Count("records_ignored", 1)
	case rawPending:
		c.rep.Count("records_pending", 1)
		c.pendingProblem(r)
	}
}

// evaluate decides what a record is: ignored, collected (account, product, hour,
// quantity) or pending a problem.
func (c *collector) evaluate(r *rawRow) {
	r.status, r.problem, r.accountID, r.product, r.hour, r.quantity = rawPending, "", 0, "", time.Time{}, 0
	if r.usageID == "" {
		r.problem = problemNoUsageID
		return
	}
	rule, ignored, problem := c.j.Config.Products.match(r.usageType, r.offering, r.accountName)
	switch {
	case ignored:
		r.status = rawIgnored
		return
	case problem != "":
		r.problem = problem
		return
	}
	q, err := rule.quantity(r.rawUsage, r.size)
	if err != nil {
		r.problem = problemBadQuantity
		return
	}
	switch m := c.accounts[r.csAccount]; {
	case m.n == 0:
		r.problem = problemUnknownAccount
	case m.n > 1:
		r.problem = problemAmbiguousAccount
	default:
		r.status, r.accountID, r.product, r.hour, r.quantity = rawCollected, m.id, rule.Product, floorHour(r.start), q
	}
}

// pendingProblem adds a pending record to the report's problems, one line per
// cause (an account, a usage type, an offering), not per record.
func (c *collector) pendingProblem(r *rawRow) {
	switch r.problem {
	case problemUnknownAccount, problemAmbiguousAccount:
		what := "no account has cloudstack_account_id " + r.csAccount
		if r.problem == problemAmbiguousAccount {
			what = "several accounts have cloudstack_account_id " + r.csAccount
		}
		c.problem(r.problem, "cloudstack account "+r.csAccount, what+" (CloudStack account "+r.accountName+")", r.start,
			run.Str("cloudstack_account_id", r.csAccount), run.Str("account", r.accountName))
	case problemUnknownUsageType:
		c.problem(r.problem, "usage type "+strconv.Itoa(r.usageType), "no [[product]] entry has this usage_type", r.start,
			run.Int("usage_type", int64(r.usageType)))
	case problemUnmappedOffering:
		c.problem(r.problem, fmt.Sprintf("usage type %d offering %s", r.usageType, r.offering),
			"no [[product]] entry of this usage_type matches the offering", r.start,
			run.Int("usage_type", int64(r.usageType)), run.Str("offering_id", r.offering))
	case problemBadQuantity:
		c.problem(r.problem, "usage "+r.usageID, fmt.Sprintf("type %d: rawusage %q, size %d make no quantity", r.usageType, r.rawUsage, r.size), r.start,
			run.Str("usage_id", r.usageID), run.Int("usage_type", int64(r.usageType)))
	default:
		c.problem(r.problem, "usage "+r.usageID, fmt.Sprintf("type %d", r.usageType), r.start, run.Str("usage_id", r.usageID))
	}
}

func (c *collector) problem(kind, subject, detail string, at time.Time, fields ...run.Field) {
	k := problemKey{kind, subject}
	p := c.problems[k]
	if p == nil {
		p = &problemAgg{from: at, to: at, detail: detail, fields: fields}
		c.problems[k] = p
	}
	p.records++
	if at.Before(p.from) {
		p.from = at
	}
	if at.After(p.to) {
		p.to = at
	}
}

// finish renders what the run aggregated: problems and the hours written.
func (c *collector) finish() {
	keys := make([]problemKey, 0, len(c.problems))
	for k := range c.problems {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].kind != keys[j].kind {
			return keys[i].kind < keys[j].kind
		}
		return keys[i].subject < keys[j].subject
	})
	var lines capped
	for _, k := range keys {
		p := c.problems[k]
		if !lines.ok() {
			continue
		}
		fields := append([]run.Field{run.Int("records", p.records), run.Time("from", p.from), run.Time("to", p.to)}, p.fields...)
		c.rep.Problem(k.kind, k.subject, fmt.Sprintf("%s: %s from %s to %s, kept raw and collected once fixed",
			p.detail, plural(p.records, "record"), fmtHour(p.from), fmtHour(p.to)), fields...)
	}
	if more := lines.more(); more > 0 {
		c.rep.Problem("collect_problems", "more", fmt.Sprintf("%d more problem lines not listed", more))
	}
	hours := make([]time.Time, 0, len(c.hours))
	for h := range c.hours {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Before(hours[j]) })
	var hourLines capped
	for _, h := range hours {
		w := c.hours[h]
		if !hourLines.ok() {
			continue
		}
		products := make([]string, 0, len(w.products))
		for p := range w.products {
			products = append(products, p)
		}
		sort.Strings(products)
		var parts []string
		for _, p := range products {
			pw := w.products[p]
			sign := "+"
			if pw.delta < 0 {
				sign = ""
			}
			parts = append(parts, fmt.Sprintf("%s %d %s%s", p, pw.rows, sign, pw.delta))
		}
		c.rep.Act("usage", "hour "+fmtHour(h), fmt.Sprintf("%d new, %d changed: %s", w.newRows, w.changed, strings.Join(parts, ", ")),
			run.Time("hour", h), run.Int("rows_new", int64(w.newRows)), run.Int("rows_changed", int64(w.changed)))
	}
	if more := hourLines.more(); more > 0 {
		c.rep.Act("usage", "more hours", fmt.Sprintf("%d more hours not listed", more))
	}
	if more := c.updates.more(); more > 0 {
		c.rep.Act("update", "more records", fmt.Sprintf("%d more changed records not listed", more))
	}
	if more := c.dupLines.more(); more > 0 {
		c.rep.Act("duplicate", "more records", fmt.Sprintf("%d more duplicated records not listed", more))
	}
}

// finishWindow reports the window's duplicates and records them on the raw rows.
func (c *collector) finishWindow(ctx context.Context) error {
	ids := make([][32]byte, 0, len(c.dups))
	for id := range c.dups {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	for _, id := range ids {
		d := c.dups[id]
		r := d.row
		if c.dupLines.ok() {
			c.rep.Act("duplicate", "usage "+r.usageID, fmt.Sprintf("type %d %s .. %s listed %d times; kept once",
				r.usageType, r.start.Format(time.RFC3339), r.end.Format(time.RFC3339), d.copies),
				run.Str("usage_id", r.usageID), run.Int("usage_type", int64(r.usageType)), run.Str("cloudstack_account_id", r.csAccount),
				run.Time("start", r.start), run.Time("end", r.end), run.Int("copies", int64(d.copies)))
		}
		if c.j.Config.DryRun {
			continue
		}
		if _, err := c.j.DB.ExecContext(ctx, markDuplicatesSQL, d.copies-1, id[:]); err != nil {
			return fmt.Errorf("collect: record duplicates of usage %s: %w", r.usageID, err)
		}
	}
	c.seen, c.dups = nil, nil
	return nil
}

// loadRaw returns the stored rows of these records' identities (and, in a dry run,
// what the run has planned for them).
func (c *collector) loadRaw(ctx context.Context, rows []*rawRow) (map[[32]byte]*rawRow, error) {
	args := make([]any, len(rows))
	for i, r := range rows {
		args[i] = r.identity[:]
	}
	query := selectRawSQL(len(rows))
	st, err := c.fullBatch(ctx, len(rows), query)
	if err != nil {
		return nil, fmt.Errorf("collect: look up stored records: %w", err)
	}
	var q *sql.Rows
	if st != nil {
		q, err = st.QueryContext(ctx, args...)
	} else {
		q, err = c.j.DB.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("collect: look up stored records: %w", err)
	}
	defer q.Close()
	out := make(map[[32]byte]*rawRow, len(rows))
	for q.Next() {
		var (
			id, content  []byte
			r            rawRow
			acct         sql.NullInt64
			product, qty sql.NullString
			hour         sql.NullTime
		)
		if err := q.Scan(&id, &content, &r.status, &acct, &product, &hour, &qty, &r.rawUsage, &r.size); err != nil {
			return nil, fmt.Errorf("collect: look up stored records: %w", err)
		}
		copy(r.identity[:], id)
		copy(r.contentHash[:], content)
		r.accountID, r.product, r.hour = acct.Int64, product.String, hour.Time.UTC()
		if r.quantity, err = scanMicros(qty); err != nil {
			return nil, fmt.Errorf("collect: stored quantity: %w", err)
		}
		out[r.identity] = &r
	}
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("collect: look up stored records: %w", err)
	}
	for _, r := range rows {
		if p := c.plannedRaw[r.identity]; p != nil {
			out[r.identity] = p
		}
	}
	// The usage id is part of the identity; stored rows need it for their key.
	for _, r := range rows {
		if o := out[r.identity]; o != nil && o.usageID == "" {
			o.usageID = r.usageID
		}
	}
	return out, nil
}

// prefetchAccounts looks up, in one query, the CloudStack accounts of rows not yet
// known to this run.
func (c *collector) prefetchAccounts(ctx context.Context, rows []*rawRow) error {
	var ids []any
	asked := map[string]bool{}
	for _, r := range rows {
		if _, ok := c.accounts[r.csAccount]; ok || asked[r.csAccount] {
			continue
		}
		asked[r.csAccount] = true
		ids = append(ids, r.csAccount)
	}
	if len(ids) == 0 {
		return nil
	}
	q, err := c.j.DB.QueryContext(ctx, selectAccountsSQL(len(ids)), ids...)
	if err != nil {
		return fmt.Errorf("collect: look up accounts: %w", err)
	}
	defer q.Close()
	found := map[string]accountMatch{}
	for q.Next() {
		var cs string
		var id int64
		if err := q.Scan(&cs, &id); err != nil {
			return fmt.Errorf("collect: look up accounts: %w", err)
		}
		m := found[cs]
		m.n++
		if m.n == 1 || id < m.id {
			m.id = id
		}
		found[cs] = m
	}
	if err := q.Err(); err != nil {
		return fmt.Errorf("collect: look up accounts: %w", err)
	}
	for _, id := range ids {
		c.accounts[id.(string)] = found[id.(string)]
	}
	return nil
}

// write stores new and changed raw rows and recomputes the usage_records rows they
// touch (their new keys, and the old keys of changed rows), in one transaction; a
// dry run records the plan instead.
func (c *collector) write(ctx context.Context, rows []*rawRow, oldKeys []usageKey) error {
	keys := make([]usageKey, 0, len(rows)+len(oldKeys))
	seen := map[usageKey]bool{}
	for _, k := range oldKeys {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, r := range rows {
		if k := r.key(); r.status == rawCollected && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if c.j.Config.DryRun {
		for _, r := range rows {
			if old := c.plannedRaw[r.identity]; old != nil && old.status == rawCollected {
				delete(c.plannedByKey[old.key()], r.identity)
			}
			c.plannedRaw[r.identity] = r
			if r.status == rawCollected {
				m := c.plannedByKey[r.key()]
				if m == nil {
					m = map[[32]byte]*rawRow{}
					c.plannedByKey[r.key()] = m
				}
				m[r.identity] = r
			}
		}
		_, err := c.derive(ctx, c.j.DB, keys)
		return err
	}
	query := upsertRawSQL(len(rows))
	st, err := c.fullBatch(ctx, len(rows), query)
	if err != nil {
		return fmt.Errorf("collect: store %s: %w", plural(int64(len(rows)), "record"), err)
	}
	return mysql.InTx(ctx, c.j.DB, nil, func(tx *sql.Tx) error {
		args := make([]any, 0, len(rows)*22)
		for _, r := range rows {
			var acct, product, hour, qty any
			if r.status == rawCollected {
				acct, product, hour, qty = r.accountID, r.product, r.hour, r.quantity.String()
			}
			var problem any
			if r.problem != "" {
				problem = r.problem
			}
			args = append(args, r.identity[:], r.usageID, r.usageType, r.offering, r.start, r.end, r.csAccount,
				r.contentHash[:], r.accountName, r.domainID, r.vmID, r.rawUsage, r.size, r.description,
				r.status, problem, acct, product, hour, qty, c.now, c.now)
		}
		var err error
		if st != nil {
			_, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, query, args...)
		}
		if err != nil {
			return fmt.Errorf("collect: store %s: %w", plural(int64(len(rows)), "record"), err)
		}
		_, err = c.derive(ctx, tx, keys)
		return err
	})
}

// derive recomputes usage_records for keys from the collected raw rows and writes
// the rows whose value changed; it returns how many it wrote.
func (c *collector) derive(ctx context.Context, q queryer, keys []usageKey) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	want := make(map[usageKey]bool, len(keys))
	var resources, products []any
	var hours []any
	seenR, seenP, seenH := map[string]bool{}, map[string]bool{}, map[time.Time]bool{}
	for _, k := range keys {
		want[k] = true
		if !seenR[k.resource] {
			seenR[k.resource] = true
			resources = append(resources, k.resource)
		}
		if !seenP[k.product] {
			seenP[k.product] = true
			products = append(products, k.product)
		}
		if !seenH[k.hour] {
			seenH[k.hour] = true
			hours = append(hours, k.hour)
		}
	}
	args := append(append(append(make([]any, 0, len(resources)+len(products)+len(hours)), resources...), products...), hours...)
	type sum struct {
		quantity Micros
		account  int64
		latest   time.Time
		ids      map[[32]byte]bool
	}
	sums := make(map[usageKey]*sum, len(keys))
	add := func(k usageKey, id [32]byte, acct int64, qty Micros, start time.Time) error {
		s := sums[k]
		if s == nil {
			s = &sum{ids: map[[32]byte]bool{}}
			sums[k] = s
		}
		if s.ids[id] {
			return nil
		}
		s.ids[id] = true
		var err error
		if s.quantity, err = s.quantity.Add(qty); err != nil {
			return err
		}
		if !start.Before(s.latest) {
			s.latest, s.account = start, acct
		}
		return nil
	}
	for _, k := range keys { // a dry run's plan replaces what is stored
		for id, r := range c.plannedByKey[k] {
			if err := add(k, id, r.accountID, r.quantity, r.start); err != nil {
				return 0, err
			}
		}
	}
	rows, err := q.QueryContext(ctx, selectKeyRawSQL(len(resources), len(products), len(hours)), args...)
	if err != nil {
		return 0, fmt.Errorf("collect: sum usage: %w", err)
	}
	for rows.Next() {
		var (
			id       []byte
			k        usageKey
			acct     int64
			qty      string
			start    time.Time
			identity [32]byte
		)
		if err := rows.Scan(&id, &k.resource, &k.product, &k.hour, &acct, &qty, &start); err != nil {
			rows.Close()
			return 0, fmt.Errorf("collect: sum usage: %w", err)
		}
		copy(identity[:], id)
		if c.plannedRaw[identity] != nil {
			continue
		}
		k.hour = k.hour.UTC()
		if !want[k] {
			continue
		}
		m, err := ParseMicros(qty)
		if err == nil {
			err = add(k, identity, acct, m, start)
		}
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("collect: sum usage of %s %s %s: %w", k.resource, k.product, fmtHour(k.hour), err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("collect: sum usage: %w", err)
	}

	current := make(map[usageKey]usageVal, len(keys))
	rows, err = q.QueryContext(ctx, selectUsageSQL(len(resources), len(products), len(hours)), args...)
	if err != nil {
		return 0, fmt.Errorf("collect: read usage rows: %w", err)
	}
	for rows.Next() {
		var k usageKey
		var v usageVal
		var qty string
		if err := rows.Scan(&k.resource, &k.product, &k.hour, &v.accountID, &qty); err != nil {
			rows.Close()
			return 0, fmt.Errorf("collect: read usage rows: %w", err)
		}
		k.hour = k.hour.UTC()
		if !want[k] {
			continue
		}
		if v.quantity, err = ParseMicros(qty); err != nil {
			rows.Close()
			return 0, fmt.Errorf("collect: read usage rows: %w", err)
		}
		v.exists = true
		current[k] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("collect: read usage rows: %w", err)
	}
	for _, k := range keys {
		if v, ok := c.plannedUsage[k]; ok {
			current[k] = v
		}
	}

	var writeArgs []any
	n := 0
	for _, k := range keys {
		cur := current[k]
		want := usageVal{exists: true, accountID: cur.accountID}
		if s := sums[k]; s != nil {
			want.accountID, want.quantity = s.account, s.quantity
		} else if !cur.exists {
			continue // emptied, and never written
		}
		if cur.exists && cur.accountID == want.accountID && cur.quantity == want.quantity {
			continue
		}
		n++
		writeArgs = append(writeArgs, want.accountID, k.resource, k.product, k.hour, want.quantity.String())
		c.noteWrite(k, cur, want)
		if c.plannedUsage != nil {
			c.plannedUsage[k] = want
		}
	}
	if n == 0 || c.j.Config.DryRun {
		return n, nil
	}
	if _, err := q.ExecContext(ctx, upsertUsageSQL(n), writeArgs...); err != nil {
		return 0, fmt.Errorf("collect: write %s: %w", plural(int64(n), "usage row"), err)
	}
	return n, nil
}

// noteWrite adds a usage_records write to its hour's report line.
func (c *collector) noteWrite(k usageKey, cur, want usageVal) {
	w := c.hours[k.hour]
	if w == nil {
		w = &hourWrites{products: map[string]*productWrites{}}
		c.hours[k.hour] = w
	}
	if cur.exists {
		w.changed++
		c.rep.Count("usage_rows_changed", 1)
	} else {
		w.newRows++
		c.rep.Count("usage_rows_new", 1)
	}
	p := w.products[k.product]
	if p == nil {
		p = &productWrites{}
		w.products[k.product] = p
	}
	p.rows++
	p.delta += want.quantity - cur.quantity
}

// retryPending re-evaluates every pending record with this run's mapping and
// accounts: those now collectable are collected, the rest reported again.
func (c *collector) retryPending(ctx context.Context) error {
	const batch = 500
	var after int64
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("collect stopped while retrying pending records: %w", cause(ctx))
		}
		rows, err := c.j.DB.QueryContext(ctx, selectPendingSQL, after, batch)
		if err != nil {
			return fmt.Errorf("collect: load pending records: %w", err)
		}
		var pending []*rawRow
		read := 0
		for rows.Next() {
			var (
				id           int64
				ident, chash []byte
				r            rawRow
				problem      sql.NullString
			)
			if err := rows.Scan(&id, &ident, &r.usageID, &r.usageType, &r.offering, &r.start, &r.end, &r.csAccount,
				&r.accountName, &r.domainID, &r.vmID, &r.rawUsage, &r.size, &r.description, &chash, &problem); err != nil {
				rows.Close()
				return fmt.Errorf("collect: load pending records: %w", err)
			}
			copy(r.identity[:], ident)
			copy(r.contentHash[:], chash)
			r.start, r.end, r.problem = r.start.UTC(), r.end.UTC(), problem.String
			after = id
			read++
			if p := c.plannedRaw[r.identity]; p != nil {
				continue
			}
			pending = append(pending, &r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("collect: load pending records: %w", err)
		}
		if err := c.prefetchAccounts(ctx, pending); err != nil {
			return err
		}
		var writes []*rawRow
		for _, r := range pending {
			was := r.problem
			c.evaluate(r)
			if r.status == rawPending && r.problem == was {
				c.rep.Count("records_still_pending", 1)
				c.pendingProblem(r)
				continue
			}
			if r.status == rawCollected {
				c.rep.Count("records_resolved", 1)
			}
			c.countStatus(r)
			writes = append(writes, r)
		}
		if len(writes) > 0 {
			if err := c.write(ctx, writes, nil); err != nil {
				return err
			}
		}
		if read < batch {
			return nil
		}
	}
}

// saveCoverage moves coverage to the later of the usage server's last successful
// job and the end of the records seen, and records the read.
func (c *collector) saveCoverage(ctx context.Context, stored sql.NullTime) error {
	cov := time.Time{}
	if stored.Valid {
		cov = stored.Time.UTC()
	}
	source := "kept"
	server, err := c.j.Usage.UsageCoverage(ctx)
	switch {
	case err != nil:
		c.log.Warn().Err(err).Msg("usage server metrics unavailable; coverage from the records seen")
	case server.After(cov):
		cov, source = server, "the usage server's last successful job"
	}
	if c.maxEnd.After(cov) {
		cov, source = c.maxEnd, "the records seen"
	}
	if cov.After(c.now) {
		cov = c.now
	}
	var covArg any
	if !cov.IsZero() {
		covArg = cov
		c.rep.Act("coverage", "usage", "complete to "+fmtHour(cov)+" ("+source+")", run.Time("coverage", cov))
	}
	if c.j.Config.DryRun {
		return nil
	}
	if _, err := c.j.DB.ExecContext(ctx, saveCollectStateSQL, covArg, c.now, c.now); err != nil {
		return fmt.Errorf("collect: save coverage: %w", err)
	}
	return nil
}

// collectCoverage returns collect's coverage; ok is false when collect has never
// run (usage then comes from elsewhere, and close does not wait for it).
func collectCoverage(ctx context.Context, q queryer) (time.Time, bool, error) {
	var cov sql.NullTime
	err := q.QueryRowContext(ctx, selectCoverageSQL).Scan(&cov)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("load usage coverage: %w", err)
	}
	return cov.Time.UTC(), true, nil
}
