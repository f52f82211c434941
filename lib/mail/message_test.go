package mail_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/mail"
)

func validMessage() mail.Message {
	return mail.Message{
		From:                  "Cronkit Billing <billing@cloud.example>",
		To:                    "Ada Lovelace <ada@customer.example>",
		Subject:               "Invoice INV-42 is overdue",
		Text:                  "Please pay invoice INV-42.\n",
		HTML:                  "<p>Please pay invoice INV-42.</p>\n",
		Headers:               map[string]string{"X-Cronkit-Case": "42", "X-Cronkit-Step": "reminded"},
		ListUnsubscribeURL:    "https://cloud.example/unsubscribe?t=abc123",
		ListUnsubscribeMailto: "unsubscribe@cloud.example?subject=unsubscribe%20abc123",
		MessageID:             "0f1e2d3c@cloud.example",
	}
}

func TestMessageValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*mail.Message)
		want   string // "" = valid
	}{
		{"complete", func(*mail.Message) {}, ""},
		{"no from (sender default)", func(m *mail.Message) { m.From = "" }, ""},
		{"text only", func(m *mail.Message) { m.HTML = "" }, ""},
		{"mailto only", func(m *mail.Message) { m.ListUnsubscribeURL = "" }, ""},
		{"mailto with scheme", func(m *mail.Message) { m.ListUnsubscribeMailto = "mailto:u@cloud.example" }, ""},
		{"bad from", func(m *mail.Message) { m.From = "billing" }, "from"},
		{"no to", func(m *mail.Message) { m.To = "" }, "to"},
		{"two recipients", func(m *mail.Message) { m.To = "a@x.example, b@x.example" }, "to"},
		{"empty subject", func(m *mail.Message) { m.Subject = " " }, "empty subject"},
		{"subject injection", func(m *mail.Message) { m.Subject = "hi\r\nBcc: x@y.example" }, "line break"},
		{"no text", func(m *mail.Message) { m.Text = "" }, "empty text"},
		{"header injection", func(m *mail.Message) { m.Headers = map[string]string{"X-A": "1\r\nBcc: x@y.example"} }, "line break"},
		{"bad header name", func(m *mail.Message) { m.Headers = map[string]string{"X A": "1"} }, "header name"},
		{"reserved header", func(m *mail.Message) { m.Headers = map[string]string{"bcc": "x@y.example"} }, "set by the mail package"},
		{"http unsubscribe", func(m *mail.Message) { m.ListUnsubscribeURL = "http://cloud.example/u" }, "https"},
		{"unsubscribe with comma", func(m *mail.Message) { m.ListUnsubscribeURL = "https://cloud.example/u,x" }, "percent-encoded"},
		{"bad mailto", func(m *mail.Message) { m.ListUnsubscribeMailto = "mailto:nobody" }, "mailto"},
		{"message id with brackets", func(m *mail.Message) { m.MessageID = "<a@b>" }, "message-id"},
		{"message id without domain", func(m *mail.Message) { m.MessageID = "abc" }, "message-id"},
		{"explicit transactional", func(m *mail.Message) { m.Category = mail.Transactional }, ""},
		{"unknown category", func(m *mail.Message) { m.Category = "newsletter" }, "category"},
		{"marketing without one-click URL", func(m *mail.Message) {
			m.Category, m.ListUnsubscribeURL = mail.Marketing, ""
		}, "needs a one-click List-Unsubscribe URL"},
		{"marketing without the link in its text", func(m *mail.Message) { m.Category = mail.Marketing }, "text of a marketing message"},
		{"marketing with the link in its text only", func(m *mail.Message) {
			m.Category, m.Text = mail.Marketing, "Unsubscribe: "+m.ListUnsubscribeURL
		}, "HTML of a marketing message"},
		{"marketing with the link in both", func(m *mail.Message) {
			m.Category, m.Text = mail.Marketing, "Unsubscribe: "+m.ListUnsubscribeURL
			m.HTML = `<a href="` + m.ListUnsubscribeURL + `">Unsubscribe</a>`
		}, ""},
		{"marketing text only", func(m *mail.Message) {
			m.Category, m.Text, m.HTML = mail.Marketing, "Unsubscribe: "+m.ListUnsubscribeURL, ""
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validMessage()
			tt.change(&m)
			err := m.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, mail.ErrInvalidMessage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidMessage mentioning %q", err, tt.want)
			}
			if !mail.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false, an invalid message never becomes valid", err)
			}
		})
	}
}

func TestMarketingLinkSurvivesHTMLTemplateEscaping(t *testing.T) {
	// html/template writes & as &amp; in an href: Validate finds the link either way.
	m := validMessage()
	m.Category = mail.Marketing
	m.ListUnsubscribeURL = "https://cloud.example/u?lang=de&token=42.onboarding.x"
	m.Text = "Unsubscribe: " + m.ListUnsubscribeURL
	m.HTML = `<a href="https://cloud.example/u?lang=de&amp;token=42.onboarding.x">Unsubscribe</a>`
	if err := m.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestNormalizeAddress(t *testing.T) {
	for in, want := range map[string]string{
		"Ada Lovelace <Ada@Customer.Example>": "ada@customer.example",
		"BOB@x.example":                       "bob@x.example",
	} {
		if got, err := mail.NormalizeAddress(in); err != nil || got != want {
			t.Errorf("NormalizeAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := mail.NormalizeAddress("not an address"); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("NormalizeAddress(invalid) = %v", err)
	}
}

func TestSuppressionKindBlocks(t *testing.T) {
	for _, tt := range []struct {
		kind mail.SuppressionKind
		c    mail.Category
		want bool
	}{
		{mail.SuppressUnsubscribe, mail.Marketing, true},
		{mail.SuppressUnsubscribe, mail.Transactional, false},
		{mail.SuppressUnsubscribe, "", false}, // the zero category is transactional
		{mail.SuppressBounce, mail.Marketing, true},
		{mail.SuppressBounce, mail.Transactional, true},
		{mail.SuppressComplaint, mail.Marketing, true},
		{mail.SuppressComplaint, mail.Transactional, true},
		{"from-a-newer-binary", mail.Transactional, true},
	} {
		if got := tt.kind.Blocks(tt.c); got != tt.want {
			t.Errorf("%s.Blocks(%q) = %v, want %v", tt.kind, tt.c, got, tt.want)
		}
	}
	for _, s := range []string{"bounce", "complaint", "unsubscribe"} {
		if k, err := mail.ParseSuppressionKind(s); err != nil || string(k) != s {
			t.Errorf("ParseSuppressionKind(%q) = %q, %v", s, k, err)
		}
	}
	if _, err := mail.ParseSuppressionKind("Bounce"); err == nil {
		t.Errorf("ParseSuppressionKind(Bounce) accepted")
	}
}
