package mailsink_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
)

// With RequireAuth the real sender logs in with PLAIN; no login, or a wrong
// password, delivers nothing.
func TestRequireAuthWithTheRealSender(t *testing.T) {
	s := start(t)
	s.RequireAuth("relay-user", "relay-5ecret")
	send := func(user, password string) error {
		snd, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: s.Port(), TLS: "none",
			Username: user, Password: password, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return snd.Send(context.Background(), mail.Message{From: "a@example.com", To: "b@example.com", Subject: "s", Text: "t"})
	}
	if err := send("", ""); err == nil || !strings.Contains(err.Error(), "530") {
		t.Fatalf("without a login: %v", err)
	}
	if err := send("relay-user", "wrong"); err == nil || !errors.Is(err, mail.ErrRelayUnavailable) {
		t.Fatalf("wrong password: %v", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages accepted without a good login", n)
	}
	if err := send("relay-user", "relay-5ecret"); err != nil {
		t.Fatalf("good login: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
}
