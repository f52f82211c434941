// Package mysqltest gives tests a throwaway database on the real MariaDB started by
// scripts/mariadb: sqlmock proves the code sends the SQL it wrote, only the server
// proves that SQL right.
//
// The server is named by CRONKIT_TEST_DSN (an account that may create databases and
// users, with no database in the path). Without it the test is skipped, unless
// CRONKIT_INTEGRATION=1, where a missing server fails the test so CI cannot pass by
// skipping.
package mysqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cronkit/cronkit/lib/mysql"
)

// Required reports whether integration dependencies must be present (CI).
func Required() bool { return os.Getenv("CRONKIT_INTEGRATION") == "1" }

// Need skips (or, when Required, fails) the test for a missing dependency.
func Need(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("CRONKIT_INTEGRATION=1 but %s is not available", what)
	}
	t.Skipf("%s is not available (set it up with scripts/mariadb start, or run make test)", what)
}

// AdminDSN returns CRONKIT_TEST_DSN or skips/fails the test.
func AdminDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("CRONKIT_TEST_DSN")
	if dsn == "" {
		Need(t, "CRONKIT_TEST_DSN (a MariaDB server)")
	}
	return dsn
}

// DB is a fresh database with every migration applied, dropped when the test ends.
type DB struct {
	*sql.DB
	// Name is the database's name; DSN reaches it with the admin account.
	Name string
	DSN  string
}

// New creates the database, migrates it and returns a pool on it.
func New(t testing.TB) *DB {
	t.Helper()
	d := NewEmpty(t)
	if err := mysql.Migrate(context.Background(), d.DB, "up", io.Discard); err != nil {
		t.Fatalf("migrate %s: %v", d.Name, err)
	}
	return d
}

// NewEmpty creates the database without migrating it.
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	admin := AdminDSN(t)
	cfg, err := gomysql.ParseDSN(admin)
	if err != nil {
		t.Fatalf("CRONKIT_TEST_DSN: %v", mysql.ErrBadDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, err := mysql.Open(ctx, admin, mysql.Options{})
	if err != nil {
		t.Fatalf("open admin: %v", err)
	}
	t.Cleanup(func() { _ = root.Close() })
	name := "t_" + strings.ToLower(sanitize(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	name += "_" + randomHex(4)
	if _, err := root.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := root.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	db, err := mysql.Open(ctx, dsn, mysql.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return &DB{DB: db, Name: name, DSN: dsn}
}

// SelectOnlyUser creates a user that may only SELECT from d and returns its DSN, for
// proving that dry runs never write.
func (d *DB) SelectOnlyUser(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	user := "ro_" + randomHex(6)
	pw := randomHex(12)
	cfg, err := gomysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatalf("parse dsn: %v", mysql.ErrBadDSN)
	}
	host := "127.0.0.1"
	for _, q := range []string{
		"CREATE USER '" + user + "'@'" + host + "' IDENTIFIED BY '" + pw + "'",
		"GRANT SELECT ON `" + d.Name + "`.* TO '" + user + "'@'" + host + "'",
	} {
		if _, err := d.ExecContext(ctx, q); err != nil {
			t.Fatalf("select-only user: %v", err)
		}
	}
	t.Cleanup(func() { _, _ = d.ExecContext(context.Background(), "DROP USER '"+user+"'@'"+host+"'") })
	cfg.User, cfg.Passwd = user, pw
	return cfg.FormatDSN()
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
