package run

import (
	"context"
	"database/sql"

	"github.com/cronkit/cronkit/lib/mysql"
)

func openRO(dsn string) (*sql.DB, error) {
	return mysql.Open(context.Background(), dsn, mysql.Options{ReadOnly: true})
}
