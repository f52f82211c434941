package mail

import (
	"bytes"
	"errors"
	netmail "net/mail"
	"strings"
	"testing"
	"time"
)

// WriteMessage writes what Send hands the relay: the preview a dry run shows is the
// real message, headers included.
func TestWriteMessageIsTheMessageSendBuilds(t *testing.T) {
	date := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	msg := Message{Category: Marketing, From: "Example Cloud <hello@cloud.example>", To: "ada@example.com",
		Subject: "Welcome aboard", Text: "Hi.\nUnsubscribe: https://cloud.example/u?token=t\n",
		HTML:               `<p>Hi.</p><a href="https://cloud.example/u?token=t">Unsubscribe</a>`,
		ListUnsubscribeURL: "https://cloud.example/u?token=t", ListUnsubscribeMailto: "unsubscribe@cloud.example",
		Headers: map[string]string{"X-Cronkit-Drip": "onboarding:welcome"}, MessageID: "abc@cloud.example"}
	var b bytes.Buffer
	if err := WriteMessage(&b, msg, date); err != nil {
		t.Fatal(err)
	}
	m, err := netmail.ReadMessage(&b)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"List-Unsubscribe":      "<https://cloud.example/u?token=t>, <mailto:unsubscribe@cloud.example>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"X-Cronkit-Drip":        "onboarding:welcome",
		"Message-Id":            "<abc@cloud.example>",
		"Subject":               "Welcome aboard",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if d, err := m.Header.Date(); err != nil || !d.Equal(date) {
		t.Errorf("Date %v %v, want %v", d, err, date)
	}
	if ct := m.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative") {
		t.Errorf("Content-Type %q", ct)
	}
	msg.From = ""
	if err := WriteMessage(&b, msg, date); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("no From: %v", err)
	}
}
