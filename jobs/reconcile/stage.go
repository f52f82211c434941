package reconcile

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"slices"
	"strings"
	"time"
)

// Stripe lists newest first; our tables are read in invoice order. The remote side is
// staged, a batch at a time, then read back sorted by invoice, so that the two sides
// meet in one pass of two ordered cursors with memory that does not grow with the
// window. A real run stages into a TEMPORARY table; a dry run, whose database user may
// only SELECT, sorts on local disk instead (an external merge sort).

// kind orders a remote object within its invoice: markers first, then PaymentIntents,
// refunds, disputes.
type kind uint8

const (
	// kindMarker is no object: an invoice to judge in full (an old finding re-judged,
	// an attempt left pending).
	kindMarker kind = iota
	kindIntent
	kindRefund
	kindDispute
)

// remote is one Stripe object as staged.
type remote struct {
	Invoice int64 // metadata invoice_id; 0 when it does not parse
	Kind    kind
	Attempt int    // metadata attempt (PaymentIntents)
	ID      string // pi_, re_ or dp_...
	// Intent is the PaymentIntent (the object itself for a PaymentIntent).
	Intent   string
	Account  int64 // metadata account_id
	Customer string
	// Amount is the amount asked (PaymentIntent) or refunded or disputed; Received is
	// a PaymentIntent's amount_received. Minor units.
	Amount, Received int64
	Currency         string // upper case
	Status           string
	// Code is a declined PaymentIntent's decline (or error) code, a refund's or a
	// dispute's reason.
	Code          string
	ErrorCode     string
	PaymentMethod string
	Created       time.Time
	Due           time.Time // a dispute's evidence deadline
	// InWindow: listed in the window the run judges; false for an object fetched to
	// re-judge an old finding or a stale attempt (judged, not counted in the totals).
	InWindow bool
}

func compareRemote(a, b *remote) int {
	return cmp.Or(cmp.Compare(a.Invoice, b.Invoice), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Attempt, b.Attempt),
		strings.Compare(a.ID, b.ID))
}

func sameKey(a, b *remote) bool {
	return a.Invoice == b.Invoice && a.Kind == b.Kind && a.Attempt == b.Attempt && a.ID == b.ID
}

// stage holds the remote side of a run. Add may be called any number of times; Sorted
// then yields every object once (a duplicate key keeps the first object added, in
// window if either copy was), ordered by invoice, kind, attempt and id.
type stage interface {
	Add(ctx context.Context, rs []remote) error
	Sorted(ctx context.Context) iter.Seq2[remote, error]
	Close() error
}

// tableStage is a TEMPORARY table on one connection of its own: it lives as long as
// that session, so a killed run leaves nothing behind.
type tableStage struct {
	conn *sql.Conn
}

const (
	sqlCreateStage = `CREATE TEMPORARY TABLE reconcile_stage (
  invoice_id     BIGINT       NOT NULL,
  kind           TINYINT      NOT NULL,
  attempt        INT          NOT NULL,
  object_id      VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  intent_id      VARCHAR(255) NOT NULL,
  account_id     BIGINT       NOT NULL,
  customer       VARCHAR(255) NOT NULL,
  amount         BIGINT       NOT NULL,
  received       BIGINT       NOT NULL,
  currency       CHAR(3)      NOT NULL,
  status         VARCHAR(32)  NOT NULL,
  code           VARCHAR(64)  NOT NULL,
  error_code     VARCHAR(64)  NOT NULL,
  payment_method VARCHAR(255) NOT NULL,
  created        BIGINT       NOT NULL,
  due            BIGINT       NOT NULL,
  in_window      TINYINT      NOT NULL,
  PRIMARY KEY (invoice_id, kind, attempt, object_id)
) ENGINE=InnoDB`
	sqlInsertStage = `INSERT INTO reconcile_stage (invoice_id, kind, attempt, object_id, intent_id, account_id, customer,
  amount, received, currency, status, code, error_code, payment_method, created, due, in_window) VALUES %s
ON DUPLICATE KEY UPDATE in_window = GREATEST(in_window, VALUES(in_window))`
	stageRowPlaceholders = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	sqlReadStage         = `SELECT invoice_id, kind, attempt, object_id, intent_id, account_id, customer, amount, received,
  currency, status, code, error_code, payment_method, created, due, in_window
FROM reconcile_stage ORDER BY invoice_id, kind, attempt, object_id`
	sqlDropStage = `DROP TEMPORARY TABLE IF EXISTS reconcile_stage`
)

func newTableStage(ctx context.Context, db *sql.DB) (*tableStage, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("staging table: %w", err)
	}
	if _, err := conn.ExecContext(ctx, sqlCreateStage); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("staging table: %w", err)
	}
	return &tableStage{conn: conn}, nil
}

func (s *tableStage) Add(ctx context.Context, rs []remote) error {
	for len(rs) > 0 {
		n := min(len(rs), 500)
		var b strings.Builder
		args := make([]any, 0, n*17)
		for i, r := range rs[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(stageRowPlaceholders)
			args = append(args, r.Invoice, r.Kind, r.Attempt, r.ID, r.Intent, r.Account, r.Customer, r.Amount, r.Received,
				r.Currency, r.Status, clip(r.Code, 64), clip(r.ErrorCode, 64), r.PaymentMethod, r.Created.Unix(), unixOrZero(r.Due), r.InWindow)
		}
		if _, err := s.conn.ExecContext(ctx, fmt.Sprintf(sqlInsertStage, b.String()), args...); err != nil {
			return fmt.Errorf("stage %d objects: %w", n, err)
		}
		rs = rs[n:]
	}
	return nil
}

func (s *tableStage) Sorted(ctx context.Context) iter.Seq2[remote, error] {
	return func(yield func(remote, error) bool) {
		rows, err := s.conn.QueryContext(ctx, sqlReadStage)
		if err != nil {
			yield(remote{}, fmt.Errorf("read staged objects: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r remote
			var created, due int64
			if err := rows.Scan(&r.Invoice, &r.Kind, &r.Attempt, &r.ID, &r.Intent, &r.Account, &r.Customer, &r.Amount,
				&r.Received, &r.Currency, &r.Status, &r.Code, &r.ErrorCode, &r.PaymentMethod, &created, &due, &r.InWindow); err != nil {
				yield(remote{}, fmt.Errorf("read staged objects: %w", err))
				return
			}
			r.Created, r.Due = time.Unix(created, 0).UTC(), timeOrZero(due)
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(remote{}, fmt.Errorf("read staged objects: %w", err))
		}
	}
}

func (s *tableStage) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.conn.ExecContext(ctx, sqlDropStage)
	if cerr := s.conn.Close(); err == nil {
		err = cerr
	}
	return err
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func timeOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

// diskStage sorts runs of up to runSize objects in memory and writes each to a file
// of its own in dir; Sorted merges the runs. Memory is one run plus a read buffer per
// run.
type diskStage struct {
	dir     string
	runSize int
	buf     []remote
	runs    []string
	closed  bool
}

// defaultRunSize bounds the objects a dry run holds in memory at once (a few tens of
// MiB).
const defaultRunSize = 50_000

func newDiskStage(tempDir string, runSize int) (*diskStage, error) {
	dir, err := os.MkdirTemp(tempDir, "cronkit-reconcile-")
	if err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	if runSize <= 0 {
		runSize = defaultRunSize
	}
	return &diskStage{dir: dir, runSize: runSize}, nil
}

func (s *diskStage) Add(_ context.Context, rs []remote) error {
	for _, r := range rs {
		s.buf = append(s.buf, r)
		if len(s.buf) >= s.runSize {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the buffer, sorted, as one run.
func (s *diskStage) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	slices.SortStableFunc(s.buf, func(a, b remote) int { return compareRemote(&a, &b) })
	path := fmt.Sprintf("%s/run-%06d", s.dir, len(s.runs))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("stage run: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<16)
	var rec []byte
	for i := range s.buf {
		rec = encodeRemote(rec[:0], &s.buf[i])
		if _, err := w.Write(rec); err != nil {
			_ = f.Close()
			return fmt.Errorf("stage run: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("stage run: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("stage run: %w", err)
	}
	s.runs = append(s.runs, path)
	s.buf = s.buf[:0]
	return nil
}

func (s *diskStage) Sorted(ctx context.Context) iter.Seq2[remote, error] {
	return func(yield func(remote, error) bool) {
		if err := s.flush(); err != nil {
			yield(remote{}, err)
			return
		}
		s.buf = nil
		h := &diskRunHeap{}
		defer h.close()
		for _, path := range s.runs {
			f, err := os.Open(path)
			if err != nil {
				yield(remote{}, fmt.Errorf("read stage run: %w", err))
				return
			}
			rr := &diskRun{f: f, r: bufio.NewReaderSize(f, 1<<16)}
			ok, err := rr.next()
			if err != nil {
				_ = f.Close()
				yield(remote{}, err)
				return
			}
			if ok {
				h.items = append(h.items, rr)
			} else {
				_ = f.Close()
			}
		}
		heap.Init(h)
		var prev remote
		have := false
		for h.Len() > 0 {
			if err := ctx.Err(); err != nil {
				yield(remote{}, err)
				return
			}
			top := h.items[0]
			cur := top.cur
			ok, err := top.next()
			if err != nil {
				yield(remote{}, err)
				return
			}
			if ok {
				heap.Fix(h, 0)
			} else {
				_ = top.f.Close()
				heap.Pop(h)
			}
			if have && sameKey(&prev, &cur) {
				prev.InWindow = prev.InWindow || cur.InWindow
				continue
			}
			if have && !yield(prev, nil) {
				return
			}
			prev, have = cur, true
		}
		if have {
			yield(prev, nil)
		}
	}
}

func (s *diskStage) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return os.RemoveAll(s.dir)
}

type diskRun struct {
	f   *os.File
	r   *bufio.Reader
	cur remote
}

func (rr *diskRun) next() (bool, error) {
	r, err := decodeRemote(rr.r)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read stage run: %w", err)
	}
	rr.cur = r
	return true, nil
}

type diskRunHeap struct{ items []*diskRun }

func (h *diskRunHeap) Len() int           { return len(h.items) }
func (h *diskRunHeap) Less(i, j int) bool { return compareRemote(&h.items[i].cur, &h.items[j].cur) < 0 }
func (h *diskRunHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *diskRunHeap) Push(x any)         { h.items = append(h.items, x.(*diskRun)) }
func (h *diskRunHeap) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}

func (h *diskRunHeap) close() {
	for _, rr := range h.items {
		_ = rr.f.Close()
	}
}

// encodeRemote appends r as one record: varints and length-prefixed strings.
func encodeRemote(b []byte, r *remote) []byte {
	b = binary.AppendVarint(b, r.Invoice)
	b = append(b, byte(r.Kind))
	b = binary.AppendVarint(b, int64(r.Attempt))
	for _, s := range []string{r.ID, r.Intent, r.Customer, r.Currency, r.Status, r.Code, r.ErrorCode, r.PaymentMethod} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, n := range []int64{r.Account, r.Amount, r.Received, r.Created.Unix(), unixOrZero(r.Due)} {
		b = binary.AppendVarint(b, n)
	}
	w := byte(0)
	if r.InWindow {
		w = 1
	}
	return append(b, w)
}

func decodeRemote(rd *bufio.Reader) (remote, error) {
	var r remote
	inv, err := binary.ReadVarint(rd)
	if err != nil {
		return r, err // io.EOF at a record boundary: the end
	}
	r.Invoice = inv
	fail := func(err error) (remote, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return remote{}, err
	}
	k, err := rd.ReadByte()
	if err != nil {
		return fail(err)
	}
	r.Kind = kind(k)
	att, err := binary.ReadVarint(rd)
	if err != nil {
		return fail(err)
	}
	r.Attempt = int(att)
	for _, dst := range []*string{&r.ID, &r.Intent, &r.Customer, &r.Currency, &r.Status, &r.Code, &r.ErrorCode, &r.PaymentMethod} {
		n, err := binary.ReadUvarint(rd)
		if err != nil {
			return fail(err)
		}
		if n > 1<<16 {
			return remote{}, fmt.Errorf("corrupt stage record: a %d-byte string", n)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return fail(err)
		}
		*dst = string(buf)
	}
	var nums [5]int64
	for i := range nums {
		if nums[i], err = binary.ReadVarint(rd); err != nil {
			return fail(err)
		}
	}
	r.Account, r.Amount, r.Received = nums[0], nums[1], nums[2]
	r.Created, r.Due = time.Unix(nums[3], 0).UTC(), timeOrZero(nums[4])
	w, err := rd.ReadByte()
	if err != nil {
		return fail(err)
	}
	r.InWindow = w == 1
	return r, nil
}
