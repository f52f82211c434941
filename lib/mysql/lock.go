package mysql

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

const (
	sqlCurrentSchema = "SELECT DATABASE()"
	sqlGetLock       = "SELECT GET_LOCK(?, ?)"
	sqlLockIsMine    = "SELECT IS_USED_LOCK(?) = CONNECTION_ID()"
	sqlReleaseLock   = "DO RELEASE_LOCK(?)"
)

// MaxLockName is the longest lock name MySQL takes (64 characters; MariaDB takes
// more). LockName keeps to 64 bytes, so a name fits whatever the characters.
const MaxLockName = 64

// lockHashLen is how many hex digits of SHA-256 stand for a schema name too long to
// spell out: 64 bits, so two schemas sharing the same long prefix do not collide.
const lockHashLen = 16

// LockName is the named lock of job in database schema: "cronkit.<schema>.<job>".
// Named locks are server-wide, so the schema keeps two deployments (two databases on
// one server) from blocking each other while two runs of one job in one database
// still exclude each other.
//
// A name longer than MaxLockName bytes keeps the start of the schema name and
// replaces the rest with "~" and the first 16 hex digits of the SHA-256 of the whole
// schema name, cut to fit exactly: "cronkit.<schema prefix>~<hash>.<job>". It is
// deterministic, so every binary of this version names the same lock for the same
// schema and job. (Should even that not fit, for a job name over 38 bytes, the name
// is "cronkit.~" and the SHA-256 of "<schema>.<job>", cut to 64.)
func LockName(schema, job string) string {
	name := "cronkit." + schema + "." + job
	if len(name) <= MaxLockName {
		return name
	}
	sum := sha256.Sum256([]byte(schema))
	tail := "~" + hex.EncodeToString(sum[:])[:lockHashLen] + "." + job
	keep := MaxLockName - len("cronkit.") - len(tail)
	if keep < 0 {
		all := sha256.Sum256([]byte(schema + "." + job))
		return ("cronkit.~" + hex.EncodeToString(all[:]))[:MaxLockName]
	}
	prefix := schema[:keep]
	for !utf8.ValidString(prefix) { // do not cut a character in two
		prefix = prefix[:len(prefix)-1]
	}
	return "cronkit." + prefix + tail
}

// ErrLocked means another session holds the named lock: another run of the same job
// is in progress, on this host or another.
var ErrLocked = errors.New("lock held by another session")

// Lock is a MySQL named lock (GET_LOCK) held on a connection of its own, so it lives
// exactly as long as that session: if the process dies, the server releases it.
type Lock struct {
	Name string
	conn *sql.Conn
}

// AcquireJobLock takes job's lock, LockName(schema, job), where schema is the database
// db's connections use (SELECT DATABASE(), so it follows the DSN). It waits as
// AcquireLock does; a connection with no database selected is an error.
func AcquireJobLock(ctx context.Context, db *sql.DB, job string, wait time.Duration) (*Lock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock for %s: connection: %w", job, err)
	}
	var schema sql.NullString
	if err := conn.QueryRowContext(ctx, sqlCurrentSchema).Scan(&schema); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("lock for %s: current database: %w", job, err)
	}
	if !schema.Valid || schema.String == "" {
		_ = conn.Close()
		return nil, fmt.Errorf("lock for %s: no database selected (name one in the DSN)", job)
	}
	return lockOn(ctx, conn, LockName(schema.String, job), wait)
}

// AcquireLock takes GET_LOCK(name). With wait 0 it fails at once with ErrLocked when
// the lock is held; otherwise it waits up to wait (whole seconds, rounded up). Jobs
// use AcquireJobLock, which names the lock after the database too.
func AcquireLock(ctx context.Context, db *sql.DB, name string, wait time.Duration) (*Lock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock %s: connection: %w", name, err)
	}
	return lockOn(ctx, conn, name, wait)
}

// lockOn takes the lock on conn, which it owns: closed on failure, kept by the Lock.
func lockOn(ctx context.Context, conn *sql.Conn, name string, wait time.Duration) (*Lock, error) {
	secs := int64(math.Ceil(wait.Seconds()))
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, sqlGetLock, name, secs).Scan(&got); err != nil {
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
	err := l.conn.QueryRowContext(ctx, sqlLockIsMine, l.Name).Scan(&mine)
	if err != nil {
		return fmt.Errorf("lock %s: %w", l.Name, err)
	}
	if !mine.Valid || mine.Int64 != 1 {
		return fmt.Errorf("lock %s: lost", l.Name)
	}
	return nil
}

// Session is the lock's own connection, which stays open for the whole run: the
// run's final job_runs record goes this way, so a MySQL that has become slow (a fresh
// connection's handshake costs several round trips) still gets it. Callers run single
// statements on it; closing it or taking other locks on it would end the run's lock.
func (l *Lock) Session() *sql.Conn { return l.conn }

// Release frees the lock and its connection. It uses its own short context so that a
// cancelled run still releases promptly.
func (l *Lock) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.conn.ExecContext(ctx, sqlReleaseLock, l.Name)
	cerr := l.conn.Close()
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.Name, err)
	}
	return cerr
}
