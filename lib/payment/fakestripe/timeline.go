package fakestripe

import (
	"slices"
	"sort"
)

// timeline keeps one kind of object in creation order, so that a list page (created
// bounds, starting_after) is a binary search and a walk of one page, not a sort of
// every object per request: reconciliation pages through a million PaymentIntents.
// Objects usually arrive in order (the fake's clock moves forward); one seeded out of
// order marks the timeline for a single sort before the next read. Caller holds mu.
type timeline[T interface{ sortKey() sortKey }] struct {
	items  []T // oldest first, once sorted
	sorted bool
}

func (l *timeline[T]) add(v T) {
	if n := len(l.items); n == 0 {
		l.sorted = true
	} else if l.sorted && l.items[n-1].sortKey().newerThan(v.sortKey()) {
		l.sorted = false
	}
	l.items = append(l.items, v)
}

func (l *timeline[T]) ensureSorted() {
	if l.sorted {
		return
	}
	slices.SortStableFunc(l.items, func(a, b T) int { return -newestFirst(a.sortKey(), b.sortKey()) })
	l.sorted = true
}

// lowerBound is the index of the first item whose key is not older than k.
func (l *timeline[T]) lowerBound(k sortKey) int {
	return sort.Search(len(l.items), func(i int) bool { return !k.newerThan(l.items[i].sortKey()) })
}

// createdBounds is the index range [lo, hi) of items the created filter admits.
func (l *timeline[T]) createdBounds(f createdFilter) (int, int) {
	lo, hi := 0, len(l.items)
	created := func(i int) int64 { return l.items[i].sortKey().created }
	if f.hasGTE {
		lo = max(lo, sort.Search(len(l.items), func(i int) bool { return created(i) >= f.gte }))
	}
	if f.hasGT {
		lo = max(lo, sort.Search(len(l.items), func(i int) bool { return created(i) > f.gt }))
	}
	if f.hasLT {
		hi = min(hi, sort.Search(len(l.items), func(i int) bool { return created(i) >= f.lt }))
	}
	if f.hasLTE {
		hi = min(hi, sort.Search(len(l.items), func(i int) bool { return created(i) > f.lte }))
	}
	return lo, max(lo, hi)
}

// page cuts one page, newest first, as Stripe lists: items the created filter and
// keep admit, after starting_after or before ending_before (whose sort keys cursor
// finds).
func (l *timeline[T]) page(q listQuery, keep func(T) bool, cursor func(id string) (sortKey, bool), object string) ([]T, bool, *response) {
	l.ensureSorted()
	lo, hi := l.createdBounds(q.created)
	if q.endingBefore != "" {
		c, ok := cursor(q.endingBefore)
		if !ok {
			r := notFound("ending_before", object, q.endingBefore)
			return nil, false, &r
		}
		// The limit items just newer than the cursor, returned newest first.
		from := max(lo, sort.Search(len(l.items), func(i int) bool { return l.items[i].sortKey().newerThan(c) }))
		var out []T
		for i := from; i < hi && len(out) <= q.limit; i++ {
			if keep(l.items[i]) {
				out = append(out, l.items[i])
			}
		}
		more := len(out) > q.limit
		if more {
			out = out[:q.limit]
		}
		slices.Reverse(out)
		return out, more, nil
	}
	if q.startingAfter != "" {
		c, ok := cursor(q.startingAfter)
		if !ok {
			r := notFound("starting_after", object, q.startingAfter)
			return nil, false, &r
		}
		hi = min(hi, l.lowerBound(c))
	}
	var out []T
	for i := hi - 1; i >= lo && len(out) <= q.limit; i-- {
		if keep(l.items[i]) {
			out = append(out, l.items[i])
		}
	}
	if len(out) > q.limit {
		return out[:q.limit], true, nil
	}
	return out, false, nil
}
