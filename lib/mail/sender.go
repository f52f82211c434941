package mail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"time"

	"github.com/rs/zerolog"
	gomail "github.com/wneessen/go-mail"
)

// ErrDeliveryUnknown means the connection broke after the whole message was handed to
// the server but before it answered: the server may have accepted it. Retrying could
// send it twice, so the Outbox leaves such a message for an operator instead.
var ErrDeliveryUnknown = errors.New("delivery outcome unknown")

// ErrRelayUnavailable means the SMTP relay could not be reached or refused the session
// (connection, TLS, EHLO or AUTH) before any message was offered. It says nothing
// about the message, so the Outbox keeps it queued without spending an attempt and
// stops the batch instead of timing out on every remaining message.
var ErrRelayUnavailable = errors.New("smtp relay unavailable")

// SMTPConfig is how to reach the SMTP relay. Its String method redacts the password so
// the config can appear in logs and errors.
type SMTPConfig struct {
	Host string
	// Port defaults to 465 for TLS "tls", 25 for "none" and 587 otherwise.
	Port     int
	Username string
	Password string
	// TLS is "" (STARTTLS when the server offers it, plaintext otherwise; go-mail's
	// TLSOpportunistic), "starttls" (STARTTLS required), "tls" (implicit TLS, port 465
	// style) or "none" (plaintext; only for a relay on loopback or the test sinks,
	// and AUTH, if any, is PLAIN to localhost only).
	TLS string
	// Timeout bounds dialing and each SMTP exchange; zero means 30s.
	Timeout time.Duration
	// From is the sender for messages that leave Message.From empty.
	From string
}

// String describes the config without its password.
func (c SMTPConfig) String() string {
	pw := ""
	if c.Password != "" {
		pw = "[redacted]"
	}
	return fmt.Sprintf("smtp{host=%s port=%d user=%q password=%s tls=%q timeout=%s from=%q}",
		c.Host, c.Port, c.Username, pw, c.TLS, c.Timeout, c.From)
}

// GoString keeps %#v from printing the password.
func (c SMTPConfig) GoString() string { return c.String() }

// Sender sends Messages through an SMTP relay with go-mail, one connection per
// message, which suits a batch job sending tens to thousands of mails an hour. It is
// safe for concurrent use.
type Sender struct {
	// Now stamps the Date header; nil means time.Now.
	Now func() time.Time

	client *gomail.Client
	from   string
	addr   string
}

// NewSender checks cfg and builds a Sender. It does not connect: a relay that is down
// shows up as a temporary Send error, which the Outbox retries.
//
// To talk to mailsink (no TLS, no AUTH), use TLS "none" and no Username.
func NewSender(cfg SMTPConfig) (*Sender, error) {
	if cfg.Host == "" {
		return nil, errors.New("smtp config: host is required")
	}
	if cfg.From != "" {
		if err := (Message{From: cfg.From, To: cfg.From, Subject: "x", Text: "x"}).Validate(); err != nil {
			return nil, fmt.Errorf("smtp config: from: %w", err)
		}
	}
	port := cfg.Port
	opts := []gomail.Option{gomail.WithoutNoop()}
	switch cfg.TLS {
	case "":
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
		if port == 0 {
			port = 587
		}
	case "starttls":
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
		if port == 0 {
			port = 587
		}
	case "tls":
		opts = append(opts, gomail.WithSSL())
		if port == 0 {
			port = 465
		}
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
		if port == 0 {
			port = 25
		}
	default:
		return nil, fmt.Errorf("smtp config: tls %q: want none, starttls, tls or empty", cfg.TLS)
	}
	opts = append(opts, gomail.WithPort(port))
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	opts = append(opts, gomail.WithTimeout(timeout))
	if cfg.Username != "" {
		// Over TLS, AUTODISCOVER picks the strongest mechanism the server offers (and
		// never PLAIN or LOGIN on a connection that stayed plaintext). With TLS "none"
		// the relay must be on loopback: PLAIN, which go-mail only sends unencrypted to
		// localhost, so a password never crosses the network in clear.
		auth := gomail.SMTPAuthAutoDiscover
		if cfg.TLS == "none" {
			auth = gomail.SMTPAuthPlain
		}
		opts = append(opts, gomail.WithSMTPAuth(auth),
			gomail.WithUsername(cfg.Username), gomail.WithPassword(cfg.Password))
	}
	client, err := gomail.NewClient(cfg.Host, opts...)
	if err != nil {
		// go-mail's option errors never include the password.
		return nil, fmt.Errorf("smtp client for %s:%d: %w", cfg.Host, port, err)
	}
	return &Sender{client: client, from: cfg.From, addr: fmt.Sprintf("%s:%d", cfg.Host, port)}, nil
}

func (s *Sender) now() time.Time {
	now := s.Now
	if now == nil {
		now = time.Now
	}
	return now()
}

// Send delivers msg over a fresh SMTP connection. Errors are wrapped with the
// recipient; IsPermanent tells a rejection (5xx, invalid message) from a failure worth
// retrying, errors.Is(err, ErrRelayUnavailable) a relay that is down or refuses us, and
// errors.Is(err, ErrDeliveryUnknown) a possibly delivered message.
// Once the server has accepted the message, errors from RSET or QUIT are ignored: the
// mail is sent and reporting a failure would invite a second send.
func (s *Sender) Send(ctx context.Context, msg Message) error {
	if msg.From == "" {
		msg.From = s.from
	}
	if msg.From == "" {
		return fmt.Errorf("send mail to %s: %w: no From and no default sender", msg.To, ErrInvalidMessage)
	}
	m, err := s.build(msg)
	if err != nil {
		return fmt.Errorf("send mail to %s: %w", msg.To, err)
	}
	sc, err := s.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fmt.Errorf("send mail to %s: %w", msg.To, &connectError{addr: s.addr, err: err})
	}
	defer func() {
		if cerr := s.client.CloseWithSMTPClient(sc); cerr != nil {
			// The message is already accepted or already failed; a broken QUIT changes
			// neither, so it is only worth a debug line.
			zerolog.Ctx(ctx).Debug().Err(cerr).Str("smtp_addr", s.addr).Msg("smtp quit failed")
		}
	}()
	err = s.client.SendWithSMTPClient(sc, m)
	if m.IsDelivered() {
		return nil
	}
	if err != nil {
		var se *gomail.SendError
		if errors.As(err, &se) && se.Reason == gomail.ErrSMTPDataClose && se.ErrorCode() == 0 {
			return fmt.Errorf("send mail to %s: %w: %w", msg.To, ErrDeliveryUnknown, err)
		}
		return fmt.Errorf("send mail to %s: %w", msg.To, err)
	}
	return nil
}

// WriteMessage writes msg as the MIME message Send hands the relay, dated date: an
// .eml file a mail client opens, for a dry run's preview (`cronkit drip --preview DIR`)
// to show exactly what would be sent, headers included. msg needs its From.
func WriteMessage(w io.Writer, msg Message, date time.Time) error {
	if msg.From == "" {
		return fmt.Errorf("write mail to %s: %w: no From", msg.To, ErrInvalidMessage)
	}
	m, err := (&Sender{Now: func() time.Time { return date }}).build(msg)
	if err != nil {
		return fmt.Errorf("write mail to %s: %w", msg.To, err)
	}
	if _, err := m.WriteTo(w); err != nil {
		return fmt.Errorf("write mail to %s: %w", msg.To, err)
	}
	return nil
}

// build turns msg into a go-mail message: text/plain, plus text/html as an alternative.
func (s *Sender) build(msg Message) (*gomail.Msg, error) {
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := m.From(msg.From); err != nil {
		return nil, fmt.Errorf("%w: from: %v", ErrInvalidMessage, err)
	}
	if err := m.To(msg.To); err != nil {
		return nil, fmt.Errorf("%w: to: %v", ErrInvalidMessage, err)
	}
	m.Subject(msg.Subject)
	m.SetDateWithValue(s.now())
	if msg.MessageID != "" {
		m.SetMessageIDWithValue(msg.MessageID)
	}
	for _, name := range sortedKeys(msg.Headers) {
		m.SetGenHeader(gomail.Header(name), msg.Headers[name])
	}
	if uris, oneClick := msg.listUnsubscribe(); oneClick {
		if err := m.SetListUnsubscribeOneClick(uris[0], uris[1:]...); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
		}
	} else if len(uris) > 0 {
		m.SetListUnsubscribe(uris...)
	}
	m.SetBodyString(gomail.TypeTextPlain, msg.Text)
	if msg.HTML != "" {
		m.AddAlternativeString(gomail.TypeTextHTML, msg.HTML)
	}
	return m, nil
}

// connectError is a failure before any message was offered: dial, TLS, EHLO or AUTH.
// Even a 5xx here (say, 535 bad credentials) is about the relay or our config, not the
// message, so it is never permanent for the message; it is ErrRelayUnavailable.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return fmt.Sprintf("connect to %s: %v", e.addr, e.err) }
func (e *connectError) Unwrap() error { return e.err }

// Is makes errors.Is(err, ErrRelayUnavailable) true.
func (e *connectError) Is(target error) bool { return target == ErrRelayUnavailable }

// IsPermanent reports whether err means the message can never be delivered as it is:
// an invalid message, or a 5xx reply to MAIL, RCPT or DATA. Everything else (4xx
// replies, network errors, timeouts, connection or login failures) is temporary and
// worth retrying later.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidMessage) {
		return true
	}
	if errors.Is(err, ErrRelayUnavailable) {
		return false
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		if se.IsTemp() {
			return false
		}
		if code := se.ErrorCode(); code >= 500 && code <= 599 {
			return true
		}
		switch se.Reason {
		case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
			return true
		}
		return false
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code >= 500 && te.Code <= 599
	}
	return false
}

// IsHardBounce reports whether err is the relay rejecting the recipient for good, so
// the address should not be mailed again: a 5xx reply to RCPT TO, or any 5xx whose
// enhanced status code (RFC 3463) is about the address, 5.1.x (no such user, bad
// domain) or 5.2.1 (mailbox disabled). A 5xx about anything else is not a bounce: a
// policy refusal (5.7.x, "relaying denied"), a refused sender (MAIL FROM) or refused
// content (5.6.x, spam) is ours to fix, and suppressing the recipient for it would
// cut a customer off their invoices because of our configuration. An enhanced code,
// when the relay sends one, decides over the command it answered.
//
// Relays that accept every recipient and bounce later (most hosted ones) report hard
// bounces out of band: record those with Outbox.Suppress and SuppressBounce.
func IsHardBounce(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.IsTemp() {
		return false
	}
	if code := se.ErrorCode(); code < 500 || code > 599 {
		return false
	}
	if esc := se.EnhancedStatusCode(); esc != "" {
		return strings.HasPrefix(esc, "5.1.") || esc == "5.2.1"
	}
	return se.Reason == gomail.ErrSMTPRcptTo
}
