package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrLocked means another session holds the named lock: another run of the same job
// is in progress, on this host or another.
var ErrLocked = errors.New("lock held by another session")

// Lock is a MySQL named lock (GET_LOCK) held on a connection of its own, so it lives
// exactly as long as that session: if the process dies, the server releases it.
type Lock struct {
	Name string
	conn *sql.Conn
}

// AcquireLock takes GET_LOCK(name). With wait 0 it fails at once with ErrLocked when
// the lock is held; otherwise it waits up to wait (whole seconds, rounded up).
func AcquireLock(ctx context.Context, db *sql.DB, name string, wait time.Duration) (*Lock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock %s: connection: %w", name, err)
	}
	secs := int64(math.Ceil(wait.Seconds()))
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, secs).Scan(&got); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if !got.Valid || got.Int64 != 1 {
		_ = conn.Close()
		return nil, fmt.Errorf("lock %s: %w", name, ErrLocked)
	}
	return &Lock{Name: name, conn: conn}, nil
}

// Alive checks that the session holding the lock is still up (and so the lock held).
func (l *Lock) Alive(ctx context.Context) error {
	var mine sql.NullInt64
	err := l.conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", l.Name).Scan(&mine)
	if err != nil {
		return fmt.Errorf("lock %s: %w", l.Name, err)
	}
	if !mine.Valid || mine.Int64 != 1 {
		return fmt.Errorf("lock %s: lost", l.Name)
	}
	return nil
}

// Release frees the lock and its connection. It uses its own short context so that a
// cancelled run still releases promptly.
func (l *Lock) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", l.Name)
	cerr := l.conn.Close()
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.Name, err)
	}
	return cerr
}
