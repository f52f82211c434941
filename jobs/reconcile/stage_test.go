package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// randomRemotes is n objects in Stripe's order (newest first, not invoice order),
// with duplicate keys (an object listed in the window and fetched again) whose
// InWindow differs.
func randomRemotes(n int) []remote {
	rng := rand.New(rand.NewPCG(7, 11))
	out := make([]remote, 0, n+n/10)
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	for i := range n {
		r := remote{Invoice: rng.Int64N(int64(n/3 + 1)), Kind: kind(rng.IntN(4)), Attempt: rng.IntN(3), ID: fmt.Sprintf("pi_%06d", rng.IntN(n*2)*100000+i),
			Intent: "pi_x", Account: rng.Int64N(1000), Customer: "cus_1", Amount: rng.Int64N(100000) - 100, Received: rng.Int64N(5000),
			Currency: "EUR", Status: "succeeded", Code: "ünïcode ✓", PaymentMethod: "pm_card_visa",
			Created: base.Add(time.Duration(n-i) * time.Second), InWindow: rng.IntN(2) == 0}
		if r.Kind == kindMarker {
			r = remote{Invoice: r.Invoice, Kind: kindMarker, Created: time.Unix(0, 0).UTC()}
		}
		if r.Kind == kindDispute {
			r.Due = base.Add(7 * 24 * time.Hour)
		}
		out = append(out, r)
		if i%10 == 0 {
			dup := r
			dup.InWindow = !r.InWindow
			out = append(out, dup)
		}
	}
	return out
}

// expectSorted is what a stage must yield: sorted, one per key, in window if any
// copy was.
func expectSorted(rs []remote) []remote {
	s := slices.Clone(rs)
	slices.SortStableFunc(s, func(a, b remote) int { return compareRemote(&a, &b) })
	var out []remote
	for _, r := range s {
		if n := len(out); n > 0 && sameKey(&out[n-1], &r) {
			out[n-1].InWindow = out[n-1].InWindow || r.InWindow
			continue
		}
		out = append(out, r)
	}
	return out
}

func drain(t *testing.T, s stage) []remote {
	t.Helper()
	var out []remote
	for r, err := range s.Sorted(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func checkStage(t *testing.T, s stage, in []remote) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(in); i += 333 {
		if err := s.Add(ctx, in[i:min(i+333, len(in))]); err != nil {
			t.Fatal(err)
		}
	}
	got, want := drain(t, s), expectSorted(in)
	if len(got) != len(want) {
		t.Fatalf("yielded %d objects, want %d", len(got), len(want))
	}
	for i := range want {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Fatalf("object %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// The dry run's disk sort and the real run's staging table yield the same objects in
// the same order: the merge cannot tell them apart.
func TestDiskStageSortsAcrossRuns(t *testing.T) {
	s, err := newDiskStage(t.TempDir(), 700) // many runs to merge
	if err != nil {
		t.Fatal(err)
	}
	in := randomRemotes(5000)
	checkStage(t, s, in)
	if len(s.runs) < 7 {
		t.Errorf("%d runs: the test should merge several", len(s.runs))
	}
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the runs' directory outlived Close: %v", err)
	}
}

func TestTableStageSortsLikeTheDiskStage(t *testing.T) {
	db := mysqltest.New(t)
	s, err := newTableStage(context.Background(), db.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkStage(t, s, randomRemotes(3000))
}

func TestEmptyStages(t *testing.T) {
	s, err := newDiskStage(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := drain(t, s); len(got) != 0 {
		t.Errorf("empty disk stage yielded %v", got)
	}
}

func TestRemoteEncodingRoundTrips(t *testing.T) {
	for _, r := range randomRemotes(200) {
		b := encodeRemote(nil, &r)
		got, err := decodeRemote(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(r) {
			t.Fatalf("round trip of %+v: %+v %v", r, got, err)
		}
		// A record cut short is an error, never a silent end.
		if _, err := decodeRemote(bufio.NewReader(bytes.NewReader(b[:len(b)-1]))); err == nil {
			t.Fatalf("a truncated record decoded")
		}
	}
}
