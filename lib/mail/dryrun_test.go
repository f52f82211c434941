package mail_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/internal/standintest"
	"github.com/cronkit/cronkit/lib/mail"
)

// outboxMethods is every exported method of *mail.Outbox and whether a dry run may
// call it; senderMethods the same for *mail.Sender. A method added to either fails
// TestDryRunCoversOutbox or TestDryRunCoversSender until it is classified here (and
// the stand-in has it).
var (
	outboxMethods = standintest.Methods{
		"Enqueue":          standintest.Mutates,
		"EnqueueAt":        standintest.Mutates,
		"Deliver":          standintest.Mutates,
		"Requeue":          standintest.Mutates,
		"Suppress":         standintest.Mutates,
		"Lift":             standintest.Mutates,
		"IsSuppressed":     standintest.Reads,
		"Suppressions":     standintest.Reads,
		"ListSuppressions": standintest.Reads,
		"MarketingTimes":   standintest.Reads,
	}
	senderMethods = standintest.Methods{
		"Send": standintest.Mutates,
	}
)

func TestDryRunCoversOutbox(t *testing.T) {
	standintest.CheckCoverage(t, (*mail.Outbox)(nil), (*mail.DryRunOutbox)(nil),
		reflect.TypeFor[mail.OutboxReader](), outboxMethods)
}

func TestDryRunCoversSender(t *testing.T) {
	standintest.CheckCoverage(t, (*mail.Sender)(nil), (*mail.DryRunSender)(nil), nil, senderMethods)
}

// recordingReader is a mail.OutboxReader that records each call and answers canned
// values.
type recordingReader struct {
	calls      []string
	suppressed string
	err        error
}

func (r *recordingReader) IsSuppressed(_ context.Context, email string, c mail.Category) (bool, error) {
	r.calls = append(r.calls, "IsSuppressed")
	return email == r.suppressed && c == mail.Marketing, r.err
}

func (r *recordingReader) Suppressions(_ context.Context, _ *sql.Tx, email string) ([]mail.Suppression, error) {
	r.calls = append(r.calls, "Suppressions")
	return []mail.Suppression{{Email: email, Kind: mail.SuppressUnsubscribe}}, r.err
}

func (r *recordingReader) ListSuppressions(_ context.Context, q mail.SuppressionQuery) ([]mail.Suppression, error) {
	r.calls = append(r.calls, "ListSuppressions")
	return []mail.Suppression{{Email: q.After + "x", Kind: q.Kind}}, r.err
}

func (r *recordingReader) MarketingTimes(_ context.Context, _ *sql.Tx, _ string, from, _ time.Time) ([]time.Time, error) {
	r.calls = append(r.calls, "MarketingTimes")
	return []time.Time{from}, r.err
}

// touchySender fails the test if anything is sent through it.
type touchySender struct{ t *testing.T }

func (s touchySender) Send(_ context.Context, msg mail.Message) error {
	s.t.Errorf("a dry run sent mail to %s", msg.To)
	return nil
}

func TestDryRunRefusesEveryChange(t *testing.T) {
	for name, reader := range map[string]mail.OutboxReader{"with reader": &recordingReader{}, "nil reader": nil} {
		t.Run(name, func(t *testing.T) {
			standintest.CheckRefuses(t, mail.NewDryRunOutbox(reader), outboxMethods, mail.ErrDryRun)
			if r, ok := reader.(*recordingReader); ok && len(r.calls) > 0 {
				t.Errorf("a refused change reached the reader: %q", r.calls)
			}
		})
	}
	standintest.CheckRefuses(t, mail.DryRunSender{}, senderMethods, mail.ErrDryRun)
}

func TestDryRunDeliverLeavesSenderAlone(t *testing.T) {
	rep, err := mail.NewDryRunOutbox(nil).Deliver(context.Background(), touchySender{t}, 10)
	if !errors.Is(err, mail.ErrDryRun) || rep.Sent != 0 || len(rep.Items) != 0 {
		t.Errorf("Deliver = %+v, %v; want an empty report and ErrDryRun", rep, err)
	}
}

func TestDryRunRefusalSaysWhat(t *testing.T) {
	_, err := mail.NewDryRunOutbox(nil).Enqueue(context.Background(), nil, "abuse:case:42:warned", mail.Message{To: "a@example.com"})
	if want := "enqueue mail abuse:case:42:warned: dry run: no mail is queued or sent"; err == nil || err.Error() != want {
		t.Errorf("Enqueue error = %v, want %q", err, want)
	}
}

func TestDryRunReadsDelegate(t *testing.T) {
	ctx := context.Background()
	errReader := errors.New("reader's error")
	r := &recordingReader{suppressed: "gone@example.com", err: errReader}
	d := mail.NewDryRunOutbox(r)

	if ok, err := d.IsSuppressed(ctx, "gone@example.com", mail.Marketing); !ok || !errors.Is(err, errReader) {
		t.Errorf("IsSuppressed = %t, %v; want the reader's true, %v", ok, err, errReader)
	}
	if s, err := d.Suppressions(ctx, nil, "gone@example.com"); len(s) != 1 || s[0].Email != "gone@example.com" || !errors.Is(err, errReader) {
		t.Errorf("Suppressions = %+v, %v; want the reader's", s, err)
	}
	if s, err := d.ListSuppressions(ctx, mail.SuppressionQuery{After: "a", Kind: mail.SuppressBounce}); len(s) != 1 || s[0] != (mail.Suppression{Email: "ax", Kind: mail.SuppressBounce}) || !errors.Is(err, errReader) {
		t.Errorf("ListSuppressions = %+v, %v; want the reader's", s, err)
	}
	if ts, err := d.MarketingTimes(ctx, nil, "gone@example.com", fixedNow, fixedNow.Add(time.Hour)); len(ts) != 1 || !ts[0].Equal(fixedNow) || !errors.Is(err, errReader) {
		t.Errorf("MarketingTimes = %v, %v; want the reader's", ts, err)
	}

	slices.Sort(r.calls)
	if want := standintest.ReadNames(outboxMethods); !slices.Equal(r.calls, want) {
		t.Errorf("reader saw %q, want each read once: %q", r.calls, want)
	}
}

func TestDryRunWithoutReaderRefusesReads(t *testing.T) {
	ctx := context.Background()
	d := mail.NewDryRunOutbox(nil)
	if _, err := d.IsSuppressed(ctx, "a@example.com", mail.Transactional); !errors.Is(err, mail.ErrDryRun) {
		t.Errorf("IsSuppressed without reader: %v, want ErrDryRun", err)
	}
	if _, err := d.Suppressions(ctx, nil, "a@example.com"); !errors.Is(err, mail.ErrDryRun) {
		t.Errorf("Suppressions without reader: %v, want ErrDryRun", err)
	}
	if _, err := d.ListSuppressions(ctx, mail.SuppressionQuery{}); !errors.Is(err, mail.ErrDryRun) {
		t.Errorf("ListSuppressions without reader: %v, want ErrDryRun", err)
	}
	if _, err := d.MarketingTimes(ctx, nil, "a@example.com", fixedNow, fixedNow); !errors.Is(err, mail.ErrDryRun) {
		t.Errorf("MarketingTimes without reader: %v, want ErrDryRun", err)
	}
}
