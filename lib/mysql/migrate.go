package mysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"time"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations is the schema, embedded in the binary so that `cronkit migrate` needs no
// files on the host. Each job owns a range of versions: 1-9 the run contract, 10-19
// mail, 20-39 billing, 40-49 abuse, 50-59 the state-machine library (lib/cases),
// 60-79 drip, 80-99 reconcile. Because each range grows on its own, a release can
// bring a migration numbered below one a database already has (billing's 22 after
// the library's 50): goose applies those out of order, and CheckSchema wants every
// embedded migration applied, not just the newest.
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}

// Migrate applies ("up"), reverts one ("down") or lists ("status") migrations and
// writes one line per migration to w. It holds the lock of the job "migrate"
// (cronkit.<schema>.migrate, see LockName) so two deploys never migrate one database
// at once.
func Migrate(ctx context.Context, db *sql.DB, command string, w io.Writer) error {
	p, err := goose.NewProvider(goose.DialectMySQL, db, Migrations(), goose.WithAllowOutofOrder(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	lock, err := AcquireJobLock(ctx, db, "migrate", 60*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Release() }()
	switch command {
	case "up":
		res, err := p.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(w, "up   %05d %s (%s)\n", r.Source.Version, r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		if len(res) == 0 {
			fmt.Fprintln(w, "schema up to date")
		}
	case "down":
		r, err := p.Down(ctx)
		if r != nil {
			fmt.Fprintf(w, "down %05d %s\n", r.Source.Version, r.Source.Path)
		}
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
	case "status":
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		for _, s := range st {
			at := "-"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%-8s %05d %-40s %s\n", s.State, s.Source.Version, s.Source.Path, at)
		}
	default:
		return fmt.Errorf("migrate %q: want up, down or status", command)
	}
	return nil
}

// ErrSchema means the database's schema is not the one this binary was built for:
// an upgrade whose `cronkit migrate` has not run yet, or an older binary pointed at a
// newer schema. It is a configuration error (exit 2), not a failed run.
var ErrSchema = errors.New("database schema does not match this binary")

// schemaError names the versions and what to do.
type schemaError struct {
	have, want int64 // the newest applied, the newest embedded
	missing    int64 // the oldest embedded migration not applied (0: none)
}

func (e schemaError) Error() string {
	switch {
	case e.have < e.want:
		return fmt.Sprintf("database at migration %d, this binary needs %d: run cronkit migrate", e.have, e.want)
	case e.missing != 0:
		return fmt.Sprintf("database at migration %d lacks migration %d, which this binary needs: run cronkit migrate", e.have, e.missing)
	}
	return fmt.Sprintf("database at migration %d, newer than this binary's %d: run the binary that migrated it", e.have, e.want)
}

func (e schemaError) Is(target error) bool { return target == ErrSchema }

// embeddedVersions are the migrations in this binary, in order.
func embeddedVersions() ([]int64, error) {
	entries, err := fs.ReadDir(Migrations(), ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	var vs []int64
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrations: %s: %w", e.Name(), err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, errors.New("migrations: none embedded")
	}
	slices.Sort(vs)
	return vs, nil
}

// SchemaVersion is the newest migration embedded in this binary.
func SchemaVersion() (int64, error) {
	vs, err := embeddedVersions()
	if err != nil {
		return 0, err
	}
	return vs[len(vs)-1], nil
}

// sqlAppliedVersions is goose's own bookkeeping: the migrations applied.
const sqlAppliedVersions = `SELECT DISTINCT version_id FROM goose_db_version WHERE is_applied = 1 AND version_id > 0`

// CheckSchema returns ErrSchema unless the database has exactly the binary's
// migrations applied. It only reads, so it works in a dry run with a SELECT-only user.
func CheckSchema(ctx context.Context, db *sql.DB) error {
	want, err := embeddedVersions()
	if err != nil {
		return err
	}
	rows, err := db.QueryContext(ctx, sqlAppliedVersions)
	if IsNoSuchTable(err) {
		return schemaError{have: 0, want: want[len(want)-1]}
	}
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	defer rows.Close()
	applied := map[int64]bool{}
	var have int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		applied[v] = true
		have = max(have, v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	e := schemaError{have: have, want: want[len(want)-1]}
	for _, v := range want {
		if !applied[v] {
			e.missing = v
			return e
		}
	}
	if have > e.want {
		return e
	}
	return nil
}
