package mysql_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

func TestLockNameSpellsOutAShortSchema(t *testing.T) {
	if got := mysql.LockName("cronkit", "billing"); got != "cronkit.cronkit.billing" {
		t.Errorf("LockName = %q", got)
	}
	// Exactly 64 bytes is still spelt out.
	schema := strings.Repeat("s", mysql.MaxLockName-len("cronkit..abuse"))
	if got := mysql.LockName(schema, "abuse"); got != "cronkit."+schema+".abuse" {
		t.Errorf("LockName of a name of exactly 64 = %q", got)
	}
}

// A schema name too long for the 64-byte limit is shortened the documented way, and
// the result is pinned: a different name for the same schema in a later version would
// let an old and a new binary run one job at once.
func TestLockNameHashesALongSchema(t *testing.T) {
	const schema = "deployment_with_a_rather_long_database_name_for_the_eu_west_regi" // 64 bytes, MySQL's longest
	const want = "cronkit.deployment_with_a_rather_long_d~2bbdd74088a5cfc5.billing"
	got := mysql.LockName(schema, "billing")
	if got != want {
		t.Errorf("LockName = %q, want %q", got, want)
	}
	if len(got) != mysql.MaxLockName || mysql.LockName(schema, "billing") != got {
		t.Errorf("LockName = %q (%d bytes): want 64 bytes, the same on every call", got, len(got))
	}

	// Two long schemas sharing their first 63 bytes still get two locks.
	other := schema[:len(schema)-1] + "X"
	if o := mysql.LockName(other, "billing"); o == got || len(o) > mysql.MaxLockName {
		t.Errorf("schemas differing in their last byte: %q and %q", got, o)
	}

	// Multi-byte characters are never cut in two.
	accented := strings.Repeat("é", 30) // 60 bytes
	a := mysql.LockName(accented, "billing")
	if len(a) > mysql.MaxLockName || !utf8.ValidString(a) || !strings.HasSuffix(a, ".billing") {
		t.Errorf("LockName of an accented schema = %q (%d bytes)", a, len(a))
	}

	// Even a job name too long to leave room for the schema gives a stable,
	// distinct name within the limit.
	long := strings.Repeat("j", 60)
	l1, l2 := mysql.LockName("a", long), mysql.LockName("b", long)
	if len(l1) > mysql.MaxLockName || l1 == l2 || l1 != mysql.LockName("a", long) || !strings.HasPrefix(l1, "cronkit.~") {
		t.Errorf("LockName with a 60-byte job: %q, %q", l1, l2)
	}
}

// Two deployments (two databases) on one server run the same job at once; two runs in
// one database still exclude each other.
func TestJobLocksArePerDatabase(t *testing.T) {
	a, b := mysqltest.NewEmpty(t), mysqltest.NewEmpty(t)
	ctx := context.Background()
	la, err := mysql.AcquireJobLock(ctx, a.DB, "billing", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release()
	if la.Name != mysql.LockName(a.Name, "billing") {
		t.Errorf("lock %q, want LockName(%q, billing) = %q", la.Name, a.Name, mysql.LockName(a.Name, "billing"))
	}
	lb, err := mysql.AcquireJobLock(ctx, b.DB, "billing", 0)
	if err != nil {
		t.Fatalf("another database's billing: %v (want its own lock)", err)
	}
	defer lb.Release()
	if _, err := mysql.AcquireJobLock(ctx, a.DB, "billing", 0); !errors.Is(err, mysql.ErrLocked) {
		t.Fatalf("the same database's billing again: %v, want ErrLocked", err)
	}
	la2, err := mysql.AcquireJobLock(ctx, a.DB, "abuse", 0)
	if err != nil {
		t.Fatalf("another job in the same database: %v", err)
	}
	defer la2.Release()
}

func TestJobLockNeedsADatabase(t *testing.T) {
	ctx := context.Background()
	db, err := mysql.Open(ctx, mysqltest.AdminDSN(t), mysql.Options{}) // no database in the path
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := mysql.AcquireJobLock(ctx, db, "billing", 0); err == nil || !strings.Contains(err.Error(), "no database selected") {
		t.Fatalf("AcquireJobLock without a database: %v", err)
	}
}
