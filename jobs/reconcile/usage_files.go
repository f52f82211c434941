package reconcile

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Staging in temporary files, for a session that may not create a TEMPORARY table (a
// dry run's READ ONLY session, a SELECT-only user): the orchestrator's side is
// sorted in runs of stageRunRows in memory, each run written to a file, and the runs
// merged back in key order, rows with the same key kept once (as INSERT IGNORE
// keeps them). Memory is one run; disk is the side's size.

// stageRunRows is how many rows one sorted run holds in memory (about 10 MiB).
const stageRunRows = 64 * 1024

// stagedRow is one row of the orchestrator's side, as the staging table holds it.
type stagedRow struct {
	resource string
	kind     resourceKind
	event    bool
	at       int64 // Unix seconds; 0 (the epoch) for unknown
	ord      uint8
	eventID  string
	what, cs string
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareStaged orders rows as the staging table's primary key does: resource (as
// bytes), kind, inventory before events, time, order within a second, event id.
func compareStaged(a, b *stagedRow) int {
	if c := strings.Compare(a.resource, b.resource); c != 0 {
		return c
	}
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if c := cmp.Compare(b2i(a.event), b2i(b.event)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.at, b.at); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ord, b.ord); c != 0 {
		return c
	}
	return strings.Compare(a.eventID, b.eventID)
}

func (s *stagedRow) orch() orchRow {
	r := orchRow{kind: s.kind, event: s.event, what: s.what, cs: s.cs}
	if s.at > 0 { // the epoch: unknown
		r.at = time.Unix(s.at, 0).UTC()
	}
	return r
}

// fileStage is the files staging.
type fileStage struct {
	dir     string
	runRows int
	buf     []stagedRow
	files   []*os.File
}

func (f *fileStage) add(_ context.Context, r stagedRow) error {
	f.buf = append(f.buf, r)
	if len(f.buf) >= f.runRows {
		return f.spill()
	}
	return nil
}

// sortBuf sorts the buffered rows and drops repeated keys.
func (f *fileStage) sortBuf() {
	slices.SortFunc(f.buf, func(a, b stagedRow) int { return compareStaged(&a, &b) })
	f.buf = slices.CompactFunc(f.buf, func(a, b stagedRow) bool { return compareStaged(&a, &b) == 0 })
}

// spill writes the buffered rows as one sorted run.
func (f *fileStage) spill() error {
	if len(f.buf) == 0 {
		return nil
	}
	f.sortBuf()
	file, err := os.CreateTemp(f.dir, "cronkit-reconcile-usage-*.run")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStaging, err)
	}
	f.files = append(f.files, file)
	w := bufio.NewWriterSize(file, 256<<10)
	var tmp [binary.MaxVarintLen64]byte
	str := func(s string) {
		n := binary.PutUvarint(tmp[:], uint64(len(s)))
		_, _ = w.Write(tmp[:n])
		_, _ = w.WriteString(s)
	}
	for i := range f.buf {
		r := &f.buf[i]
		str(r.resource)
		_ = w.WriteByte(byte(r.kind))
		_ = w.WriteByte(byte(b2i(r.event)))
		n := binary.PutVarint(tmp[:], r.at)
		_, _ = w.Write(tmp[:n])
		_ = w.WriteByte(r.ord)
		str(r.eventID)
		str(r.what)
		str(r.cs)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("usage check: write staging run: %w", err)
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("usage check: rewind staging run: %w", err)
	}
	f.buf = f.buf[:0]
	return nil
}

// finish sorts a side that fits one run in memory (it never touches the disk), or
// writes the last run.
func (f *fileStage) finish(context.Context) error {
	if len(f.files) == 0 {
		f.sortBuf()
		return nil
	}
	err := f.spill()
	f.buf = nil
	return err
}

// source returns the staged rows in key order: the run in memory, or the runs on
// disk merged.
func (f *fileStage) source(context.Context) (orchSource, error) {
	if len(f.files) == 0 {
		return &memSource{rows: f.buf}, nil
	}
	m := &mergeSource{}
	for _, file := range f.files {
		r := &runReader{r: bufio.NewReaderSize(file, 64<<10)}
		if r.next() {
			m.h = append(m.h, r)
		} else if r.err != nil {
			return nil, r.err
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// close removes the runs.
func (f *fileStage) close() {
	for _, file := range f.files {
		_ = file.Close()
		_ = os.Remove(file.Name())
	}
	f.files, f.buf = nil, nil
}

// orchSource is the orchestrator's side in key order, one row at a time.
type orchSource interface {
	// peek returns the next row's resource; false at the end or after an error.
	peek() (string, bool)
	// take consumes the row peek announced.
	take() orchRow
	err() error
}

// memSource is a sorted run still in memory.
type memSource struct {
	rows []stagedRow
	i    int
}

func (m *memSource) peek() (string, bool) {
	if m.i >= len(m.rows) {
		return "", false
	}
	return m.rows[m.i].resource, true
}

func (m *memSource) take() orchRow {
	r := m.rows[m.i].orch()
	m.i++
	return r
}

func (m *memSource) err() error { return nil }

// runReader reads one run file.
type runReader struct {
	r   *bufio.Reader
	cur stagedRow
	err error
}

func (r *runReader) str() string {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		r.err = err
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.err = err
	}
	return string(b)
}

func (r *runReader) byte() byte {
	b, err := r.r.ReadByte()
	if err != nil {
		r.err = err
	}
	return b
}

// next reads the next row into cur; false at the end (err nil) or on an error.
func (r *runReader) next() bool {
	if _, err := r.r.Peek(1); errors.Is(err, io.EOF) {
		return false
	}
	r.cur.resource = r.str()
	r.cur.kind = resourceKind(r.byte())
	r.cur.event = r.byte() == 1
	at, err := binary.ReadVarint(r.r)
	if err != nil && r.err == nil {
		r.err = err
	}
	r.cur.at = at
	r.cur.ord = r.byte()
	r.cur.eventID, r.cur.what, r.cur.cs = r.str(), r.str(), r.str()
	if r.err != nil {
		r.err = fmt.Errorf("usage check: read staging run: %w", r.err)
		return false
	}
	return true
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return compareStaged(&h[i].cur, &h[j].cur) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeSource merges the runs, keeping one row per key.
type mergeSource struct {
	h    runHeap
	last stagedRow
	have bool // last is set
	e    error
}

func (m *mergeSource) peek() (string, bool) {
	for m.e == nil && len(m.h) > 0 {
		top := m.h[0]
		if m.have && compareStaged(&top.cur, &m.last) == 0 {
			m.advance() // the same key from another run
			continue
		}
		return top.cur.resource, true
	}
	return "", false
}

func (m *mergeSource) take() orchRow {
	m.last, m.have = m.h[0].cur, true
	r := m.last.orch()
	m.advance()
	return r
}

func (m *mergeSource) advance() {
	top := m.h[0]
	if top.next() {
		heap.Fix(&m.h, 0)
		return
	}
	if top.err != nil {
		m.e = top.err
	}
	heap.Pop(&m.h)
}

func (m *mergeSource) err() error { return m.e }
