// Package mail sends cronkit's email: dunning reminders, suspension notices and the
// onboarding campaign. Jobs render a Message from embedded Templates, write it to the
// Outbox in the same transaction as the state change that caused it, and a Deliver
// pass hands queued rows to the SMTP Sender (go-mail). The outbox row carries a unique
// key per business step, so a crash or a rerun never sends a step twice, and the
// suppression list keeps mail away from people who unsubscribed or bounced.
//
// # Marketing and transactional mail
//
// Every message has a Category. Transactional mail (invoices, suspension notices) is
// what a customer must get to run an account; marketing mail (the onboarding funnel,
// welcome included) is what they may refuse. A marketing unsubscribe suppresses only
// marketing; a hard bounce or a complaint suppresses both (see SuppressionKind). A
// marketing message must carry an RFC 8058 one-click List-Unsubscribe URL and show it
// in its body, or Validate refuses it: UnsubscribeKeys builds the link, and
// UnsubscribeHandler is the endpoint behind it.
//
// # How a campaign job uses the package (drip)
//
// At start (a bad template, secret or URL is a usage error, exit 2):
//
//	tmpl, err := mail.NewTemplates(embedded, mail.TemplateDir(templatesFlag)) // --templates DIR
//	keys, err := mail.NewUnsubscribeKeys(strings.Split(secretFlag, ",")...)  // first signs, all verify
//	links := mail.UnsubscribeLinks{BaseURL: urlFlag, Mailto: mailtoFlag, Keys: keys}
//	err = links.Check()
//	outbox := &mail.Outbox{DB: db, Now: now, KeyPrefix: "drip:", BeforeSend: j.stillWanted}
//
// In the transaction that moves a signup to its next step, after re-checking the goal
// and the exits (facts include outbox.Suppressions(ctx, tx, email): an unsubscribe, a
// bounce or a complaint exits the funnel) and the frequency cap (outbox.MarketingTimes
// over the recipient's local day, every campaign counted):
//
//	link, err := links.Link(accountID, "onboarding")
//	subject, text, html, err := tmpl.Render(step, data{..., UnsubscribeURL: link.URL})
//	msg := mail.Message{Category: mail.Marketing, To: email, Subject: subject, Text: text,
//		HTML: html, ListUnsubscribeURL: link.URL, ListUnsubscribeMailto: link.Mailto}
//	res, err := outbox.EnqueueAt(ctx, tx, "drip:onboarding:account:42:first_vm", msg, sendAt)
//	// res.New false: the step was queued before (a rerun); res.Suppressed set: the
//	// row is recorded 'suppressed' and will not be sent.
//
// At the end of the run, outbox.Deliver(ctx, sender, limit) sends the due messages
// whose keys start with "drip:" (its own, never abuse's). In the transaction that
// claims each one it checks the suppression list for the message's category and then
// calls BeforeSend:
//
//	func (j *Job) stillWanted(ctx context.Context, tx *sql.Tx, m mail.QueuedMessage) (cancel bool, reason string, err error)
//
// which reads the account's case and facts through tx (the key names the account) and
// cancels a step queued before the account converted, unsubscribed or left: the
// message ends 'cancelled' with the reason and is never sent. A relay's permanent
// rejection of the recipient suppresses the address as a bounce (DeliveryItem.Bounced),
// which the funnel's next look at the facts reads as an exit; a temporary one is
// retried after Backoff; a message whose outcome is unknown stays 'sending' and is
// reported in DeliveryReport.Stuck, never resent blind.
//
// Ops commands (`cronkit drip suppress EMAIL --reason bounce|complaint|unsubscribe`, the
// list, the lift) call Suppress (kind from ParseSuppressionKind), ListSuppressions or
// Suppressions, and Lift. A web app mounts NewUnsubscribeHandler(keys, recorder, org)
// at links.BaseURL, with an Unsubscriber that records the unsubscribe: drip's calls
// Suppress(ctx, tx, email, SuppressUnsubscribe, ...) for the account's address and
// exits the funnel, in one transaction.
package mail

import (
	"errors"
	"fmt"
	"html"
	"net/mail"
	"net/url"
	"sort"
	"strings"
)

// ErrInvalidMessage marks a message that no retry can deliver (bad address, header
// injection attempt, missing body). It is permanent: IsPermanent reports true.
var ErrInvalidMessage = errors.New("invalid message")

// Category says whether a message is one a customer may refuse (Marketing) or one they
// need to run their account (Transactional). Suppressions apply by category, and the
// outbox stores it with every row.
type Category string

// The categories. The zero value of Message.Category means Transactional, which is
// what every message was before categories existed (abuse's notices).
const (
	Transactional Category = "transactional"
	Marketing     Category = "marketing"
)

// orDefault maps the zero value to Transactional.
func (c Category) orDefault() Category {
	if c == "" {
		return Transactional
	}
	return c
}

// Message is one email as a job means it, before any MIME encoding. It is stored in the
// outbox as is and rebuilt into MIME only when sent, so a dry run can show exactly
// these fields.
type Message struct {
	// Category is Marketing or Transactional; empty means Transactional. A Marketing
	// message must have ListUnsubscribeURL, and its text (and HTML, if any) must show
	// that URL: the bulk-sender rules of Gmail and Yahoo ask for both.
	Category Category
	// From is the sender ("Name <addr>" or a bare address). Empty means the Sender's
	// configured SMTPConfig.From.
	From string
	// To is exactly one recipient: cronkit never sends one message to several customers.
	To      string
	Subject string
	// Text is the plain-text body, always required: it is what many clients, spam
	// filters and screen readers use.
	Text string
	// HTML is the optional HTML alternative; with it the message is
	// multipart/alternative.
	HTML string
	// Headers are extra headers (for example X-Cronkit-Case). They are written in
	// sorted order. Headers the package sets itself (From, To, Subject, Message-ID,
	// Date, MIME and List-Unsubscribe headers) are refused here.
	Headers map[string]string
	// ListUnsubscribeURL is the HTTPS endpoint of RFC 8058 one-click unsubscribe. When
	// set, the message carries List-Unsubscribe (with the mailto fallback, if any) and
	// List-Unsubscribe-Post: List-Unsubscribe=One-Click. Mailbox providers only honour
	// one-click when those headers are covered by a DKIM signature, which the relay
	// adds.
	ListUnsubscribeURL string
	// ListUnsubscribeMailto is the RFC 2369 mailto unsubscribe address, with or without
	// the "mailto:" prefix (a ?subject= is allowed).
	ListUnsubscribeMailto string
	// MessageID is the Message-ID without angle brackets (local@domain). Empty means one
	// is generated when the message is sent; the Outbox derives a stable one from the
	// dedupe key.
	MessageID string
}

// reservedHeaders are set by the package from Message fields or by go-mail; allowing
// them in Headers would produce duplicates or let a template override the envelope.
var reservedHeaders = map[string]bool{
	"bcc": true, "cc": true, "content-transfer-encoding": true, "content-type": true,
	"date": true, "from": true, "list-unsubscribe": true, "list-unsubscribe-post": true,
	"message-id": true, "mime-version": true, "reply-to": true, "subject": true, "to": true,
}

// Validate reports, wrapped in ErrInvalidMessage, why m cannot be sent. The Outbox
// validates at Enqueue so a bad message fails the job that built it, not a later
// delivery run.
func (m Message) Validate() error {
	switch m.Category {
	case "", Transactional, Marketing:
	default:
		return fmt.Errorf("%w: category %q: want %s or %s", ErrInvalidMessage, m.Category, Marketing, Transactional)
	}
	if m.From != "" {
		if _, err := mail.ParseAddress(m.From); err != nil {
			return fmt.Errorf("%w: from %q: %v", ErrInvalidMessage, m.From, err)
		}
	}
	if _, err := mail.ParseAddress(m.To); err != nil {
		return fmt.Errorf("%w: to %q: %v", ErrInvalidMessage, m.To, err)
	}
	if strings.TrimSpace(m.Subject) == "" {
		return fmt.Errorf("%w: empty subject", ErrInvalidMessage)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		return fmt.Errorf("%w: subject contains a line break", ErrInvalidMessage)
	}
	if strings.TrimSpace(m.Text) == "" {
		return fmt.Errorf("%w: empty text body", ErrInvalidMessage)
	}
	for _, name := range sortedKeys(m.Headers) {
		if !validHeaderName(name) {
			return fmt.Errorf("%w: header name %q", ErrInvalidMessage, name)
		}
		if reservedHeaders[strings.ToLower(name)] {
			return fmt.Errorf("%w: header %s is set by the mail package", ErrInvalidMessage, name)
		}
		if strings.ContainsAny(m.Headers[name], "\r\n") {
			return fmt.Errorf("%w: header %s contains a line break", ErrInvalidMessage, name)
		}
	}
	if m.ListUnsubscribeURL != "" {
		u, err := url.Parse(m.ListUnsubscribeURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("%w: list-unsubscribe URL must be an https URL (RFC 8058)", ErrInvalidMessage)
		}
		if strings.ContainsAny(m.ListUnsubscribeURL, "<>, \r\n") {
			return fmt.Errorf("%w: list-unsubscribe URL must be percent-encoded", ErrInvalidMessage)
		}
	}
	if m.ListUnsubscribeMailto != "" {
		addr, _, _ := strings.Cut(strings.TrimPrefix(m.ListUnsubscribeMailto, "mailto:"), "?")
		if _, err := mail.ParseAddress(addr); err != nil || strings.ContainsAny(m.ListUnsubscribeMailto, "<>, \r\n") {
			return fmt.Errorf("%w: list-unsubscribe mailto %q", ErrInvalidMessage, m.ListUnsubscribeMailto)
		}
	}
	if m.MessageID != "" {
		if !strings.Contains(m.MessageID, "@") || strings.ContainsAny(m.MessageID, "<> \t\r\n") {
			return fmt.Errorf("%w: message-id %q must be local@domain without brackets", ErrInvalidMessage, m.MessageID)
		}
	}
	if m.Category == Marketing {
		if m.ListUnsubscribeURL == "" {
			return fmt.Errorf("%w: a marketing message needs a one-click List-Unsubscribe URL", ErrInvalidMessage)
		}
		if !strings.Contains(m.Text, m.ListUnsubscribeURL) {
			return fmt.Errorf("%w: the text of a marketing message must show its unsubscribe URL", ErrInvalidMessage)
		}
		if m.HTML != "" && !strings.Contains(m.HTML, m.ListUnsubscribeURL) &&
			!strings.Contains(m.HTML, html.EscapeString(m.ListUnsubscribeURL)) {
			return fmt.Errorf("%w: the HTML of a marketing message must show its unsubscribe URL", ErrInvalidMessage)
		}
	}
	return nil
}

// listUnsubscribe returns the List-Unsubscribe URIs in RFC 8058 order (https first)
// and whether the one-click Post header applies.
func (m Message) listUnsubscribe() (uris []string, oneClick bool) {
	if m.ListUnsubscribeURL != "" {
		uris = append(uris, m.ListUnsubscribeURL)
	}
	if m.ListUnsubscribeMailto != "" {
		mailto := m.ListUnsubscribeMailto
		if !strings.HasPrefix(mailto, "mailto:") {
			mailto = "mailto:" + mailto
		}
		uris = append(uris, mailto)
	}
	return uris, m.ListUnsubscribeURL != ""
}

// recipientAddress is the bare, lower-cased address of m.To, the form the suppression
// list is keyed by.
func (m Message) recipientAddress() (string, error) {
	return NormalizeAddress(m.To)
}

// NormalizeAddress returns the bare, lower-cased address of addr ("Ada
// <Ada@Example.com>" -> "ada@example.com"): the form mail_suppressions.email and
// mail_outbox.recipient_address hold, so a job that joins them to its own tables
// (accounts.email) compares like with like. Lower-casing the local part is not what
// RFC 5321 promises, but it is what every mailbox provider does, and suppressing
// Ada@ along with ada@ errs on the side of not mailing someone.
func NormalizeAddress(addr string) (string, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return "", fmt.Errorf("%w: to %q: %v", ErrInvalidMessage, addr, err)
	}
	return strings.ToLower(a.Address), nil
}

// validHeaderName accepts RFC 5322 field names: printable ASCII except colon.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
