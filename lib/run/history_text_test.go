package run

import (
	"strings"
	"testing"
)

func TestShortCountsCutsAtAComma(t *testing.T) {
	short := `{"charges_rated":12}`
	if got := shortCounts(short); got != short {
		t.Errorf("shortCounts(%q) = %q, want it whole", short, got)
	}
	long := `{"findings_open":13,"findings_open_account_mismatch":1,"findings_open_amount_mismatch":1,"findings_open_balance_drift":2}`
	got := shortCounts(long)
	if want := `{"findings_open":13,"findings_open_account_mismatch":1,…}`; got != want {
		t.Errorf("shortCounts = %q, want %q", got, want)
	}
	if len(got) > countsWidth+len(",…}") || !strings.HasPrefix(long, strings.TrimSuffix(got, ",…}")) {
		t.Errorf("shortCounts = %q: not a prefix of the counts within %d bytes", got, countsWidth)
	}
}
