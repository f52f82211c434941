package billing

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/run"
)

// t0 is the tests' reference instant: March 2025 starts here (UTC).
var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

func hr(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func testCtx() context.Context {
	return run.WithInfo(context.Background(), run.Info{ID: "01TEST", Job: "billing"})
}

func execSQL(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func account(t *testing.T, db *sql.DB, id int64, currency string, customer string) {
	t.Helper()
	var cust any
	if customer != "" {
		cust = customer
	}
	execSQL(t, db, `INSERT INTO accounts (id, email, currency, created_at, stripe_customer_id) VALUES (?, ?, ?, ?, ?)`,
		id, fmt.Sprintf("a%d@example.com", id), currency, t0.AddDate(0, -1, 0), cust)
}

func price(t *testing.T, db *sql.DB, product, currency, unit string, from time.Time, to *time.Time) {
	t.Helper()
	execSQL(t, db, `INSERT INTO prices (product, currency, unit_price, valid_from, valid_to) VALUES (?, ?, ?, ?, ?)`,
		product, currency, unit, from, to)
}

func usage(t *testing.T, db *sql.DB, acct int64, resource, product string, h time.Time, qty string) {
	t.Helper()
	// Only the metering contract's columns: everything billing added has defaults.
	execSQL(t, db, `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (?, ?, ?, ?, ?)`,
		acct, resource, product, h, qty)
}

// rat parses a decimal exactly.
func rat(t *testing.T, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("bad decimal %q", s)
	}
	return r
}

// round6 rounds a non-negative rational half-up to 6 decimals and formats it as the
// database does: the expected amount, computed without SQL.
func round6(t *testing.T, r *big.Rat) string {
	t.Helper()
	scaled := new(big.Rat).Mul(r, big.NewRat(1_000_000, 1))
	scaled.Add(scaled, big.NewRat(1, 2))
	q := new(big.Int).Quo(scaled.Num(), scaled.Denom()) // floor for non-negative
	s := q.String()
	for len(s) < 7 {
		s = "0" + s
	}
	return s[:len(s)-6] + "." + s[len(s)-6:]
}

// charge is a charges row as tests compare it.
type charge struct {
	account  int64
	product  string
	hour     time.Time
	quantity string
	unit     string
	amount   string
	currency string
	status   string
	problem  string
	invoice  int64
}

func loadCharges(t *testing.T, db *sql.DB) map[string]charge {
	t.Helper()
	rows, err := db.Query(`SELECT account_id, product, hour, COALESCE(quantity, ''), COALESCE(unit_price, ''), COALESCE(amount, ''),
  COALESCE(currency, ''), status, COALESCE(problem, ''), COALESCE(invoice_id, 0) FROM charges`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]charge{}
	for rows.Next() {
		var c charge
		if err := rows.Scan(&c.account, &c.product, &c.hour, &c.quantity, &c.unit, &c.amount, &c.currency, &c.status, &c.problem, &c.invoice); err != nil {
			t.Fatal(err)
		}
		out[key(c.account, c.product, c.hour)] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func key(acct int64, product string, h time.Time) string {
	return fmt.Sprintf("%d/%s/%s", acct, product, h.UTC().Format(hourLayout))
}

func watermark(t *testing.T, db *sql.DB) string {
	t.Helper()
	st, err := loadRatingState(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if !st.watermark.Valid {
		return "none"
	}
	return fmtHour(st.watermark.Time)
}

// shape is a report's actions and problems as "kind subject" lines, sorted: what a
// dry run must predict of the real run.
func shape(rep *run.Report) []string {
	var out []string
	for _, a := range rep.Actions {
		out = append(out, "act "+a.Kind+" "+a.Subject)
	}
	for _, p := range rep.Problems {
		out = append(out, "problem "+p.Kind+" "+p.Subject)
	}
	sort.Strings(out)
	return out
}

func problems(rep *run.Report) string {
	var b strings.Builder
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "%s|%s|%s\n", p.Kind, p.Subject, p.Detail)
	}
	return b.String()
}

func hasProblem(rep *run.Report, kind, subject string) bool {
	for _, p := range rep.Problems {
		if p.Kind == kind && p.Subject == subject {
			return true
		}
	}
	return false
}

func newDB(t *testing.T) *mysqltest.DB { return mysqltest.New(t) }
