package billing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// ErrNoInvoice reports an invoice id that does not exist.
var ErrNoInvoice = errors.New("no such invoice")

// Invoice is an invoice as ops read it (`cronkit billing show-invoice ID`): header,
// lines, the credit it consumed and every payment attempt.
type Invoice struct {
	ID              int64            `json:"id"`
	AccountID       int64            `json:"account_id"`
	Period          string           `json:"period"`
	Currency        string           `json:"currency"`
	Subtotal        string           `json:"subtotal"`
	CreditApplied   string           `json:"credit_applied"`
	TotalMinor      int64            `json:"total_minor"`
	Total           string           `json:"total"`
	AmountPaidMinor int64            `json:"amount_paid_minor"`
	Status          string           `json:"status"`
	Collection      string           `json:"collection"`
	AttemptCount    int              `json:"attempt_count"`
	NextAttemptAt   *time.Time       `json:"next_attempt_at,omitempty"`
	LastDeclineCode string           `json:"last_decline_code,omitempty"`
	CreatedAt       time.Time        `json:"created_at"`
	OpenedAt        *time.Time       `json:"opened_at,omitempty"`
	DueAt           *time.Time       `json:"due_at,omitempty"`
	PaidAt          *time.Time       `json:"paid_at,omitempty"`
	Lines           []InvoiceLine    `json:"lines"`
	Credits         []CreditApplied  `json:"credits"`
	Payments        []PaymentAttempt `json:"payments"`
}

// InvoiceLine is a usage line (one per product) or a credit line (negative).
type InvoiceLine struct {
	Kind     string `json:"kind"`
	Product  string `json:"product"`
	Quantity string `json:"quantity"`
	Amount   string `json:"amount"`
}

// CreditApplied is credit an invoice consumed, and what the credit was.
type CreditApplied struct {
	CreditID int64      `json:"credit_id"`
	Reason   string     `json:"reason"`
	Amount   string     `json:"amount"`
	Granted  string     `json:"granted"`
	Expires  *time.Time `json:"expires_at,omitempty"`
}

// PaymentAttempt is one charge attempt with its idempotency key and outcome.
type PaymentAttempt struct {
	Attempt           int       `json:"attempt"`
	IdempotencyKey    string    `json:"idempotency_key"`
	AmountMinor       int64     `json:"amount_minor"`
	Status            string    `json:"status"`
	ProviderPaymentID string    `json:"provider_payment_id,omitempty"`
	DeclineCode       string    `json:"decline_code,omitempty"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// Invoice loads invoice id for display. It only reads.
func (j *Job) Invoice(ctx context.Context, id int64) (*Invoice, error) {
	inv := &Invoice{ID: id, Lines: []InvoiceLine{}, Credits: []CreditApplied{}, Payments: []PaymentAttempt{}}
	var period time.Time
	var next, opened, due, paid sql.NullTime
	var decline sql.NullString
	err := j.DB.QueryRowContext(ctx, `SELECT account_id, period_start, currency, subtotal, credit_applied, total_minor,
  amount_paid_minor, status, collection, attempt_count, next_attempt_at, last_decline_code, created_at, opened_at, due_at, paid_at
FROM invoices WHERE id = ?`, id).Scan(&inv.AccountID, &period, &inv.Currency, &inv.Subtotal, &inv.CreditApplied,
		&inv.TotalMinor, &inv.AmountPaidMinor, &inv.Status, &inv.Collection, &inv.AttemptCount, &next, &decline,
		&inv.CreatedAt, &opened, &due, &paid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("invoice %d: %w", id, ErrNoInvoice)
	}
	if err != nil {
		return nil, fmt.Errorf("load invoice %d: %w", id, err)
	}
	inv.Period = period.Format("2006-01")
	inv.Total = FormatMinor(inv.TotalMinor, inv.Currency)
	inv.NextAttemptAt, inv.OpenedAt, inv.DueAt, inv.PaidAt = timePtr(next), timePtr(opened), timePtr(due), timePtr(paid)
	inv.LastDeclineCode = decline.String
	inv.CreatedAt = inv.CreatedAt.UTC()

	rows, err := j.DB.QueryContext(ctx, `SELECT kind, product, quantity, amount FROM invoice_lines WHERE invoice_id = ?
ORDER BY kind, product`, id) // usage lines, then credit
	if err != nil {
		return nil, fmt.Errorf("load invoice %d lines: %w", id, err)
	}
	for rows.Next() {
		var l InvoiceLine
		if err := rows.Scan(&l.Kind, &l.Product, &l.Quantity, &l.Amount); err != nil {
			rows.Close()
			return nil, fmt.Errorf("load invoice %d lines: %w", id, err)
		}
		inv.Lines = append(inv.Lines, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load invoice %d lines: %w", id, err)
	}

	rows, err = j.DB.QueryContext(ctx, `SELECT ca.credit_id, c.reason, ca.amount, c.granted_at, c.expires_at
FROM credit_applications ca JOIN credits c ON c.id = ca.credit_id WHERE ca.invoice_id = ? ORDER BY ca.credit_id`, id)
	if err != nil {
		return nil, fmt.Errorf("load invoice %d credits: %w", id, err)
	}
	for rows.Next() {
		var c CreditApplied
		var granted time.Time
		var expires sql.NullTime
		if err := rows.Scan(&c.CreditID, &c.Reason, &c.Amount, &granted, &expires); err != nil {
			rows.Close()
			return nil, fmt.Errorf("load invoice %d credits: %w", id, err)
		}
		c.Granted, c.Expires = granted.UTC().Format(time.RFC3339), timePtr(expires)
		inv.Credits = append(inv.Credits, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load invoice %d credits: %w", id, err)
	}

	rows, err = j.DB.QueryContext(ctx, `SELECT attempt, idempotency_key, amount_minor, status, provider_payment_id, decline_code,
  created_at, updated_at FROM payments WHERE invoice_id = ? ORDER BY attempt`, id)
	if err != nil {
		return nil, fmt.Errorf("load invoice %d payments: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p PaymentAttempt
		var pi, code sql.NullString
		if err := rows.Scan(&p.Attempt, &p.IdempotencyKey, &p.AmountMinor, &p.Status, &pi, &code, &p.CreatedAt, &p.UpdatedAt); err != nil {
			return nil, fmt.Errorf("load invoice %d payments: %w", id, err)
		}
		p.ProviderPaymentID, p.DeclineCode = pi.String, code.String
		p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
		inv.Payments = append(inv.Payments, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load invoice %d payments: %w", id, err)
	}
	return inv, nil
}

func timePtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

// WriteJSON renders the invoice as one indented JSON document.
func (inv *Invoice) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(inv)
}

// WriteText renders the invoice for people.
func (inv *Invoice) WriteText(w io.Writer) error {
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "invoice %d\taccount %d\tperiod %s\n", inv.ID, inv.AccountID, inv.Period)
	fmt.Fprintf(tw, "status\t%s\tcollection %s\n", inv.Status, inv.Collection)
	fmt.Fprintf(tw, "subtotal\t%s %s\t\n", inv.Currency, inv.Subtotal)
	fmt.Fprintf(tw, "credit applied\t%s %s\t\n", inv.Currency, inv.CreditApplied)
	fmt.Fprintf(tw, "total\t%s\tpaid %s\n", inv.Total, FormatMinor(inv.AmountPaidMinor, inv.Currency))
	fmt.Fprintf(tw, "created\t%s\topened %s\n", inv.CreatedAt.Format(time.RFC3339), ts(inv.OpenedAt))
	fmt.Fprintf(tw, "due\t%s\tpaid %s\n", ts(inv.DueAt), ts(inv.PaidAt))
	next := ts(inv.NextAttemptAt)
	if inv.LastDeclineCode != "" {
		next += ", last decline " + inv.LastDeclineCode
	}
	fmt.Fprintf(tw, "attempts\t%d\tnext %s\n", inv.AttemptCount, next)
	fmt.Fprintf(tw, "\nLINE\tPRODUCT\tQUANTITY\tAMOUNT\n")
	for _, l := range inv.Lines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Kind, l.Product, l.Quantity, l.Amount)
	}
	if len(inv.Credits) > 0 {
		fmt.Fprintf(tw, "\nCREDIT\tREASON\tAPPLIED\tGRANTED\tEXPIRES\n")
		for _, c := range inv.Credits {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.CreditID, c.Reason, c.Amount, c.Granted, ts(c.Expires))
		}
	}
	if len(inv.Payments) > 0 {
		fmt.Fprintf(tw, "\nATTEMPT\tKEY\tAMOUNT\tSTATUS\tPROVIDER ID\tDECLINE\tAT\n")
		for _, p := range inv.Payments {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Attempt, p.IdempotencyKey, FormatMinor(p.AmountMinor, inv.Currency),
				p.Status, dash(p.ProviderPaymentID), dash(p.DeclineCode), p.UpdatedAt.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
