package mysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations is the schema, embedded in the binary so that `jobs migrate` needs no
// files on the host. Each job owns a range of versions: 1-9 the run contract, 10-19
// mail, 20-39 billing, 40-59 abuse, 60-79 drip, 80-99 reconcile.
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
	p, err := goose.NewProvider(goose.DialectMySQL, db, Migrations())
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
// an upgrade whose `jobs migrate` has not run yet, or an older binary pointed at a
// newer schema. It is a configuration error (exit 2), not a failed run.
var ErrSchema = errors.New("database schema does not match this binary")

// schemaError names both versions and what to do.
type schemaError struct{ have, want int64 }

func (e schemaError) Error() string {
	if e.have < e.want {
		return fmt.Sprintf("database at migration %d, this binary needs %d: run jobs migrate", e.have, e.want)
	}
	return fmt.Sprintf("database at migration %d, newer than this binary's %d: run the binary that migrated it", e.have, e.want)
}

func (e schemaError) Is(target error) bool { return target == ErrSchema }

// SchemaVersion is the newest migration embedded in this binary.
func SchemaVersion() (int64, error) {
	entries, err := fs.ReadDir(Migrations(), ".")
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	var newest int64
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil {
			return 0, fmt.Errorf("migrations: %s: %w", e.Name(), err)
		}
		newest = max(newest, v)
	}
	if newest == 0 {
		return 0, errors.New("migrations: none embedded")
	}
	return newest, nil
}

// sqlAppliedVersion is goose's own bookkeeping: the newest migration applied.
const sqlAppliedVersion = `SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied = 1`

// CheckSchema returns ErrSchema unless the database is at exactly the binary's
// migration. It only reads, so it works in a dry run with a SELECT-only user.
func CheckSchema(ctx context.Context, db *sql.DB) error {
	want, err := SchemaVersion()
	if err != nil {
		return err
	}
	var have int64
	if err := db.QueryRowContext(ctx, sqlAppliedVersion).Scan(&have); err != nil {
		if IsNoSuchTable(err) {
			return schemaError{0, want}
		}
		return fmt.Errorf("read schema version: %w", err)
	}
	if have != want {
		return schemaError{have, want}
	}
	return nil
}
