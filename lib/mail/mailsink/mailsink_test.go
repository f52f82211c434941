package mailsink_test

import (
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/mail/mailsink"
)

func start(t *testing.T) *mailsink.Sink {
	t.Helper()
	s, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// dial opens a raw SMTP conversation and reads the greeting.
func dial(t *testing.T, s *mailsink.Sink) *textproto.Conn {
	t.Helper()
	c, err := textproto.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

// cmd sends one command and checks the reply code.
func cmd(t *testing.T, c *textproto.Conn, want int, format string, args ...any) string {
	t.Helper()
	if err := c.PrintfLine(format, args...); err != nil {
		t.Fatalf("%s: %v", format, err)
	}
	_, msg, err := c.ReadResponse(want)
	if err != nil {
		t.Fatalf("%s: %v (want %d)", format, err, want)
	}
	return msg
}

func TestSinkRecordsWithStdlibClient(t *testing.T) {
	s := start(t)
	body := "From: a@x.example\r\nTo: b@y.example\r\nSubject: hello\r\n\r\nline one\r\n.starts with a dot\r\n"
	if err := smtp.SendMail(s.Addr(), nil, "a@x.example", []string{"b@y.example", "c@y.example"}, []byte(body)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@x.example" || strings.Join(m.To, ",") != "b@y.example,c@y.example" {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if string(m.Data) != body {
		t.Errorf("data = %q, want %q (dot-unstuffed, CRLF)", m.Data, body)
	}
	if m.Header.Get("Subject") != "hello" {
		t.Errorf("Subject = %q", m.Header.Get("Subject"))
	}
	last, err := s.Last()
	if err != nil || string(last.Data) != body {
		t.Errorf("Last() = %q, %v", last.Data, err)
	}
	s.Reset()
	if _, err := s.Last(); !errors.Is(err, mailsink.ErrNoMessage) {
		t.Errorf("Last after Reset: %v, want ErrNoMessage", err)
	}
}

func TestSinkProtocol(t *testing.T) {
	s := start(t)
	c := dial(t, s)
	cmd(t, c, 503, "MAIL FROM:<a@x.example>") // no EHLO yet
	ext := cmd(t, c, 250, "EHLO client.example")
	for _, want := range []string{"8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ext, want) {
			t.Errorf("EHLO reply %q does not advertise %s", ext, want)
		}
	}
	for _, unwanted := range []string{"STARTTLS", "AUTH"} {
		if strings.Contains(ext, unwanted) {
			t.Errorf("EHLO reply %q advertises %s", ext, unwanted)
		}
	}
	cmd(t, c, 503, "RCPT TO:<b@y.example>") // no MAIL yet
	cmd(t, c, 503, "DATA")
	cmd(t, c, 250, "NOOP")
	cmd(t, c, 501, "MAIL FROM:a@x.example")
	cmd(t, c, 250, "MAIL FROM:<a@x.example> BODY=8BITMIME SMTPUTF8")
	cmd(t, c, 250, "RCPT TO:<dropped@y.example>")
	cmd(t, c, 250, "RSET") // forgets the transaction
	cmd(t, c, 503, "DATA")
	cmd(t, c, 250, "MAIL FROM:<>") // the null sender of bounces
	cmd(t, c, 250, "RCPT TO:<b@y.example>")
	cmd(t, c, 354, "DATA")
	cmd(t, c, 250, "Subject: x\r\n\r\nbody\r\n.")
	cmd(t, c, 502, "VRFY b@y.example")
	cmd(t, c, 221, "QUIT")
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	if msgs[0].From != "" || strings.Join(msgs[0].To, ",") != "b@y.example" {
		t.Errorf("envelope = %q -> %q, want <> -> b@y.example only", msgs[0].From, msgs[0].To)
	}
}

func TestSinkHELO(t *testing.T) {
	s := start(t)
	c := dial(t, s)
	cmd(t, c, 250, "HELO old.example")
	cmd(t, c, 250, "MAIL FROM:<a@x.example>")
}

func TestSinkFailNext(t *testing.T) {
	s := start(t)
	s.FailNext(2, 451)
	c := dial(t, s)
	cmd(t, c, 250, "EHLO client.example")
	cmd(t, c, 250, "MAIL FROM:<a@x.example>")
	cmd(t, c, 451, "RCPT TO:<b@y.example>")
	cmd(t, c, 451, "RCPT TO:<b@y.example>")
	cmd(t, c, 250, "RCPT TO:<b@y.example>")
	s.FailNext(1, 550)
	cmd(t, c, 550, "RCPT TO:<c@y.example>")
}

func TestSinkDropNextHangsUpAfterData(t *testing.T) {
	s := start(t)
	s.DropNext(1)
	c := dial(t, s)
	cmd(t, c, 250, "EHLO client.example")
	cmd(t, c, 250, "MAIL FROM:<a@x.example>")
	cmd(t, c, 250, "RCPT TO:<b@y.example>")
	cmd(t, c, 354, "DATA")
	if err := c.PrintfLine("Subject: x\r\n\r\nbody\r\n."); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadResponse(250); err == nil {
		t.Fatalf("got a reply, want the connection closed")
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("recorded %d messages, want 1", n)
	}
}

func TestCloseEndsOpenSessions(t *testing.T) {
	s, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	cmd(t, c, 250, "EHLO client.example")
	if err := s.Close(); err != nil { // must not wait for the idle client
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.ReadLine(); err == nil {
		t.Errorf("connection still open after Close")
	}
	if _, err := textproto.Dial("tcp", s.Addr()); err == nil {
		t.Errorf("sink still accepts connections after Close")
	}
}
