package reconcile

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/run"
)

// The usage check against the real MariaDB and the fake CloudStack. The world is a
// day (March 2nd 2025, the `day` of the table tests) of a small cloud whose metering
// is what the fake's usage server wrote, collected into cloudstack_usage and
// usage_records as billing's collect does; each test plants one discrepancy, on
// either side, checks the finding, that a second run gives it the same fingerprint,
// and that it is gone once its cause is.

type usageWorld struct {
	t      *testing.T
	db     *mysqltest.DB
	fake   *fakecloudstack.Server
	client *orchestrator.Client
	clock  time.Time
}

// newUsageWorld builds the cloud. acme (our account 1, CloudStack cs-acme) has
//   - vm-web, running since the day before;
//   - vm-batch, stopped 10:30-13:00, with a start that failed at 12:00;
//   - vm-old, destroyed and expunged at 15:00;
//   - vol-data since the day before, vol-tmp 08:00-14:00;
//   - ip-1 since the day before, released at 16:00, and ip-2 assigned at 18:00;
//
// beta (our 2, cs-beta) has vm-beta since 09:00; gamma (our 3, cs-gamma) has
// vm-gamma, running. The clock ends at 06:00 the next day; collect has read
// everything up to then.
func newUsageWorld(t *testing.T) *usageWorld {
	t.Helper()
	w := &usageWorld{t: t, db: mysqltest.New(t), fake: fakecloudstack.New()}
	w.fake.AddCredential("KEY", "SECRET")
	w.fake.Now = func() time.Time { return w.clock }
	srv := httptest.NewServer(w.fake.Handler())
	t.Cleanup(srv.Close)
	var err error
	w.client, err = orchestrator.New(orchestrator.Config{APIURL: srv.URL + "/client/api", APIKey: "KEY", SecretKey: "SECRET",
		Timeout: 10 * time.Second, AsyncPoll: time.Millisecond, PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w.clock = day.Add(-12 * time.Hour)
	for i, name := range []string{"acme", "beta", "gamma"} {
		if _, err := w.fake.AddAccount(fakecloudstack.Account{ID: "cs-" + name, Name: name}); err != nil {
			t.Fatal(err)
		}
		w.exec(`INSERT INTO accounts (id, email, currency, created_at, cloudstack_account_id) VALUES (?, ?, 'EUR', '2025-01-01', ?)`,
			i+1, name+"@example.com", "cs-"+name)
	}
	w.vm("vm-web", "cs-acme")
	w.vm("vm-batch", "cs-acme")
	w.vm("vm-old", "cs-acme")
	w.vm("vm-gamma", "cs-gamma")
	w.volume("vol-data", "cs-acme")
	w.ip("ip-1", "cs-acme")
	step := func(h, m int, f func() error) {
		t.Helper()
		w.clock = at(h, m)
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	step(8, 0, func() error { w.volume("vol-tmp", "cs-acme"); return nil })
	step(9, 0, func() error { w.vm("vm-beta", "cs-beta"); return nil })
	step(10, 30, func() error { return w.client.StopVM(ctx, "vm-batch") })
	step(12, 0, func() error {
		w.fake.FailAsyncNext("startVirtualMachine", 1)
		if err := w.client.StartVM(ctx, "vm-batch"); err == nil {
			return errors.New("the injected start failure did not fail")
		}
		return nil
	})
	step(13, 0, func() error { return w.client.StartVM(ctx, "vm-batch") })
	step(14, 0, func() error { return w.fake.DeleteVolume("vol-tmp") })
	step(15, 0, func() error { return w.client.DestroyVM(ctx, "vm-old", true) })
	step(16, 0, func() error { return w.fake.ReleasePublicIP("ip-1") })
	step(18, 0, func() error { w.ip("ip-2", "cs-acme"); return nil })
	w.clock = day.Add(30 * time.Hour)
	w.collect()
	w.exec(`INSERT INTO usage_collect_state (name, coverage, read_to, updated_at) VALUES ('cloudstack', ?, ?, ?)`,
		w.clock, w.clock, w.clock)
	return w
}

func (w *usageWorld) exec(q string, args ...any) {
	w.t.Helper()
	if _, err := w.db.ExecContext(context.Background(), q, args...); err != nil {
		w.t.Fatalf("%s: %v", q, err)
	}
}

func (w *usageWorld) vm(id, account string) {
	w.t.Helper()
	if _, err := w.fake.AddVM(fakecloudstack.VM{ID: id, AccountID: account, ServiceOfferingID: "offering-small"}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *usageWorld) volume(id, account string) {
	w.t.Helper()
	if _, err := w.fake.AddVolume(fakecloudstack.Volume{ID: id, AccountID: account}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *usageWorld) ip(id, account string) {
	w.t.Helper()
	if _, err := w.fake.AddPublicIP(fakecloudstack.PublicIP{ID: id, AccountID: account}); err != nil {
		w.t.Fatal(err)
	}
}

// collect reads the fake's usage records of the day before and the day into
// cloudstack_usage and rebuilds usage_records from them, as billing's collect would
// (running time, volumes and addresses billed; allocated time ignored).
func (w *usageWorld) collect() {
	w.t.Helper()
	ctx := context.Background()
	products := map[int]string{1: "instance.small", 3: "ip.public", 6: "volume.gb"}
	for pg, err := range w.client.UsagePages(ctx, orchestrator.ListUsage{Start: day.Add(-24 * time.Hour), End: w.clock.Add(-time.Second)}) {
		if err != nil {
			w.t.Fatal(err)
		}
		for _, r := range pg.Records {
			var acct sql.NullInt64
			if err := w.db.QueryRowContext(ctx, `SELECT MIN(id) FROM accounts WHERE cloudstack_account_id = ?`, r.AccountID).Scan(&acct); err != nil {
				w.t.Fatal(err)
			}
			status, product, hour, quantity := "ignored", sql.NullString{}, sql.NullTime{}, sql.NullString{}
			if p, ok := products[r.UsageType]; ok {
				status, product = "collected", sql.NullString{String: p, Valid: true}
				hour, quantity = sql.NullTime{Time: r.Start.Truncate(time.Hour), Valid: true}, sql.NullString{String: r.RawUsage, Valid: true}
			}
			id := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%s|%d|%d|%s", r.UsageID, r.UsageType, r.OfferingID, r.Start.Unix(), r.End.Unix(), r.AccountID))
			content := sha256.Sum256([]byte(r.RawUsage))
			w.exec(`INSERT INTO cloudstack_usage (identity, usage_id, usage_type, offering_id, start_date, end_date, cs_account_id,
  content_hash, account_name, raw_usage, status, account_id, product, hour, quantity, first_seen_at, changed_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE raw_usage = VALUES(raw_usage), content_hash = VALUES(content_hash), status = VALUES(status),
  account_id = VALUES(account_id), product = VALUES(product), hour = VALUES(hour), quantity = VALUES(quantity)`,
				id[:], r.UsageID, r.UsageType, r.OfferingID, r.Start, r.End, r.AccountID, content[:], r.Account, r.RawUsage,
				status, acct, product, hour, quantity, w.clock, w.clock)
		}
	}
	w.rebuildUsageRecords()
}

func (w *usageWorld) rebuildUsageRecords() {
	w.t.Helper()
	w.exec(`DELETE FROM usage_records`)
	w.exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT MIN(account_id), usage_id, product, hour, SUM(quantity) FROM cloudstack_usage WHERE status = 'collected'
GROUP BY usage_id, product, hour`)
}

func (w *usageWorld) check() *UsageCheck {
	return &UsageCheck{DB: w.db.DB, Orchestrator: w.client, Now: func() time.Time { return w.clock }, StageBatch: 7}
}

// run runs the check over the default window (the day) and returns its findings.
func (w *usageWorld) run() ([]Finding, UsageStats) {
	w.t.Helper()
	var out []Finding
	stats, err := w.check().Run(context.Background(), time.Time{}, time.Time{}, func(f Finding) error {
		if _, err := json.Marshal(f.Evidence); err != nil {
			return fmt.Errorf("evidence of %s is not JSON: %w", f.Class, err)
		}
		out = append(out, f)
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if !stats.From.Equal(day) || !stats.To.Equal(day.Add(24*time.Hour)) {
		w.t.Fatalf("window %v .. %v, want the day", stats.From, stats.To)
	}
	return out, stats
}

func classes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Class+" "+f.ResourceID)
	}
	slices.Sort(out)
	return out
}

// planted runs the check twice, expects exactly want (class and resource) each
// time with the same fingerprints, and returns the first run's findings.
func (w *usageWorld) planted(want ...string) []Finding {
	w.t.Helper()
	first, _ := w.run()
	second, _ := w.run()
	slices.Sort(want)
	if got := classes(first); !slices.Equal(got, want) {
		w.t.Fatalf("findings %q, want %q\n%s", got, want, details(first))
	}
	if len(first) != len(second) {
		w.t.Fatalf("second run: %d findings, first %d", len(second), len(first))
	}
	for i := range first {
		if first[i].Fingerprint != second[i].Fingerprint || first[i].Fingerprint == "" {
			w.t.Errorf("%s: fingerprint %q then %q", first[i].Class, first[i].Fingerprint, second[i].Fingerprint)
		}
	}
	return first
}

// gone expects no finding at all.
func (w *usageWorld) gone() {
	w.t.Helper()
	if got, _ := w.run(); len(got) != 0 {
		w.t.Fatalf("findings remain once the cause is gone: %q\n%s", classes(got), details(got))
	}
}

func details(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		ev, _ := json.Marshal(f.Evidence)
		fmt.Fprintf(&b, "  %s account %d %s: %s\n    %s\n", f.Class, f.AccountID, f.ResourceID, f.Detail, ev)
	}
	return b.String()
}

func evidence(t *testing.T, f Finding, side, key string) any {
	t.Helper()
	m, ok := f.Evidence[side].(map[string]any)
	if !ok {
		t.Fatalf("%s: no %s evidence in %v", f.Class, side, f.Evidence)
	}
	return m[key]
}

// TestUsageCleanWorld: a day of starts, stops, failures, destroys, deletions and
// releases, metered as the usage server metered it, makes no finding.
func TestUsageCleanWorld(t *testing.T) {
	w := newUsageWorld(t)
	got, stats := w.run()
	if len(got) != 0 {
		t.Fatalf("a consistent world made findings:\n%s", details(got))
	}
	if stats.VMs != 4 || stats.Volumes != 1 || stats.IPs != 1 || stats.Accounts != 3 {
		t.Errorf("inventory: %d VMs (vm-old expunged), %d volumes (vol-tmp deleted), %d IPs (ip-1 released), %d accounts; want 4, 1, 1, 3",
			stats.VMs, stats.Volumes, stats.IPs, stats.Accounts)
	}
	// Staged: 5 VM creations, the stop, the start, destroy and expunge, 3 volume
	// events, 3 address events; skipped: 4 Scheduled entries and the failed start.
	if stats.Events != 15 || stats.EventsSkipped != 5 {
		t.Errorf("events: %d staged, %d skipped; want 15 and 5", stats.Events, stats.EventsSkipped)
	}
	// 5 VMs, 2 volumes, 2 addresses.
	if stats.Resources != 9 || stats.MeteringRows == 0 || stats.Conflicts != 0 {
		t.Errorf("merge: %d resources, %d metering rows, %d conflicts; want 9, some, 0", stats.Resources, stats.MeteringRows, stats.Conflicts)
	}
	if !stats.JudgedTo.Equal(day.Add(24 * time.Hour)) {
		t.Errorf("judged to %v, want the window's end", stats.JudgedTo)
	}
}

func TestUsageRunningNotMetered(t *testing.T) {
	w := newUsageWorld(t)
	// The usage server (or collect) lost vm-web's running time 10:00-13:00 and 23:00.
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date >= ? AND start_date < ?`, at(10, 0), at(13, 0))
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date = ?`, at(23, 0))
	w.rebuildUsageRecords()
	f := w.planted(ClassRunningNotMetered + " vm-web")[0]
	if f.AccountID != 1 || !strings.Contains(f.Detail, "4h in 4 hour(s)") {
		t.Errorf("finding %+v", f)
	}
	hours := func(f Finding) []string { return evidence(t, f, "orchestrator", "unmetered_hours").([]string) }
	if got := hours(f); !slices.Equal(got, []string{"2025-03-02T10:00Z..2025-03-02T13:00Z", "2025-03-02T23:00Z..2025-03-03T00:00Z"}) {
		t.Errorf("unmetered hours %v", got)
	}
	// Settle: at 00:30 the next day, with the default 2 hours, 22:00 on are not
	// judged yet; it is the same finding.
	w.clock = day.Add(24*time.Hour + 30*time.Minute)
	again, stats := w.run()
	if len(again) != 1 || again[0].Fingerprint != f.Fingerprint || !stats.JudgedTo.Equal(at(22, 0)) ||
		!slices.Equal(hours(again[0]), []string{"2025-03-02T10:00Z..2025-03-02T13:00Z"}) {
		t.Errorf("judged to %v: %s", stats.JudgedTo, details(again))
	}
	// Collect not past 11:20 yet: only 10:00 is judged.
	w.clock = day.Add(30 * time.Hour)
	w.exec(`UPDATE usage_collect_state SET read_to = ?`, at(11, 20))
	again, stats = w.run()
	if len(again) != 1 || again[0].Fingerprint != f.Fingerprint || !stats.JudgedTo.Equal(at(11, 0)) ||
		!slices.Equal(hours(again[0]), []string{"2025-03-02T10:00Z..2025-03-02T11:00Z"}) {
		t.Errorf("judged to %v: %s", stats.JudgedTo, details(again))
	}
	// Collect reads the records again: nothing is missing.
	w.exec(`UPDATE usage_collect_state SET read_to = coverage`)
	w.collect()
	w.gone()
}

func TestUsageMeteredNotFound(t *testing.T) {
	w := newUsageWorld(t)
	// Usage for a VM CloudStack never had, and a metering agent's row for another.
	if err := w.fake.AddUsageRecord(fakecloudstack.UsageRecord{AccountID: "cs-acme", UsageID: "vm-ghost", UsageType: 1,
		Start: at(5, 0), End: at(6, 0).Add(-time.Second), RawUsage: "1"}); err != nil {
		t.Fatal(err)
	}
	w.collect()
	w.exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (2, 'agent-thing', 'instance.small', ?, 1)`, at(7, 0))
	fs := w.planted(ClassMeteredNotFound+" agent-thing", ClassMeteredNotFound+" vm-ghost")
	for _, f := range fs {
		want := map[string]int64{"vm-ghost": 1, "agent-thing": 2}[f.ResourceID]
		if f.AccountID != want {
			t.Errorf("%s: account %d, want %d", f.ResourceID, f.AccountID, want)
		}
	}
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-ghost'`)
	w.exec(`DELETE FROM usage_records WHERE resource_id IN ('vm-ghost', 'agent-thing')`)
	w.gone()
}

func TestUsageMeteredAfterRemoval(t *testing.T) {
	w := newUsageWorld(t)
	// vm-old was expunged at 15:00; a record meters it 17:00-18:00, and one for the
	// released ip-1 meters 20:00-21:00.
	for _, r := range []fakecloudstack.UsageRecord{
		{AccountID: "cs-acme", UsageID: "vm-old", UsageType: 1, Start: at(17, 0), End: at(18, 0).Add(-time.Second), RawUsage: "1"},
		{AccountID: "cs-acme", UsageID: "ip-1", UsageType: 3, Start: at(20, 0), End: at(21, 0).Add(-time.Second), RawUsage: "1"},
	} {
		if err := w.fake.AddUsageRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	w.collect()
	fs := w.planted(ClassMeteredAfterRemoval+" ip-1", ClassMeteredAfterRemoval+" vm-old")
	for _, f := range fs {
		wantAt := map[string]string{"vm-old": "2025-03-02T15:00:00Z", "ip-1": "2025-03-02T16:00:00Z"}[f.ResourceID]
		if f.AccountID != 1 || evidence(t, f, "orchestrator", "removed_at") != wantAt ||
			evidence(t, f, "metering", "after_removal") != "1h" {
			t.Errorf("finding:\n%s", details([]Finding{f}))
		}
	}
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id IN ('vm-old', 'ip-1') AND start_date IN (?, ?)`, at(17, 0), at(20, 0))
	w.rebuildUsageRecords()
	w.gone()
}

func TestUsageHoursExceedWindow(t *testing.T) {
	w := newUsageWorld(t)
	// An hourly record of vm-web says 1.5 hours; a daily record of vol-data (24 h)
	// on top of its hourly ones counts the day twice.
	w.exec(`UPDATE cloudstack_usage SET raw_usage = '1.5' WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date = ?`, at(3, 0))
	if err := w.fake.AddUsageRecord(fakecloudstack.UsageRecord{AccountID: "cs-acme", UsageID: "vol-data", UsageType: 6,
		Start: day, End: day.Add(24*time.Hour - time.Second), RawUsage: "24"}); err != nil {
		t.Fatal(err)
	}
	w.collect()
	w.exec(`UPDATE cloudstack_usage SET raw_usage = '1.5' WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date = ?`, at(3, 0))
	fs := w.planted(ClassHoursExceedWindow+" vm-web", ClassHoursExceedWindow+" vol-data")
	for _, f := range fs {
		want := map[string]string{"vm-web": "0.5", "vol-data": "24"}[f.ResourceID]
		if f.AccountID != 1 || evidence(t, f, "metering", "excess_hours") != want {
			t.Errorf("finding:\n%s", details([]Finding{f}))
		}
	}
	w.exec(`UPDATE cloudstack_usage SET raw_usage = '1' WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date = ?`, at(3, 0))
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vol-data' AND start_date = ? AND end_date = ?`, day, day.Add(24*time.Hour-time.Second))
	w.rebuildUsageRecords()
	w.gone()
}

func TestUsageAccountMismatch(t *testing.T) {
	w := newUsageWorld(t)
	// vol-data's 07:00 hour metered on beta (our 2) instead of acme.
	w.exec(`UPDATE cloudstack_usage SET cs_account_id = 'cs-beta', account_id = 2 WHERE usage_id = 'vol-data' AND start_date = ?`, at(7, 0))
	w.rebuildUsageRecords()
	f := w.planted(ClassAccountMismatch + " vol-data")[0]
	if f.AccountID != 2 || evidence(t, f, "orchestrator", "account_id") != int64(1) ||
		evidence(t, f, "metering", "cloudstack_account_id") != "cs-beta" {
		t.Errorf("finding:\n%s", details([]Finding{f}))
	}
	w.exec(`UPDATE cloudstack_usage SET cs_account_id = 'cs-acme', account_id = 1 WHERE usage_id = 'vol-data' AND start_date = ?`, at(7, 0))
	w.rebuildUsageRecords()
	w.gone()
}

func TestUsageSuspendedButRunning(t *testing.T) {
	w := newUsageWorld(t)
	// Abuse suspended gamma the day before; CloudStack still runs its VM and has
	// the account enabled.
	w.exec(`UPDATE accounts SET status = 'suspended' WHERE id = 3`)
	w.exec(`INSERT INTO cases (account_id, machine, state, version, opened_at, state_since, evidence, updated_at)
VALUES (3, 'dunning', 'suspended', 3, ?, ?, '{}', ?)`, day.Add(-72*time.Hour), day.Add(-12*time.Hour), day)
	f := w.planted(ClassSuspendedButRunning + " cs-gamma")[0]
	if f.AccountID != 3 || evidence(t, f, "orchestrator", "running_vms") != int64(1) ||
		evidence(t, f, "orchestrator", "state") != "enabled" || evidence(t, f, "local", "case_state") != "suspended" {
		t.Errorf("finding:\n%s", details([]Finding{f}))
	}
	// Suspended only an hour ago: abuse may still be stopping it, not judged yet.
	w.exec(`UPDATE cases SET state_since = ? WHERE account_id = 3`, w.clock.Add(-time.Hour))
	if got, _ := w.run(); len(got) != 0 {
		t.Errorf("judged within the settle delay:\n%s", details(got))
	}
	w.exec(`UPDATE cases SET state_since = ? WHERE account_id = 3`, day.Add(-12*time.Hour))
	// Its VM stopped by hand, the account still enabled: still a finding, the same.
	if err := w.client.StopVM(context.Background(), "vm-gamma"); err != nil {
		t.Fatal(err)
	}
	again, _ := w.run()
	if len(again) != 1 || again[0].Fingerprint != f.Fingerprint || evidence(t, again[0], "orchestrator", "running_vms") != int64(0) {
		t.Errorf("stopped VM, enabled account:\n%s", details(again))
	}
	if err := w.client.DisableAccount(context.Background(), "cs-gamma"); err != nil {
		t.Fatal(err)
	}
	w.gone()
}

// TestUsageStagesInFilesWhenTheSessionIsReadOnly: a dry run's READ ONLY session, or
// a SELECT-only user, cannot create the staging table; the check stages in files
// (sorted runs merged back) and finds the same findings, with the same
// fingerprints, writing nothing.
func TestUsageStagesInFilesWhenTheSessionIsReadOnly(t *testing.T) {
	w := newUsageWorld(t)
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date = ?`, at(10, 0))
	w.exec(`UPDATE cloudstack_usage SET cs_account_id = 'cs-beta', account_id = 2 WHERE usage_id = 'vol-data' AND start_date = ?`, at(7, 0))
	w.rebuildUsageRecords()
	want := w.planted(ClassAccountMismatch+" vol-data", ClassRunningNotMetered+" vm-web")
	for name, dsn := range map[string]string{"read-only session": w.db.DSN, "select-only user": w.db.SelectOnlyUser(t)} {
		t.Run(name, func(t *testing.T) {
			ro, err := mysql.Open(context.Background(), dsn, mysql.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			c := w.check()
			c.DB, c.TempDir, c.runRows = ro, t.TempDir(), 4 // a run file for every 4 rows
			var got []Finding
			stats, err := c.Run(context.Background(), time.Time{}, time.Time{}, func(f Finding) error { got = append(got, f); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if stats.Staging != StagingFiles || stats.Resources != 9 || stats.Events != 15 {
				t.Errorf("staging %q, %d resources, %d events; want files, 9, 15", stats.Staging, stats.Resources, stats.Events)
			}
			if len(got) != len(want) {
				t.Fatalf("findings:\n%s\nwant:\n%s", details(got), details(want))
			}
			for i := range got {
				if got[i].Fingerprint != want[i].Fingerprint || got[i].Detail != want[i].Detail {
					t.Errorf("files staging found\n%s\ndatabase staging\n%s", details(got[i:i+1]), details(want[i:i+1]))
				}
			}
			if left, _ := filepath.Glob(filepath.Join(c.TempDir, "*")); len(left) != 0 {
				t.Errorf("run files left behind: %q", left)
			}
		})
	}
	if _, stats := w.run(); stats.Staging != StagingDatabase {
		t.Errorf("a writable session stages in %q, want the database", stats.Staging)
	}
}

// TestUsageEmitErrorStopsTheRun: the caller refusing a finding (its store failed)
// stops the run with that error, and the next run starts clean on the same pool.
func TestUsageEmitErrorStopsTheRun(t *testing.T) {
	w := newUsageWorld(t)
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id IN ('vm-web', 'vm-batch') AND usage_type = 1 AND start_date = ?`, at(10, 0))
	w.rebuildUsageRecords()
	refused := errors.New("store refused")
	calls := 0
	c := w.check()
	c.DB.SetMaxOpenConns(3)
	stats, err := c.Run(context.Background(), time.Time{}, time.Time{}, func(Finding) error { calls++; return refused })
	if !errors.Is(err, refused) || calls != 1 || stats.Findings[ClassRunningNotMetered] != 1 {
		t.Fatalf("Run = %v after %d findings (%v); want the emit error after the first", err, calls, stats.Findings)
	}
	for i := 0; i < 3; i++ { // every connection of the pool, had one kept the table
		if got, _ := w.run(); len(got) != 2 {
			t.Fatalf("run %d after the failed one: %s", i, details(got))
		}
	}
}

// TestUsageRecheckResolvesCuredWindows: the nightly run judges the previous day, and
// judges again the windows of usage findings still open from the nights before (the
// recheck), so a night cured since (collect filled its hours late) resolves, and one
// still real stays open with its last_seen moved; an open finding older than the
// recheck's lookback stays as it is, for a person.
func TestUsageRecheckResolvesCuredWindows(t *testing.T) {
	w := newUsageWorld(t)
	loseBatch := func() {
		t.Helper()
		w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-batch' AND usage_type = 1 AND start_date = ?`, at(20, 0))
		w.rebuildUsageRecords()
	}
	// Night of the day: collect lost vm-web's 10:00-13:00 and vm-batch's 20:00.
	w.exec(`DELETE FROM cloudstack_usage WHERE usage_id = 'vm-web' AND usage_type = 1 AND start_date >= ? AND start_date < ?`, at(10, 0), at(13, 0))
	loseBatch()
	runs := 0
	night := func(recheck time.Duration) *run.Report {
		t.Helper()
		runs++
		j := &Job{DB: w.db.DB, Now: func() time.Time { return w.clock },
			Checks: []Check{(&UsageCheck{Orchestrator: w.client, StageBatch: 7, Recheck: recheck}).AsCheck()}}
		rep, err := j.Run(run.WithInfo(context.Background(), run.Info{ID: fmt.Sprintf("RUN%02d", runs), Job: "reconcile"}))
		if err != nil {
			t.Fatalf("run %d: %v", runs, err)
		}
		return rep
	}
	stored := func() map[string]StoredFinding {
		t.Helper()
		out := map[string]StoredFinding{}
		for f, err := range (&Store{DB: w.db.DB}).List(context.Background(), Filter{}) {
			if err != nil {
				t.Fatal(err)
			}
			out[f.Class+" "+f.ResourceID] = f
		}
		return out
	}
	web, batch := ClassRunningNotMetered+" vm-web", ClassRunningNotMetered+" vm-batch"

	rep := night(0)
	first := stored()
	if len(first) != 2 || first[web].State != StateOpen || first[batch].State != StateOpen ||
		!first[web].WindowFrom.Equal(day) || !first[batch].WindowTo.Equal(day.Add(24*time.Hour)) {
		t.Fatalf("first night: %+v", first)
	}
	if n, ok := rep.Counts["usage_windows_rechecked"]; !ok || n != 0 {
		t.Errorf("first night rechecked %d windows (counted: %v), want 0: its own window is the only one", n, ok)
	}

	// The next night: collect read vm-web's late hours (and the new day); vm-batch's
	// 20:00 is still lost. The run judges the new day and rechecks the day before.
	w.clock = day.Add(54 * time.Hour)
	w.collect()
	loseBatch()
	w.exec(`UPDATE usage_collect_state SET coverage = ?, read_to = ?`, w.clock, w.clock)
	rep = night(0)
	second := stored()
	if second[web].State != StateResolved || second[web].ID != first[web].ID {
		t.Errorf("cured finding: %+v, want resolved", second[web])
	}
	if b := second[batch]; b.State != StateOpen || b.ID != first[batch].ID || !b.LastSeen.Equal(w.clock) ||
		!b.FirstSeen.Equal(first[batch].FirstSeen) || !b.WindowFrom.Equal(day) {
		t.Errorf("still-real finding: %+v, want open, last seen %v, window %v", b, w.clock, day)
	}
	if len(second) != 2 {
		t.Errorf("findings after the second night: %+v", second)
	}
	if rep.Counts["usage_windows_rechecked"] != 1 || rep.Counts["findings_resolved"] != 1 || rep.Counts["usage_recheck_resources"] == 0 {
		t.Errorf("counts %v: want 1 window rechecked, 1 resolved, resources compared", rep.Counts)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Field("id") != first[batch].ID {
		t.Errorf("problems %+v, want the still-real finding only", rep.Problems)
	}
	var recheckAct bool
	for _, a := range rep.Actions {
		if a.Kind == "check" && a.Subject == "usage recheck" && strings.Contains(a.Detail, "1 finding(s) seen, 0 new, 0 reopened, 1 resolved") {
			recheckAct = true
		}
	}
	if !recheckAct {
		t.Errorf("no action reports the recheck: %+v", rep.Actions)
	}

	// A night later with a one-day lookback: the day is out of it, the finding is
	// left as it is (open, last seen the night before).
	w.clock = day.Add(78 * time.Hour)
	w.collect()
	loseBatch()
	w.exec(`UPDATE usage_collect_state SET coverage = ?, read_to = ?`, w.clock, w.clock)
	rep = night(24 * time.Hour)
	if b := stored()[batch]; b.State != StateOpen || !b.LastSeen.Equal(day.Add(54*time.Hour)) || rep.Counts["usage_windows_rechecked"] != 0 {
		t.Errorf("outside the lookback: %+v, %d windows rechecked", b, rep.Counts["usage_windows_rechecked"])
	}
	// Cured and in the default lookback: resolved.
	w.collect()
	rep = night(0)
	if b := stored()[batch]; b.State != StateResolved || rep.Counts["usage_windows_rechecked"] != 1 || len(rep.Problems) != 0 {
		t.Errorf("cured at last: %+v, counts %v, problems %+v", b, rep.Counts, rep.Problems)
	}
}

func TestRecheckWindows(t *testing.T) {
	d := func(n int) time.Time { return day.AddDate(0, 0, n) }
	open := []Window{{d(-5), d(-4)}, {d(-3), d(-2)}, {d(-2), d(-1)}, {d(-2), d(-2).Add(14 * time.Hour)}, {d(-1), d(0)}, {d(0), d(0).Add(5 * time.Hour)}}
	got := RecheckWindows(open, Window{d(-1), d(0)})
	want := []Window{{d(0), d(0).Add(5 * time.Hour)}, {d(-3), d(-1)}, {d(-5), d(-4)}}
	if !slices.Equal(got, want) {
		t.Errorf("RecheckWindows = %v, want %v", got, want)
	}
}
