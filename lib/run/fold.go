package run

import (
	"fmt"
	"math/big"
	"reflect"
	"sort"
	"strings"
)

// foldMin is the shortest run of like actions the text report folds into one line:
// two lines stay two lines, a catch-up of 744 hours becomes one.
const foldMin = 3

// fold returns actions as the text report shows them: every run of foldMin or more
// consecutive like actions (same kind, same field keys, equal facts, one Seq field
// strictly increasing) becomes one line whose subject spans the first and last
// subject with the run's length, and whose detail sums the Tally, Money and Amounts
// fields (after the items' detail when they all had the same). as must be sorted. JSON never folds: programs get every item.
func fold(as []Action) []Action {
	out := make([]Action, 0, len(as))
	for i := 0; i < len(as); {
		j := i + 1
		if seqIndex(as[i]) >= 0 {
			for j < len(as) && alike(as[j-1], as[j]) {
				j++
			}
		}
		if j-i >= foldMin {
			if f, ok := foldRun(as[i:j]); ok {
				out = append(out, f)
				i = j
				continue
			}
		}
		out = append(out, as[i:j]...)
		i = j
	}
	return out
}

// seqIndex is the index of a's only Seq field, or -1 when it has none or several.
func seqIndex(a Action) int {
	at := -1
	for i, f := range a.Fields {
		if f.role == roleSeq {
			if at >= 0 {
				return -1
			}
			at = i
		}
	}
	return at
}

// alike reports whether b continues a's run: same kind, the same keys with the same
// roles in the same order, equal facts, and a later Seq value.
func alike(a, b Action) bool {
	if a.Kind != b.Kind || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i, fa := range a.Fields {
		fb := b.Fields[i]
		if fa.Key != fb.Key || fa.role != fb.role {
			return false
		}
		switch fa.role {
		case roleFact:
			if !reflect.DeepEqual(fa.Value, fb.Value) {
				return false
			}
		case roleSeq:
			// Seq values are RFC 3339 in UTC, whose text order is time order.
			sa, _ := fa.Value.(string)
			sb, _ := fb.Value.(string)
			if sb <= sa {
				return false
			}
		}
	}
	return true
}

// foldRun makes run's one line; false when a value cannot be summed (then the run
// is shown unfolded rather than with a wrong total).
func foldRun(run []Action) (Action, bool) {
	first, last := run[0], run[len(run)-1]
	var parts []string
	for i, f := range first.Fields {
		switch f.role {
		case roleTally:
			var n int64
			for _, a := range run {
				v, ok := a.Fields[i].Value.(int64)
				if !ok {
					return Action{}, false
				}
				n += v
			}
			if n != 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, f.Key))
			}
		case roleDecimal:
			var ds []string
			for _, a := range run {
				v, ok := a.Fields[i].Value.(string)
				if !ok {
					return Action{}, false
				}
				ds = append(ds, v)
			}
			sum, ok := sumDecimals(ds)
			if !ok {
				return Action{}, false
			}
			label := sum
			if c, ok := first.Field("currency").(string); ok && c != "" {
				label = c + " " + sum
			}
			if f.Key != "amount" {
				label = f.Key + " " + label
			}
			parts = append(parts, label)
		case roleAmounts:
			per := map[string][]string{}
			for _, a := range run {
				m, ok := a.Fields[i].Value.(map[string]string)
				if !ok {
					return Action{}, false
				}
				for c, v := range m {
					per[c] = append(per[c], v)
				}
			}
			currencies := make([]string, 0, len(per))
			for c := range per {
				currencies = append(currencies, c)
			}
			sort.Strings(currencies)
			for _, c := range currencies {
				sum, ok := sumDecimals(per[c])
				if !ok {
					return Action{}, false
				}
				parts = append(parts, c+" "+sum)
			}
		}
	}
	detail := strings.Join(parts, ", ")
	if sameDetail(run) && first.Detail != "" {
		// Every item said the same: say it once, then the sums.
		if detail == "" {
			detail = first.Detail
		} else {
			detail = "each " + first.Detail + "; total " + detail
		}
	}
	return Action{
		Kind:    first.Kind,
		Subject: fmt.Sprintf("%s .. %s (%d)", first.Subject, afterCommonWords(first.Subject, last.Subject), len(run)),
		Detail:  detail,
	}, true
}

func sameDetail(run []Action) bool {
	for _, a := range run[1:] {
		if a.Detail != run[0].Detail {
			return false
		}
	}
	return true
}

// afterCommonWords drops from b the leading words it shares with a: "hour
// 2025-04-01T02:00Z", "hour 2025-04-30T23:00Z" gives "2025-04-30T23:00Z".
func afterCommonWords(a, b string) string {
	wa, wb := strings.Fields(a), strings.Fields(b)
	i := 0
	for i < len(wa) && i < len(wb)-1 && wa[i] == wb[i] {
		i++
	}
	return strings.Join(wb[i:], " ")
}

// sumDecimals adds exact decimal strings ("0.511667", "-3", "12.5") and renders the
// sum with as many decimals as the most precise term: no float ever sees money.
func sumDecimals(ds []string) (string, bool) {
	sum := new(big.Rat)
	scale := 0
	for _, d := range ds {
		if !isDecimal(d) {
			return "", false
		}
		if _, frac, ok := strings.Cut(d, "."); ok {
			scale = max(scale, len(frac))
		}
		r, ok := new(big.Rat).SetString(d)
		if !ok {
			return "", false
		}
		sum.Add(sum, r)
	}
	return sum.FloatString(scale), true
}

// isDecimal accepts an optional sign, digits and at most one point with digits
// after it: what big.Rat's exponents and fractions must not sneak past.
func isDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	intPart, frac, hasPoint := strings.Cut(s, ".")
	if intPart == "" || (hasPoint && frac == "") {
		return false
	}
	for _, part := range []string{intPart, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}
