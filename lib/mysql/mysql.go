// Package mysql opens cronkit's MySQL/MariaDB connections, migrates the schema from
// migrations embedded in the binary, and provides the named locks and transaction
// helpers every job shares.
package mysql

import (
	"context"
	"crypto/tls"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// Options tune a connection pool. The zero value is what a batch job wants.
type Options struct {
	// ReadOnly makes every session of the pool READ ONLY, so a dry run cannot write
	// even by mistake, and works with a SELECT-only user.
	ReadOnly bool
	// TLS is "" (off), "true" (verify), "skip-verify" or "preferred", as the driver's
	// tls DSN parameter; a DSN that already names tls keeps its own.
	TLS string
	// ConnectTimeout bounds dialing; ReadTimeout/WriteTimeout bound one network I/O.
	// Zero means 10s, 0 (none) and 0.
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	// MaxOpenConns caps the pool (default 8): a batch job needs few connections and
	// the lock takes one of its own.
	MaxOpenConns int
	// Logger receives the driver's own messages (a dropped connection's "unexpected
	// EOF"), so they reach the run's log with its context instead of a bare line on
	// stderr. It is set on this pool's connector, not the driver's process-global
	// logger, so two pools in one process keep their own. Nil keeps the driver's.
	Logger gomysql.Logger
}

// ErrBadDSN reports a DSN that cannot be parsed. Its message never repeats the DSN,
// which holds the password.
var ErrBadDSN = errors.New("invalid MySQL DSN")

// Open returns a pool for dsn (go-sql-driver format) with the settings cronkit relies
// on: times parsed as UTC, the session time zone at UTC, strict SQL mode, and room for
// large in-memory GROUP BYs. It pings the server before returning.
func Open(ctx context.Context, dsn string, opts Options) (*sql.DB, error) {
	cfg, err := Config(dsn, opts)
	if err != nil {
		return nil, err
	}
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("open mysql %s: %w", Redact(cfg), err)
	}
	var c driver.Connector = conn
	if opts.ReadOnly {
		c = readOnlyConnector{conn}
	}
	db := sql.OpenDB(c)
	max := opts.MaxOpenConns
	if max <= 0 {
		max = 8
	}
	db.SetMaxOpenConns(max)
	db.SetMaxIdleConns(max)
	db.SetConnMaxLifetime(30 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to mysql %s: %w", Redact(cfg), err)
	}
	return db, nil
}

// Config parses dsn and applies cronkit's settings and opts to it.
func Config(dsn string, opts Options) (*gomysql.Config, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		// The driver's parse errors can quote the DSN; keep only our own words.
		return nil, ErrBadDSN
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.Timeout = durationOr(opts.ConnectTimeout, 10*time.Second)
	cfg.ReadTimeout = opts.ReadTimeout
	cfg.WriteTimeout = opts.WriteTimeout
	cfg.InterpolateParams = false
	if opts.Logger != nil {
		cfg.Logger = opts.Logger
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	setDefault(cfg.Params, "time_zone", "'+00:00'")
	setDefault(cfg.Params, "sql_mode", "'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO'")
	// Rating aggregates millions of rows; let the temporary table stay in memory.
	setDefault(cfg.Params, "tmp_table_size", "268435456")
	setDefault(cfg.Params, "max_heap_table_size", "268435456")
	switch opts.TLS {
	case "":
	case "true", "skip-verify", "preferred":
		if cfg.TLSConfig == "" {
			cfg.TLSConfig = opts.TLS
			if opts.TLS == "true" {
				cfg.TLS = &tls.Config{ServerName: hostOf(cfg.Addr), MinVersion: tls.VersionTLS12}
			}
		}
	default:
		return nil, fmt.Errorf("mysql TLS %q: want true, skip-verify or preferred", opts.TLS)
	}
	return cfg, nil
}

func setDefault(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func hostOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i]
		}
	}
	return addr
}

// Redact names a connection for messages and logs: user@addr/db, never the password.
func Redact(cfg *gomysql.Config) string {
	return fmt.Sprintf("%s@%s(%s)/%s", cfg.User, cfg.Net, cfg.Addr, cfg.DBName)
}

// readOnlyConnector makes each new session READ ONLY before the pool hands it out.
// A DSN parameter could do the same, but its variable name differs between MySQL
// (transaction_read_only) and MariaDB 10.x (tx_read_only); the statement does not.
type readOnlyConnector struct{ driver.Connector }

func (c readOnlyConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("mysql driver connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, "SET SESSION TRANSACTION READ ONLY", nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("set session read only: %w", err)
	}
	return conn, nil
}

// IsRetryable reports MySQL errors after which the whole transaction can simply be
// run again: deadlock (1213) and lock wait timeout (1205).
func IsRetryable(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// IsDuplicate reports a unique key violation (1062).
func IsDuplicate(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

// IsAccessDenied reports a statement refused for a missing privilege (1227), such as
// reading information_schema.INNODB_TRX without PROCESS.
func IsAccessDenied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1227
}

// IsNoSuchTable reports a missing table (1146): a database nobody migrated yet.
func IsNoSuchTable(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1146
}

// InTx runs fn in a transaction, commits it, and rolls back when fn fails or panics.
// A deadlock or lock wait timeout reruns fn (up to 3 attempts), so fn must only touch
// the database through tx.
func InTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		err = inTx(ctx, db, opts, fn)
		if err == nil || !IsRetryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func inTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
