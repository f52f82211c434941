package mail_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
)

var fixedNow = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// startSink runs a mailsink and a Sender configured for it (no TLS, no AUTH).
func startSink(t *testing.T) (*mailsink.Sink, *mail.Sender) {
	t.Helper()
	sink, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start sink: %v", err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	s, err := mail.NewSender(mail.SMTPConfig{
		Host: "127.0.0.1", Port: sink.Port(), TLS: "none", Timeout: 5 * time.Second,
		From: "Cronkit <noreply@cloud.example>",
	})
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	s.Now = func() time.Time { return fixedNow }
	return sink, s
}

// mimePart is one decoded part of a received message.
type mimePart struct {
	contentType string
	body        string
}

// alternativeParts decodes a multipart/alternative body into its parts.
func alternativeParts(t *testing.T, contentType string, body io.Reader) []mimePart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type = %q (%v), want multipart/alternative", contentType, err)
	}
	var parts []mimePart
	r := multipart.NewReader(body, params["boundary"])
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		var rd io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			rd = quotedprintable.NewReader(p)
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, mimePart{contentType: ct, body: strings.ReplaceAll(string(b), "\r\n", "\n")})
	}
	return parts
}

func TestSenderDeliversMultipartWithUnsubscribeHeaders(t *testing.T) {
	sink, s := startSink(t)
	msg := validMessage()
	msg.Subject = "Überfällig: Rechnung INV-42" // non-ASCII goes through RFC 2047
	if err := s.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := sink.Messages()
	if len(got) != 1 {
		t.Fatalf("sink got %d messages, want 1", len(got))
	}
	r := got[0]
	if r.From != "billing@cloud.example" || len(r.To) != 1 || r.To[0] != "ada@customer.example" {
		t.Errorf("envelope = %q -> %q, want billing@cloud.example -> [ada@customer.example]", r.From, r.To)
	}
	h := r.Header
	if h == nil {
		t.Fatalf("header did not parse: %q", r.Data)
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(h.Get("Subject"))
	if err != nil || subject != msg.Subject {
		t.Errorf("Subject = %q (%v), want %q", subject, err, msg.Subject)
	}
	for name, want := range map[string]string{
		"List-Unsubscribe":      "<https://cloud.example/unsubscribe?t=abc123>, <mailto:unsubscribe@cloud.example?subject=unsubscribe%20abc123>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"Message-Id":            "<0f1e2d3c@cloud.example>",
		"X-Cronkit-Case":        "42",
		"X-Cronkit-Step":        "reminded",
		"Date":                  "Fri, 14 Mar 2025 09:26:53 +0000",
		"Mime-Version":          "1.0",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "ada@customer.example" || to[0].Name != "Ada Lovelace" {
		t.Errorf("To = %v (%v)", to, err)
	}
	if from, err := h.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "billing@cloud.example" {
		t.Errorf("From = %v (%v)", from, err)
	}
	body := r.Data[strings.Index(string(r.Data), "\r\n\r\n")+4:]
	parts := alternativeParts(t, h.Get("Content-Type"), strings.NewReader(string(body)))
	want := []mimePart{
		{"text/plain", msg.Text},
		{"text/html", msg.HTML},
	}
	if len(parts) != len(want) {
		t.Fatalf("parts = %+v, want %+v", parts, want)
	}
	for i := range want {
		if parts[i] != want[i] {
			t.Errorf("part %d = %+v, want %+v", i, parts[i], want[i])
		}
	}
}

func TestSenderHeadersWithoutOneClick(t *testing.T) {
	sink, s := startSink(t)
	msg := validMessage()
	msg.From = "" // the configured default
	msg.ListUnsubscribeURL = ""
	msg.MessageID = ""
	msg.HTML = ""
	if err := s.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r, err := sink.Last()
	if err != nil {
		t.Fatal(err)
	}
	if r.From != "noreply@cloud.example" {
		t.Errorf("envelope from = %q, want the configured default", r.From)
	}
	if got := r.Header.Get("List-Unsubscribe"); got != "<mailto:unsubscribe@cloud.example?subject=unsubscribe%20abc123>" {
		t.Errorf("List-Unsubscribe = %q", got)
	}
	if got := r.Header.Get("List-Unsubscribe-Post"); got != "" {
		t.Errorf("List-Unsubscribe-Post = %q without an https URL; RFC 8058 needs one", got)
	}
	if id := r.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.Contains(id, "@") {
		t.Errorf("generated Message-ID = %q", id)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want a single text/plain part", ct)
	}
}

func TestSenderClassifiesFailures(t *testing.T) {
	tests := []struct {
		code      int
		permanent bool
	}{
		{421, false},
		{451, false},
		{452, false},
		{550, true},
		{553, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			sink, s := startSink(t)
			sink.FailNext(1, tt.code)
			err := s.Send(context.Background(), validMessage())
			if err == nil {
				t.Fatalf("Send succeeded, want a %d error", tt.code)
			}
			if got := mail.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, got, tt.permanent)
			}
			var se *gomail.SendError
			if !errors.As(err, &se) || se.ErrorCode() != tt.code {
				t.Errorf("err = %v, want a go-mail SendError with code %d", err, tt.code)
			}
			if !strings.Contains(err.Error(), "ada@customer.example") {
				t.Errorf("err = %v, want the recipient in it", err)
			}
			if n := len(sink.Messages()); n != 0 {
				t.Errorf("sink got %d messages after a rejected RCPT", n)
			}
			// The fault was for one message only: the next one goes through.
			if err := s.Send(context.Background(), validMessage()); err != nil {
				t.Fatalf("second Send: %v", err)
			}
			if n := len(sink.Messages()); n != 1 {
				t.Errorf("sink got %d messages, want 1", n)
			}
		})
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

func TestSenderConnectionFailuresAreTemporary(t *testing.T) {
	s, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: closedPort(t), TLS: "none", Timeout: 2 * time.Second, From: "a@cloud.example"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), validMessage())
	if err == nil || mail.IsPermanent(err) {
		t.Fatalf("Send to a closed port: err = %v, want a temporary error", err)
	}
	if !errors.Is(err, mail.ErrRelayUnavailable) {
		t.Errorf("err = %v, want ErrRelayUnavailable", err)
	}
	if errors.Is(err, mail.ErrDeliveryUnknown) {
		t.Errorf("err = %v: nothing was handed over, so the outcome is known", err)
	}
}

func TestSenderDropAfterDataIsUnknown(t *testing.T) {
	sink, s := startSink(t)
	sink.DropNext(1)
	err := s.Send(context.Background(), validMessage())
	if !errors.Is(err, mail.ErrDeliveryUnknown) {
		t.Fatalf("err = %v, want ErrDeliveryUnknown", err)
	}
	if mail.IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = true", err)
	}
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("sink recorded %d messages, want 1 (received, then hung up)", n)
	}
}

func TestSenderRefusesInvalidMessageWithoutConnecting(t *testing.T) {
	sink, s := startSink(t)
	msg := validMessage()
	msg.Headers = map[string]string{"X-Evil": "a\r\nBcc: victim@example.com"}
	err := s.Send(context.Background(), msg)
	if !errors.Is(err, mail.ErrInvalidMessage) || !mail.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent ErrInvalidMessage", err)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages", n)
	}
}

func TestSenderConcurrentSends(t *testing.T) {
	sink, s := startSink(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := validMessage()
			msg.To = fmt.Sprintf("user%02d@customer.example", i)
			msg.MessageID = fmt.Sprintf("m%02d@cloud.example", i)
			errs <- s.Send(context.Background(), msg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Send: %v", err)
		}
	}
	seen := map[string]bool{}
	for _, r := range sink.Messages() {
		seen[r.To[0]] = true
	}
	if len(seen) != n {
		t.Errorf("sink got %d distinct recipients, want %d", len(seen), n)
	}
}

func TestNewSenderConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  mail.SMTPConfig
		want string
	}{
		{"no host", mail.SMTPConfig{}, "host is required"},
		{"bad tls", mail.SMTPConfig{Host: "smtp.example", TLS: "ssl"}, `tls "ssl"`},
		{"bad from", mail.SMTPConfig{Host: "smtp.example", From: "nobody"}, "from"},
		{"bad port", mail.SMTPConfig{Host: "smtp.example", Port: 70000}, "smtp client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mail.NewSender(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSender: err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	for _, tls := range []string{"", "none", "starttls", "tls"} {
		if _, err := mail.NewSender(mail.SMTPConfig{Host: "smtp.example", TLS: tls}); err != nil {
			t.Errorf("TLS %q: %v", tls, err)
		}
	}
}

func TestSMTPConfigNeverPrintsPassword(t *testing.T) {
	cfg := mail.SMTPConfig{Host: "smtp.example", Port: 587, Username: "cronkit", Password: "hunter2-s3cret", From: "a@b.example"}
	for _, format := range []string{"%v", "%+v", "%s", "%#v"} {
		out := fmt.Sprintf(format, cfg)
		if strings.Contains(out, "hunter2-s3cret") {
			t.Errorf("%s printed the password: %s", format, out)
		}
		if !strings.Contains(out, "cronkit") || !strings.Contains(out, "[redacted]") {
			t.Errorf("%s = %s, want the user and a redaction marker", format, out)
		}
	}
}

func TestIsPermanent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"invalid message", fmt.Errorf("x: %w", mail.ErrInvalidMessage), true},
		{"550 reply", &textproto.Error{Code: 550, Msg: "no such user"}, true},
		{"wrapped 554 reply", fmt.Errorf("send: %w", &textproto.Error{Code: 554, Msg: "rejected"}), true},
		{"451 reply", &textproto.Error{Code: 451, Msg: "try later"}, false},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{"deadline", context.DeadlineExceeded, false},
		{"unknown outcome", fmt.Errorf("%w: eof", mail.ErrDeliveryUnknown), false},
		{"relay unavailable", fmt.Errorf("%w: 535 bad credentials", mail.ErrRelayUnavailable), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mail.IsPermanent(tt.err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestIsHardBounce(t *testing.T) {
	tests := []struct {
		code   int
		text   string
		bounce bool
	}{
		{550, "mailsink: injected failure", true}, // RCPT TO refused, no enhanced code
		{550, "5.1.1 no such user", true},
		{553, "5.1.3 bad recipient address syntax", true},
		{554, "5.2.1 mailbox disabled", true},
		{550, "5.7.1 relaying denied", false}, // our relay config, not the address
		{550, "5.7.26 unauthenticated mail", false},
		{552, "5.2.2 mailbox full", false},
		{554, "5.6.0 content rejected", false},
		{450, "4.2.1 mailbox busy", false},
		{451, "4.1.1 try later", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.code, tt.text), func(t *testing.T) {
			err := rejection(t, tt.code, tt.text)
			if got := mail.IsHardBounce(err); got != tt.bounce {
				t.Errorf("IsHardBounce(%v) = %v, want %v", err, got, tt.bounce)
			}
			if tt.bounce && !mail.IsPermanent(err) {
				t.Errorf("a hard bounce is not permanent: %v", err)
			}
		})
	}
	for _, err := range []error{nil, &textproto.Error{Code: 550, Msg: "x"}, mail.ErrInvalidMessage, errors.New("550 x")} {
		if mail.IsHardBounce(err) {
			t.Errorf("IsHardBounce(%v) = true, want false for anything but the relay's reply", err)
		}
	}
}
