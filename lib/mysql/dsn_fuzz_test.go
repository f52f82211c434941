package mysql

import (
	"errors"
	"strings"
	"testing"
)

// FuzzConfig parses arbitrary DSNs: never a panic; a refusal is ErrBadDSN and never
// repeats the DSN (it may hold a password); an accepted one keeps cronkit's settings
// (UTC times, server-side parameters).
func FuzzConfig(f *testing.F) {
	for _, s := range []string{"cronkit:s3cret@tcp(127.0.0.1:3306)/cronkit", "user@unix(/run/mysqld/mysqld.sock)/db?tls=true",
		"u:p@tcp(h)/d?parseTime=false&loc=Local", "u:p@/", "tcp(h:1)/", ":@tcp([::1]:3306)/x?timeout=-1s",
		"u:p@tcp(h)/d?%zz", "u:pa@ss@tcp(h)/d", "u:p@tcp(h)/d?readTimeout=1y", "no-slash"} {
		f.Add(s, "")
	}
	f.Add("u:p@tcp(h)/d", "skip-verify")
	f.Add("u:p@tcp(h)/d", "bogus")
	f.Fuzz(func(t *testing.T, dsn, tls string) {
		cfg, err := Config(dsn, Options{TLS: tls})
		if err != nil {
			if len(dsn) > 12 && strings.Contains(err.Error(), dsn) {
				t.Fatalf("error repeats the DSN: %v", err)
			}
			if !errors.Is(err, ErrBadDSN) && !strings.HasPrefix(err.Error(), "mysql TLS ") {
				t.Fatalf("refusal is neither ErrBadDSN nor about --db-tls: %v", err)
			}
			return
		}
		if !cfg.ParseTime || cfg.Loc.String() != "UTC" {
			t.Fatalf("cronkit's settings not applied: parseTime %v loc %v", cfg.ParseTime, cfg.Loc)
		}
		if cfg.InterpolateParams {
			t.Fatal("the DSN turned on client-side interpolation: values must travel as parameters")
		}
	})
}
