package mysql

import (
	"context"
	"database/sql"
	"embed"
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
