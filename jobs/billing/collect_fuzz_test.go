package billing

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// FuzzParseProducts feeds arbitrary TOML to the product mapping's parser: it must
// never panic, and every error is ErrProducts naming the entry or the key (or the
// TOML parser's line).
func FuzzParseProducts(f *testing.F) {
	example, err := os.ReadFile("products.example.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("[[product]]\nusage_type = 1\nproduct = \"vm\"\nquantity = \"hours\"\n"))
	f.Add([]byte("[[product]]\nusage_type = -1\nproduct = \"vm\"\nquantity = \"hours\"\n"))
	f.Add([]byte("[[ignore]]\n"))
	f.Add([]byte("[[product]]\nusage_type = 9223372036854775807\nproduct = \"\"\n"))
	f.Add([]byte("[[product]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProducts(data)
		if err != nil {
			if !errors.Is(err, ErrProducts) || !strings.HasPrefix(err.Error(), ErrProducts.Error()+": ") {
				t.Fatalf("error is not a product-mapping error naming its input: %v", err)
			}
			return
		}
		if len(p.Product) == 0 {
			t.Fatal("a mapping with no product was accepted")
		}
	})
}

// FuzzCollectRecord maps arbitrary CloudStack usage records the way collect does
// (identity, content, product rule, quantity, account): never a panic; a record is
// collected with a quantity and its start hour, ignored, or pending a problem that
// the report names (the record, its account, its usage type or offering).
func FuzzCollectRecord(f *testing.F) {
	example, err := os.ReadFile("products.example.toml")
	if err != nil {
		f.Fatal(err)
	}
	products, err := ParseProducts(example)
	if err != nil {
		f.Fatal(err)
	}
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC).Unix()
	f.Add("vm-1", 1, "", "acct-1", "acme", "0.883056", int64(0), start, start+3599)
	f.Add("vol-1", 6, "disk", "acct-1", "acme", "1", int64(1<<40), start, start+3599)
	f.Add("vm-2", 1, "", "acct-2", "twins", "1", int64(0), start, start+3599)
	f.Add("vm-3", 1, "", "nobody", "", "1e9", int64(-1), start, start-1)
	f.Add("", 99, "x", "acct-1", "acme", "-0.5", int64(0), int64(0), int64(0))
	f.Add("vol-2", 6, "", "acct-1", "acme", "99999999999999999999999", int64(9223372036854775807), start, start)
	f.Fuzz(func(t *testing.T, usageID string, usageType int, offering, csAccount, account, rawUsage string, size, from, to int64) {
		c := &collector{j: &Job{Config: Config{Products: products}}, rep: run.NewReport("billing"),
			accounts: map[string]accountMatch{"acct-1": {id: 1, n: 1}, "acct-2": {id: 2, n: 2}},
			problems: map[problemKey]*problemAgg{}}
		rec := orchestrator.UsageRecord{UsageID: usageID, UsageType: usageType, OfferingID: offering, AccountID: csAccount,
			Account: account, RawUsage: rawUsage, Size: size, Start: time.Unix(from%(1<<40), 0).UTC(), End: time.Unix(to%(1<<40), 0).UTC()}
		r := rowFromRecord(rec)
		if r.identity != identityOf(rec) || len(r.accountName) > 255 {
			t.Fatal("row does not carry the record's identity, or an oversized name")
		}
		c.evaluate(r)
		c.countStatus(r)
		switch r.status {
		case rawCollected:
			if r.accountID != 1 || r.product == "" || !r.hour.Equal(floorHour(r.start)) {
				t.Fatalf("collected without account, product or hour: %+v", r)
			}
		case rawIgnored:
		case rawPending:
			if r.problem == "" {
				t.Fatalf("pending with no problem: %+v", r)
			}
			if len(c.problems) != 1 {
				t.Fatalf("pending record %q left %d problems in the report", usageID, len(c.problems))
			}
			for k := range c.problems {
				named := strings.Contains(k.subject, csAccount) || strings.Contains(k.subject, usageID) ||
					strings.Contains(k.subject, strconv.Itoa(usageType))
				if k.kind != r.problem || !named {
					t.Fatalf("problem %+v does not name the record (%q, type %d, account %q)", k, usageID, usageType, csAccount)
				}
			}
		default:
			t.Fatalf("status %v", r.status)
		}
	})
}
