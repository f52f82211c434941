package billing

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// reportSchema is docs/report-json.md as the tests read it: the type of every field
// key, and the kinds documented for billing.
type reportSchema struct {
	types map[string]string // key -> integer, decimal, time, month, string, boolean, amounts
	kinds map[string]string // billing kind -> actions or problems
}

var (
	schemaKeyRow  = regexp.MustCompile("^\\| `([a-z_]+)` \\| ([a-z]+) \\|")
	schemaKindRow = regexp.MustCompile("^\\| (`[a-z_]+`(?:, `[a-z_]+`)*) \\| (actions|problems) \\|")
)

func loadReportSchema(t *testing.T) reportSchema {
	t.Helper()
	f, err := os.Open("../../docs/report-json.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := reportSchema{types: map[string]string{}, kinds: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		switch section {
		case "Keys":
			if m := schemaKeyRow.FindStringSubmatch(line); m != nil {
				s.types[m[1]] = m[2]
			}
		case "billing":
			if m := schemaKindRow.FindStringSubmatch(line); m != nil {
				for _, k := range strings.Split(m[1], ", ") {
					s.kinds[strings.Trim(k, "`")] = m[2]
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(s.types) < 20 || len(s.kinds) < 10 {
		t.Fatalf("read %d keys and %d kinds from docs/report-json.md: has its layout changed?", len(s.types), len(s.kinds))
	}
	return s
}

var (
	decimalRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	monthRE   = regexp.MustCompile(`^[0-9]{4}-(0[1-9]|1[0-2])$`)
	subjectID = regexp.MustCompile(`^(account|invoice) ([0-9]+)\b`)
)

// checkType reports why v is not a JSON value of the schema's type, or "".
func checkType(typ string, v any) string {
	switch typ {
	case "integer":
		n, ok := v.(json.Number)
		if _, err := strconv.ParseInt(string(n), 10, 64); !ok || err != nil {
			return "not an integer"
		}
	case "decimal":
		if s, ok := v.(string); !ok || !decimalRE.MatchString(s) {
			return "not a decimal string"
		}
	case "time":
		s, ok := v.(string)
		if tm, err := time.Parse(time.RFC3339, s); !ok || err != nil || !strings.HasSuffix(s, "Z") || tm.Location() != time.UTC {
			return "not an RFC 3339 time in UTC"
		}
	case "month":
		if s, ok := v.(string); !ok || !monthRE.MatchString(s) {
			return "not a YYYY-MM month"
		}
	case "string":
		if _, ok := v.(string); !ok {
			return "not a string"
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return "not a boolean"
		}
	case "amounts":
		m, ok := v.(map[string]any)
		if !ok {
			return "not an object"
		}
		for c, a := range m {
			if s, ok := a.(string); len(c) != 3 || strings.ToUpper(c) != c || !ok || !decimalRE.MatchString(s) {
				return "not currency -> decimal"
			}
		}
	default:
		return "type " + typ + " is not documented under Types"
	}
	return ""
}

// checkReportJSON decodes rep's JSON and checks every action and problem against
// the schema; it returns the kinds seen.
func checkReportJSON(t *testing.T, s reportSchema, rep *run.Report) map[string]bool {
	t.Helper()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Actions, Problems []map[string]any
	}
	dec := json.NewDecoder(&b)
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for list, items := range map[string][]map[string]any{"actions": doc.Actions, "problems": doc.Problems} {
		for _, item := range items {
			kind, _ := item["kind"].(string)
			subject, _ := item["subject"].(string)
			seen[kind] = true
			if s.kinds[kind] != list {
				t.Errorf("%s %q in %s: docs/report-json.md lists it under %q", kind, subject, list, s.kinds[kind])
			}
			for k, v := range item {
				if k == "kind" || k == "subject" || k == "detail" {
					continue
				}
				typ, ok := s.types[k]
				if !ok {
					t.Errorf("%s %q: key %q is not documented in docs/report-json.md", kind, subject, k)
					continue
				}
				if why := checkType(typ, v); why != "" {
					t.Errorf("%s %q: %s = %v: %s (documented as %s)", kind, subject, k, v, why, typ)
				}
			}
			// The subject's id is the field's: "invoice 7" has invoice_id 7.
			if m := subjectID.FindStringSubmatch(subject); m != nil {
				if got := item[m[1]+"_id"]; got != json.Number(m[2]) {
					t.Errorf("%s %q: %s_id is %v", kind, subject, m[1], got)
				}
			}
		}
	}
	return seen
}

// TestReportJSONCarriesTypedFields runs billing for real (rate, close, charge with
// each provider outcome), then again with late usage, and as a dry run, and checks
// every item of --output json against docs/report-json.md: each key documented, each
// value of its documented type, ids equal to the subject's.
func TestReportJSONCarriesTypedFields(t *testing.T) {
	schema := loadReportSchema(t)
	db := newDB(t)
	closeWorld(t, db.DB)
	fake, client := fakeStripe(t, 5*time.Second)
	for id, pm := range map[string]string{"cus_1": "pm_card_visa", "cus_2": "pm_card_chargeDeclinedInsufficientFunds",
		"cus_4": "pm_card_chargeDeclinedLostCard"} {
		if _, err := fake.AddCustomer(fakeCustomer(id, pm)); err != nil {
			t.Fatal(err)
		}
	}
	account(t, db.DB, 7, "EUR", "") // no Stripe customer
	openInvoice(t, db.DB, 7, "EUR", 990, time.Date(2025, 3, 1, 0, 20, 0, 0, time.UTC))
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	price(t, db.DB, "volume.gb", "USD", "0.50000000", old, nil)           // overlaps
	usage(t, db.DB, 1, "gpu-1", "gpu.large", april.Add(2*time.Hour), "1") // no price

	seen := map[string]bool{}
	collect := func(rep *run.Report) {
		for k := range checkReportJSON(t, schema, rep) {
			seen[k] = true
		}
	}
	j := &Job{DB: db.DB, Payments: client, Now: at(april.Add(20 * time.Minute)), Config: Config{NetDays: 14}}
	rep, err := j.Run(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	collect(rep)
	firstRun := rep

	usage(t, db.DB, 2, "vm-late", "instance.small", hr(50), "1")           // in invoiced March
	usage(t, db.DB, 3, "vol-late", "volume.gb", april.Add(time.Hour), "2") // in rated April
	j.Now = at(april.Add(5*time.Hour + 20*time.Minute))
	dry := &Job{DB: db.DB, Payments: client, Now: j.Now, Config: Config{NetDays: 14, DryRun: true}}
	if rep, err = dry.Run(testCtx()); err != nil {
		t.Fatal(err)
	}
	collect(rep)
	if rep, err = j.Run(testCtx()); err != nil {
		t.Fatal(err)
	}
	collect(rep)
	usage(t, db.DB, 3, "vol-late", "volume.gb", april.Add(2*time.Hour), "3") // in an hour rated by now
	usage(t, db.DB, 4, "vol-late", "volume.gb", april.Add(3*time.Hour), "1")
	j.Now = at(april.Add(6*time.Hour + 20*time.Minute))
	dry.Now = j.Now
	for _, job := range []*Job{dry, j} {
		if rep, err = job.Run(testCtx()); err != nil {
			t.Fatal(err)
		}
		collect(rep)
	}

	for _, kind := range []string{"rate", "watermark", "rerate", "invoice", "charge", "price_overlap", "unpriced",
		"late_usage_after_close", "no_payment_method"} {
		if !seen[kind] {
			t.Errorf("no %s item was produced: the test checks less than it says", kind)
		}
	}

	// One item, exactly: the soft-declined yen charge of the first run.
	var b bytes.Buffer
	if err := firstRun.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Actions []json.RawMessage }
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var got string
	for _, a := range doc.Actions {
		if bytes.Contains(a, []byte(`"kind": "charge"`)) && bytes.Contains(a, []byte(`"account_id": 2,`)) {
			var c bytes.Buffer
			if err := json.Compact(&c, a); err != nil {
				t.Fatal(err)
			}
			got = c.String()
		}
	}
	want := `{"kind":"charge","subject":"invoice 3","detail":"account 2 JPY 123, attempt 1, key cronkit-invoice-3-attempt-1 -\u003e soft decline insufficient_funds; next attempt 2025-04-02T00:20:00Z",` +
		`"invoice_id":3,"account_id":2,"attempt":1,"idempotency_key":"cronkit-invoice-3-attempt-1","amount":"123","currency":"JPY","amount_minor":123,` +
		`"status":"soft_declined","collection":"retrying","payment_intent":"PI","decline_code":"insufficient_funds","next_attempt_at":"2025-04-02T00:20:00Z"}`
	got = regexp.MustCompile(`"payment_intent":"[^"]*"`).ReplaceAllString(got, `"payment_intent":"PI"`)
	if got != want {
		t.Errorf("yen charge:\n got %s\nwant %s", got, want)
	}
}
