package sqlcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoSQLBuiltFromValues walks every non-test file of the module: a query built
// from anything but constants fails here, with its position.
func TestNoSQLBuiltFromValues(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	findings, err := CheckDir(Module{Path: "github.com/cronkit/cronkit", Dir: root}, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings {
		rel := strings.TrimPrefix(f.String(), root+"/")
		if why, ok := exempt(rel); ok {
			t.Logf("exempt: %s (%s)", rel, why)
			continue
		}
		t.Errorf("%s", rel)
	}
}

// exemptions are the places where SQL must carry something that cannot be a
// parameter, by file and the text the finding names. Each says why.
var exemptions = []struct{ file, expr, why string }{
	{"lib/mysql/mysqltest/mysqltest.go", "randomHex()", "test support: CREATE DATABASE/USER and GRANT name a database, a user and a password, which MySQL takes only as identifiers and literals; the names are sanitized test names and random hex"},
	{"fixtures/fixtures.go", "int()", "the demo loader joins MariaDB's sequence table seq_0_to_N, whose name carries the count; N is an int computed from the demo clock"},
}

func exempt(finding string) (string, bool) {
	for _, e := range exemptions {
		if strings.HasPrefix(finding, e.file+":") && strings.Contains(finding, e.expr) {
			return e.why, true
		}
	}
	return "", false
}

// The rule catches what it is for, and lets through how cronkit builds SQL.
func TestRuleOnSnippets(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		bad        bool
	}{
		{"value concatenated", `func f(db *sql.DB, id string) { db.QueryContext(ctx, "SELECT * FROM t WHERE id = " + id) }`, true},
		{"value in a local", `func f(db *sql.DB, r *http.Request) { q := "DELETE FROM t WHERE id = " + r.FormValue("id"); db.ExecContext(ctx, q) }`, true},
		{"sprintf of a value", `func f(db *sql.DB, n int) { db.Exec(fmt.Sprintf("SELECT * FROM t LIMIT %d", strconv.Itoa(n))) }`, true},
		{"builder fed a value", `func where(c string) string { return "SELECT * FROM t WHERE " + c }
func f(db *sql.DB, name string) { db.Query(where("name = '" + name + "'")) }`, true},
		{"closure fed a value", `const q = "SELECT 1"
func f(db *sql.DB, n int) { run := func(query string) { db.Query(query) }; run(q); run(q + strconv.Itoa(n)) }`, true},
		{"closure fed constants", `const q, r = "SELECT 1", "SELECT 2"
func f(db *sql.DB) { run := func(query string) { db.Query(query) }; run(q); run(r) }`, false},
		{"receiver field set from a value", `type j struct{ where string }
func (x *j) f(db *sql.DB) { db.Query("SELECT 1 WHERE " + x.where) }
func g(r *http.Request) { (&j{where: r.FormValue("w")}).f(nil) }`, true},
		{"builder with a value", `func f(db *sql.DB, name string) { var b strings.Builder; b.WriteString("SELECT 1 FROM "); b.WriteString(name); db.Query(b.String()) }
func g() { f(nil, "x") }`, false},
		{"builder with a value from outside", `func f(db *sql.DB, r *http.Request) { var b strings.Builder; b.WriteString("SELECT 1 FROM "); b.WriteString(r.FormValue("t")); db.Query(b.String()) }
func g(r *http.Request) { f(nil, r) }`, true},
		{"uncalled function's parameter", `func F(db *sql.DB, where string) { db.Query("SELECT 1 WHERE " + where) }`, true},
		{"constant", `const q = "SELECT 1"
func f(db *sql.DB) { db.QueryRowContext(ctx, q) }`, false},
		{"literal and parameters", "func f(db *sql.DB, id int64) { db.ExecContext(ctx, `DELETE FROM t WHERE id = ?`, id) }", false},
		{"placeholders", `const ins = "INSERT INTO t (a) VALUES "
func f(db *sql.DB, ids []int64) { v := strings.TrimSuffix(strings.Repeat("(?), ", len(ids)), ", "); db.ExecContext(ctx, ins+v) }`, false},
		{"builder of constants", `type agg struct{ from, where string }
func hours() agg { return agg{from: "usage u", where: "u.hour >= ?"} }
func sel(a agg) string { return "SELECT * FROM " + a.from + " WHERE " + a.where }
func f(db *sql.DB) { db.QueryContext(ctx, sel(hours())) }`, false},
		{"local from branches", `const a, b = "SELECT 1", "SELECT 2"
func f(db *sql.DB, x bool) { q := a; if x { q = b }; db.Query(q) }`, false},
		{"prepared statement's values", `const ins = "INSERT INTO t (a) VALUES (?)"
func f(db *sql.DB, r *http.Request) { st, _ := db.Prepare(ins); args := []any{r.FormValue("a")}; st.ExecContext(ctx, args...) }`, false},
		{"prepared from a value", `func f(db *sql.DB, r *http.Request) { st, _ := db.Prepare("SELECT " + r.FormValue("c")); st.Exec() }`, true},
		{"query spread from a value", `func f(db *sql.DB, r *http.Request) { q := []any{"SELECT " + r.FormValue("c")}; db.Exec(q[0].(string), q[1:]...) }`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := CheckSource("package p\nimport (\"database/sql\"; \"fmt\"; \"net/http\"; \"strconv\"; \"strings\")\n" + tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if (len(fs) > 0) != tc.bad {
				t.Fatalf("findings %v, want bad=%v", fs, tc.bad)
			}
		})
	}
}
