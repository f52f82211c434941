package billing

import (
	"context"
	"errors"
	"iter"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

// cannedUsage is a UsageSource answering fixed pages per window start.
type cannedUsage struct {
	pages    map[time.Time][]orchestrator.UsagePage
	coverage time.Time
	lists    []time.Time
}

func (u *cannedUsage) UsagePages(_ context.Context, f orchestrator.ListUsage) iter.Seq2[orchestrator.UsagePage, error] {
	u.lists = append(u.lists, f.Start)
	return func(yield func(orchestrator.UsagePage, error) bool) {
		for _, p := range u.pages[f.Start] {
			if !yield(p, nil) {
				return
			}
		}
	}
}

func (u *cannedUsage) UsageCoverage(context.Context) (time.Time, error) { return u.coverage, nil }

var _ UsageSource = (*cannedUsage)(nil)

func TestParseProducts(t *testing.T) {
	p, err := ParseProducts([]byte(testProducts))
	if err != nil || len(p.Product) != 3 || len(p.Ignore) != 1 {
		t.Fatalf("ParseProducts: %+v %v", p, err)
	}
	for _, tc := range []struct{ toml, want string }{
		{``, "no [[product]] entry"},
		{"[[product]]\nusage_type = 1\nproduct = \"x\"\nquantity = \"days\"", `product 1 (x): quantity "days": want hours, gib_hours or gib`},
		{"[[product]]\nusage_type = 1\nproduct = \"x\"\nquantity = \"hours\"\n[[product]]\nproduct = \"y\"\nquantity = \"hours\"", "product 2 (y): usage_type must be"},
		{"[[product]]\nusage_type = 1\nproduct = \"has space\"\nquantity = \"hours\"", `product 1 (has space): product "has space"`},
		{"[[product]]\nusage_type = 1\nproduct = \"x\"\nquantity = \"hours\"\noffering = \"o\"", "unknown keys product.offering"},
		{"[[product]]\nusage_type = 1\nproduct = \"x\"\nquantity = \"hours\"\n[[ignore]]\n", "ignore 1: give usage_type, account or both"},
		{"[[product]\n", "invalid product mapping"},
	} {
		_, err := ParseProducts([]byte(tc.toml))
		if !errors.Is(err, ErrProducts) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want ErrProducts with %q", tc.toml, err, tc.want)
		}
	}
}

func TestShippedProductsExampleParses(t *testing.T) {
	data, err := os.ReadFile("products.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseProducts(data)
	if err != nil {
		t.Fatal(err)
	}
	rule, ignored, problem := p.match(orchestrator.UsageVolume, "any-disk", "acme")
	if rule == nil || rule.Product != "volume.gb" || ignored || problem != "" {
		t.Errorf("volume maps to %+v %t %q", rule, ignored, problem)
	}
	if _, ignored, _ := p.match(orchestrator.UsageRunningVM, "x", "system"); !ignored {
		t.Error("the system account's usage is ignored first")
	}
}

func TestProductMatchFirstEntryWins(t *testing.T) {
	p, err := ParseProducts([]byte(`
[[product]]
usage_type = 1
offering_id = "big"
product = "instance.big"
quantity = "hours"
[[product]]
usage_type = 1
product = "instance.any"
quantity = "hours"
[[product]]
usage_type = 1
offering_id = "small"
product = "never.reached"
quantity = "hours"
[[product]]
usage_type = 6
offering_id = "ssd"
product = "volume.ssd"
quantity = "gib_hours"
[[ignore]]
usage_type = 7
account = "system"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ               int
		offering, account string
		product, problem  string
		ignored           bool
	}{
		{1, "big", "a", "instance.big", "", false},
		{1, "small", "a", "instance.any", "", false},
		{6, "ssd", "a", "volume.ssd", "", false},
		{6, "hdd", "a", "", problemUnmappedOffering, false},
		{9, "", "a", "", problemUnknownUsageType, false},
		{7, "", "SYSTEM", "", "", true},
		{7, "", "a", "", problemUnknownUsageType, false},
	} {
		rule, ignored, problem := p.match(tc.typ, tc.offering, tc.account)
		got := ""
		if rule != nil {
			got = rule.Product
		}
		if got != tc.product || ignored != tc.ignored || problem != tc.problem {
			t.Errorf("match(%d, %q, %q) = %q %t %q; want %q %t %q", tc.typ, tc.offering, tc.account, got, ignored, problem, tc.product, tc.ignored, tc.problem)
		}
	}
}

func TestQuantityIsExactDecimal(t *testing.T) {
	for _, tc := range []struct {
		quantity, raw string
		size          int64
		want          string
		ok            bool
	}{
		{QuantityHours, "0.883056", 0, "0.883056", true},
		{QuantityHours, "1", 0, "1.000000", true},
		{QuantityHours, "0.0000005", 0, "0.000001", true}, // half away from zero
		{QuantityHours, "0.0000004999", 0, "0.000000", true},
		{QuantityHours, "-0.0000005", 0, "-0.000001", true},
		{QuantityGiBHours, "1", 50 << 30, "50.000000", true},
		{QuantityGiBHours, "0.5", 1 << 29, "0.250000", true},
		{QuantityGiBHours, "0.1", 1, "0.000000", true},
		{QuantityGiBHours, "1", 1536 << 20, "1.500000", true},     // 1.5 GiB
		{QuantityGiBHours, "0.333333", 3 << 30, "0.999999", true}, // never 1.0 from float drift
		{QuantityGiB, "1073741824", 0, "1.000000", true},
		{QuantityGiB, "1", 0, "0.000000", true},
		{QuantityGiB, "536870912", 0, "0.500000", true},
		{QuantityHours, "1e3", 0, "", false},
		{QuantityHours, "NaN", 0, "", false},
		{QuantityHours, "", 0, "", false},
		{QuantityHours, "99999999999999999999", 0, "", false},
	} {
		r := &ProductRule{Quantity: tc.quantity}
		got, err := r.quantity(tc.raw, tc.size)
		if (err == nil) != tc.ok || (tc.ok && got.String() != tc.want) {
			t.Errorf("%s(%q, %d) = %s, %v; want %s (ok %t)", tc.quantity, tc.raw, tc.size, got, err, tc.want, tc.ok)
		}
	}
}

// mockRecord is one running hour of vm-1 for CloudStack account cs-acme.
func mockRecord() orchestrator.UsageRecord {
	return orchestrator.UsageRecord{UsageID: "vm-1", UsageType: 1, OfferingID: "offering-small", AccountID: "cs-acme", Account: "acme",
		Start: day.Add(10 * time.Hour), End: day.Add(11*time.Hour - time.Second), RawUsage: "1"}
}

// expectCollectStart expects the state read and an empty pending scan.
func expectCollectStart(mock sqlmock.Sqlmock) {
	mock.ExpectQuery(selectCollectStateSQL).WillReturnRows(sqlmock.NewRows([]string{"coverage", "read_to"}).
		AddRow(day.Add(11*time.Hour), day.Add(11*time.Hour)))
	mock.ExpectQuery(selectPendingSQL).WithArgs(0, 500).WillReturnRows(sqlmock.NewRows([]string{"id"}))
}

func mockJob(t *testing.T, u *cannedUsage, now time.Time) (*Job, sqlmock.Sqlmock) {
	db, mock := newMock(t)
	prod, err := ParseProducts([]byte(testProducts))
	if err != nil {
		t.Fatal(err)
	}
	return &Job{DB: db, Usage: u, Config: Config{Products: prod, CollectLookback: time.Hour}, Now: at(now)}, mock
}

func TestCollectPageCommitsRawAndUsageTogether(t *testing.T) {
	now := day.Add(12 * time.Hour)
	rec := mockRecord()
	u := &cannedUsage{pages: map[time.Time][]orchestrator.UsagePage{day: {{Number: 1, Count: 1, Records: []orchestrator.UsageRecord{rec}}}},
		coverage: day.Add(11 * time.Hour)}
	j, mock := mockJob(t, u, now)
	id := identityOf(rec)
	expectCollectStart(mock)
	mock.ExpectQuery(selectRawSQL(1)).WithArgs(id[:]).WillReturnRows(sqlmock.NewRows([]string{"identity"}))
	mock.ExpectQuery(selectAccountsSQL(1)).WithArgs("cs-acme").WillReturnRows(sqlmock.NewRows([]string{"cs", "id"}).AddRow("cs-acme", 1))
	mock.ExpectBegin()
	mock.ExpectExec(upsertRawSQL(1)).WillReturnResult(sqlmock.NewResult(1, 1))
	h := day.Add(10 * time.Hour)
	mock.ExpectQuery(selectKeyRawSQL(1, 1, 1)).WithArgs("vm-1", "instance.small", h).WillReturnRows(
		sqlmock.NewRows([]string{"identity", "usage_id", "product", "hour", "account_id", "quantity", "start_date"}).
			AddRow(id[:], "vm-1", "instance.small", h, 1, "1.000000", h))
	mock.ExpectQuery(selectUsageSQL(1, 1, 1)).WithArgs("vm-1", "instance.small", h).WillReturnRows(sqlmock.NewRows([]string{"resource_id"}))
	mock.ExpectExec(upsertUsageSQL(1)).WithArgs(int64(1), "vm-1", "instance.small", h, "1.000000").WillReturnResult(sqlmock.NewResult(1, 1))
	mock.ExpectCommit()
	mock.ExpectExec(saveCollectStateSQL).WithArgs(day.Add(11*time.Hour), now, now).WillReturnResult(sqlmock.NewResult(0, 1))

	rep, err := j.Collect(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
	if rep.Counts["usage_rows_new"] != 1 || len(u.lists) != 1 || !u.lists[0].Equal(day) {
		t.Errorf("counts %v, windows read %v", rep.Counts, u.lists)
	}
}

func TestCollectPageRollsBackWhenAStepFails(t *testing.T) {
	now := day.Add(12 * time.Hour)
	rec := mockRecord()
	id := identityOf(rec)
	h := day.Add(10 * time.Hour)
	boom := errors.New("connection lost")
	for _, tc := range []struct {
		name   string
		expect func(sqlmock.Sqlmock)
	}{
		{"raw", func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(upsertRawSQL(1)).WillReturnError(boom)
		}},
		{"sum", func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(upsertRawSQL(1)).WillReturnResult(sqlmock.NewResult(1, 1))
			mock.ExpectQuery(selectKeyRawSQL(1, 1, 1)).WithArgs("vm-1", "instance.small", h).WillReturnError(boom)
		}},
		{"usage", func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(upsertRawSQL(1)).WillReturnResult(sqlmock.NewResult(1, 1))
			mock.ExpectQuery(selectKeyRawSQL(1, 1, 1)).WithArgs("vm-1", "instance.small", h).WillReturnRows(
				sqlmock.NewRows([]string{"identity", "usage_id", "product", "hour", "account_id", "quantity", "start_date"}).
					AddRow(id[:], "vm-1", "instance.small", h, 1, "1.000000", h))
			mock.ExpectQuery(selectUsageSQL(1, 1, 1)).WithArgs("vm-1", "instance.small", h).WillReturnRows(sqlmock.NewRows([]string{"resource_id"}))
			mock.ExpectExec(upsertUsageSQL(1)).WillReturnError(boom)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &cannedUsage{pages: map[time.Time][]orchestrator.UsagePage{day: {{Number: 1, Count: 1, Records: []orchestrator.UsageRecord{rec}}}}}
			j, mock := mockJob(t, u, now)
			expectCollectStart(mock)
			mock.ExpectQuery(selectRawSQL(1)).WithArgs(id[:]).WillReturnRows(sqlmock.NewRows([]string{"identity"}))
			mock.ExpectQuery(selectAccountsSQL(1)).WithArgs("cs-acme").WillReturnRows(sqlmock.NewRows([]string{"cs", "id"}).AddRow("cs-acme", 1))
			mock.ExpectBegin()
			tc.expect(mock)
			mock.ExpectRollback() // and no coverage saved: the next run reads the window again
			_, err := j.Collect(testCtx())
			if !errors.Is(err, boom) {
				t.Fatalf("err %v, want %v", err, boom)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCollectRereadWritesNothing(t *testing.T) {
	now := day.Add(12 * time.Hour)
	rec := mockRecord()
	id, content := identityOf(rec), contentOf(rec)
	u := &cannedUsage{pages: map[time.Time][]orchestrator.UsagePage{day: {{Number: 1, Count: 2, Records: []orchestrator.UsageRecord{rec, rec}}}},
		coverage: day.Add(11 * time.Hour)}
	j, mock := mockJob(t, u, now)
	expectCollectStart(mock)
	// The copy is dropped before the lookup: one identity asked for.
	mock.ExpectQuery(selectRawSQL(1)).WithArgs(id[:]).WillReturnRows(
		sqlmock.NewRows([]string{"identity", "content_hash", "status", "account_id", "product", "hour", "quantity", "raw_usage", "size"}).
			AddRow(id[:], content[:], "collected", 1, "instance.small", day.Add(10*time.Hour), "1.000000", "1", 0))
	mock.ExpectExec(markDuplicatesSQL).WithArgs(1, id[:]).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(saveCollectStateSQL).WithArgs(day.Add(11*time.Hour), now, now).WillReturnResult(sqlmock.NewResult(0, 1))
	rep, err := j.Collect(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
	if rep.Counts["records_unchanged"] != 1 || rep.Counts["records_duplicate"] != 1 {
		t.Errorf("counts %v", rep.Counts)
	}
}
