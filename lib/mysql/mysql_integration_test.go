package mysql_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/pressly/goose/v3"
)

func TestLockExclusive(t *testing.T) {
	d := mysqltest.NewEmpty(t)
	ctx := context.Background()
	name := "cronkit.test." + d.Name
	l1, err := mysql.AcquireLock(ctx, d.DB, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l1.Alive(ctx); err != nil {
		t.Fatalf("alive: %v", err)
	}
	start := time.Now()
	_, err = mysql.AcquireLock(ctx, d.DB, name, 0)
	if !errors.Is(err, mysql.ErrLocked) {
		t.Fatalf("second lock: got %v, want ErrLocked", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("wait 0 should fail at once, took %s", time.Since(start))
	}
	// A waiter gets it once the holder releases.
	done := make(chan error, 1)
	go func() {
		l, err := mysql.AcquireLock(ctx, d.DB, name, 10*time.Second)
		if err == nil {
			err = l.Release()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}

func TestReadOnlySessionRefusesWrites(t *testing.T) {
	d := mysqltest.New(t)
	ctx := context.Background()
	ro, err := mysql.Open(ctx, d.DSN, mysql.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var n int
	if err := ro.QueryRowContext(ctx, "SELECT COUNT(*) FROM job_runs").Scan(&n); err != nil {
		t.Fatalf("read in read-only session: %v", err)
	}
	_, err = ro.ExecContext(ctx, "INSERT INTO job_runs (id, job, host, version, args, started_at, status) VALUES ('x','j','h','v','', NOW(), 'ok')")
	if err == nil || !strings.Contains(err.Error(), "READ ONLY") {
		t.Fatalf("insert in read-only session: got %v, want a READ ONLY error", err)
	}
}

func TestMigrateUpDownStatus(t *testing.T) {
	d := mysqltest.NewEmpty(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := mysql.Migrate(ctx, d.DB, "up", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "00001") {
		t.Fatalf("up output lacks first migration: %q", out.String())
	}
	out.Reset()
	if err := mysql.Migrate(ctx, d.DB, "up", &out); err != nil || !strings.Contains(out.String(), "up to date") {
		t.Fatalf("second up: %v %q", err, out.String())
	}
	out.Reset()
	if err := mysql.Migrate(ctx, d.DB, "status", &out); err != nil || strings.Contains(out.String(), "pending") {
		t.Fatalf("status after up: %v %q", err, out.String())
	}
	out.Reset()
	if err := mysql.Migrate(ctx, d.DB, "down", &out); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := mysql.Migrate(ctx, d.DB, "status", &out); err != nil || !strings.Contains(out.String(), "pending") {
		t.Fatalf("status after down: %v %q", err, out.String())
	}
	if err := mysql.Migrate(ctx, d.DB, "sideways", &out); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestOpenErrorsNeverShowPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := mysql.Open(ctx, "u:s3cretpw@tcp(127.0.0.1:1)/db", mysql.Options{ConnectTimeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "s3cretpw") {
		t.Fatalf("connect error: %v", err)
	}
	_, err = mysql.Open(ctx, "u:s3cretpw@tcp(127.0.0.1:1/db?bad", mysql.Options{})
	if !errors.Is(err, mysql.ErrBadDSN) || strings.Contains(err.Error(), "s3cretpw") {
		t.Fatalf("parse error: %v", err)
	}
}

func TestCheckSchemaNamesBothVersions(t *testing.T) {
	d := mysqltest.NewEmpty(t)
	ctx := context.Background()
	want, err := mysql.SchemaVersion()
	if err != nil || want < 40 {
		t.Fatalf("SchemaVersion = %d, %v", want, err)
	}
	err = mysql.CheckSchema(ctx, d.DB)
	if !errors.Is(err, mysql.ErrSchema) || err.Error() != fmt.Sprintf("database at migration 0, this binary needs %d: run cronkit migrate", want) {
		t.Fatalf("unmigrated database: %v", err)
	}
	if err := mysql.Migrate(ctx, d.DB, "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := mysql.CheckSchema(ctx, d.DB); err != nil {
		t.Fatalf("migrated database: %v", err)
	}
	if err := mysql.Migrate(ctx, d.DB, "down", io.Discard); err != nil {
		t.Fatal(err)
	}
	err = mysql.CheckSchema(ctx, d.DB)
	if !errors.Is(err, mysql.ErrSchema) || !strings.Contains(err.Error(), fmt.Sprintf("this binary needs %d: run cronkit migrate", want)) {
		t.Fatalf("one migration behind: %v", err)
	}
	if err := mysql.Migrate(ctx, d.DB, "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB.ExecContext(ctx, "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)", want+1); err != nil {
		t.Fatal(err)
	}
	err = mysql.CheckSchema(ctx, d.DB)
	if !errors.Is(err, mysql.ErrSchema) || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("newer database: %v", err)
	}
	if _, err := d.DB.ExecContext(ctx, "DELETE FROM goose_db_version WHERE version_id > ?", want); err != nil {
		t.Fatal(err)
	}
	if err := mysql.CheckSchema(ctx, d.DB); err != nil {
		t.Fatalf("migrated again: %v", err)
	}
	// A migration of one job's range that came after another job's newer one (billing's
	// 22 after the library's 50) is pending though the newest is applied.
	if _, err := d.DB.ExecContext(ctx, "DELETE FROM goose_db_version WHERE version_id = 2"); err != nil {
		t.Fatal(err)
	}
	err = mysql.CheckSchema(ctx, d.DB)
	if !errors.Is(err, mysql.ErrSchema) || err.Error() != fmt.Sprintf("database at migration %d lacks migration 2, which this binary needs: run cronkit migrate", want) {
		t.Fatalf("a lower migration missing: %v", err)
	}
}

// A database of the previous release (the library's 50 applied, billing's newer 22
// not yet written) migrates forward: goose applies the lower version out of order.
func TestMigrateAppliesALowerVersionAddedLater(t *testing.T) {
	d := mysqltest.NewEmpty(t)
	ctx := context.Background()
	p, err := goose.NewProvider(goose.DialectMySQL, d.DB, mysql.Migrations(), goose.WithAllowOutofOrder(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 21); err != nil {
		t.Fatal(err)
	}
	var later []int64
	for _, s := range p.ListSources() {
		// The previous release: abuse's range and the library's 50, not yet billing's
		// 22 nor what depends on it (reconcile's 85 reads collect's table).
		if s.Version >= 40 && s.Version <= 50 {
			later = append(later, s.Version)
			if _, err := p.ApplyVersion(ctx, s.Version, true); err != nil {
				t.Fatalf("apply %d: %v", s.Version, err)
			}
		}
	}
	if len(later) == 0 {
		t.Fatal("no migrations in 40-50")
	}
	err = mysql.CheckSchema(ctx, d.DB)
	if !errors.Is(err, mysql.ErrSchema) || !strings.Contains(err.Error(), "database at migration 50") {
		t.Fatalf("before: %v", err)
	}
	var out bytes.Buffer
	if err := mysql.Migrate(ctx, d.DB, "up", &out); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "00022") || !strings.Contains(out.String(), "00085") {
		t.Fatalf("22 not applied:\n%s", out.String())
	}
	if err := mysql.CheckSchema(ctx, d.DB); err != nil {
		t.Fatalf("after: %v", err)
	}
}
