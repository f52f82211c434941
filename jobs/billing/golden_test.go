package billing

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/golden"
	"github.com/cronkit/cronkit/lib/mysql"
)

// TestDryRunReportGolden pins the plan of a whole run, at a fixed clock, as ops read
// it: new hours to rate, late usage, an unpriced product, a month to close with
// credits, an open invoice to charge and one that cannot be.
func TestDryRunReportGolden(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	if _, err := (&Job{DB: db.DB, Now: at(april.Add(20 * time.Minute))}).Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	usage(t, db.DB, 2, "vm-late", "instance.small", hr(50), "1")          // late, in March
	usage(t, db.DB, 1, "gpu-1", "gpu.large", april.Add(2*time.Hour), "1") // no price
	february := time.Date(2025, 3, 1, 0, 20, 0, 0, time.UTC)
	openInvoice(t, db.DB, 4, "USD", 1250, february)
	account(t, db.DB, 7, "EUR", "")
	openInvoice(t, db.DB, 7, "EUR", 990, february)

	ro, err := mysql.Open(context.Background(), db.SelectOnlyUser(t), mysql.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	j := &Job{DB: ro, Payments: &paymentsMock{}, Now: at(april.Add(5*time.Hour + 20*time.Minute)),
		Config: Config{DryRun: true, NetDays: 14}}
	rep, err := j.Run(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	rep.RunID, rep.DryRun = "01JRUNIDFORGOLDENFILES0000", true
	var text, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "dry_run.txt.golden", text.Bytes())
	golden.Check(t, "dry_run.json.golden", js.Bytes())
}

// TestShowInvoiceGolden pins `cronkit billing show-invoice` for an invoice with usage,
// credit and a declined then successful payment.
func TestShowInvoiceGolden(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	closeAt := april.Add(20 * time.Minute)
	rateAndClose(t, db.DB, closeAt, Config{NetDays: 14})
	var id int64
	if err := db.QueryRow(`SELECT id FROM invoices WHERE account_id = 2`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	fake, client := fakeStripe(t, 5*time.Second)
	if _, err := fake.AddCustomer(fakeCustomer("cus_2", "pm_card_chargeDeclinedInsufficientFunds")); err != nil {
		t.Fatal(err)
	}
	j := &Job{DB: db.DB, Payments: client, Now: at(closeAt.Add(time.Hour)), Config: Config{Account: 2}}
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if err := fake.SetDefaultPaymentMethod("cus_2", "pm_card_visa"); err != nil {
		t.Fatal(err)
	}
	j.Now = at(closeAt.Add(25 * time.Hour))
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	inv, err := j.Invoice(testCtx(), id)
	if err != nil {
		t.Fatal(err)
	}
	// Provider ids come from the fake's sequence; pin the shape, not them.
	for i := range inv.Payments {
		inv.Payments[i].ProviderPaymentID = "pi_X"
	}
	var text, js bytes.Buffer
	if err := inv.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := inv.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "show_invoice.txt.golden", text.Bytes())
	golden.Check(t, "show_invoice.json.golden", js.Bytes())

	// Account 1's invoice, with three credits, for the credit section.
	if err := db.QueryRow(`SELECT id FROM invoices WHERE account_id = 1`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if inv, err = j.Invoice(testCtx(), id); err != nil {
		t.Fatal(err)
	}
	text.Reset()
	if err := inv.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "show_invoice_credits.txt.golden", text.Bytes())
}
