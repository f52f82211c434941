package standintest_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/internal/standintest"
)

// recorder is a standintest.T that keeps the failures instead of failing.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

var errRefused = errors.New("refused")

type client struct{}

func (*client) Get(context.Context, string) (int, error) { return 0, nil }
func (*client) Put(context.Context, string, int) error   { return nil }

type reader interface {
	Get(context.Context, string) (int, error)
}

type standIn struct{}

func (*standIn) Get(context.Context, string) (int, error) { return 0, nil }
func (*standIn) Put(context.Context, string, int) error   { return fmt.Errorf("put: %w", errRefused) }

type missingPut struct{}

func (*missingPut) Get(context.Context, string) (int, error) { return 0, nil }

type wrongPut struct{}

func (*wrongPut) Get(context.Context, string) (int, error) { return 0, nil }
func (*wrongPut) Put(context.Context, string, int64) error { return errRefused }

type leakyPut struct{}

func (*leakyPut) Get(context.Context, string) (int, error) { return 0, nil }
func (*leakyPut) Put(context.Context, string, int) error   { return errors.New("some other error") }

type readerWithPut interface {
	Get(context.Context, string) (int, error)
	Put(context.Context, string, int) error
}

type readerWrongGet interface {
	Get(context.Context, int) (int, error)
}

// pinger has a method that cannot report a refusal.
type pinger struct{}

func (*pinger) Ping(context.Context) {}

var classified = standintest.Methods{"Get": standintest.Reads, "Put": standintest.Mutates}

func TestCheckCoverage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		standIn any
		reader  reflect.Type
		m       standintest.Methods
		want    string // a substring of the one failure expected, "" for none
	}{
		{"complete", (*standIn)(nil), reflect.TypeFor[reader](), classified, ""},
		{"unclassified", (*standIn)(nil), reflect.TypeFor[reader](), standintest.Methods{"Get": standintest.Reads}, "Put is not classified"},
		{"stale name", (*standIn)(nil), reflect.TypeFor[reader](),
			standintest.Methods{"Get": standintest.Reads, "Put": standintest.Mutates, "Delete": standintest.Mutates}, `"Delete" is classified`},
		{"stand-in lacks a method", (*missingPut)(nil), reflect.TypeFor[reader](), classified, "has no method Put"},
		{"stand-in signature differs", (*wrongPut)(nil), reflect.TypeFor[reader](), classified, "want the signature"},
		{"reader holds a mutation", (*standIn)(nil), reflect.TypeFor[readerWithPut](), classified, "want exactly the Reads methods"},
		{"reader signature differs", (*standIn)(nil), reflect.TypeFor[readerWrongGet](), classified, "want the signature"},
		{"no reader for a read", (*standIn)(nil), nil, classified, "want exactly the Reads methods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			standintest.CheckCoverage(&r, (*client)(nil), tc.standIn, tc.reader, tc.m)
			checkFailures(t, r.errs, tc.want)
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		standIn any
		want    string
	}{
		{"refuses", &standIn{}, ""},
		{"wrong error", &leakyPut{}, "want an error wrapping"},
		{"missing", &missingPut{}, "has no method Put"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			standintest.CheckRefuses(&r, tc.standIn, classified, errRefused)
			checkFailures(t, r.errs, tc.want)
		})
	}
}

func TestCheckRefusesNeedsAnErrorResult(t *testing.T) {
	var r recorder
	standintest.CheckRefuses(&r, &standIn{}, standintest.Methods{"Get": standintest.Mutates}, errRefused)
	checkFailures(t, r.errs, "want an error wrapping") // Get returns a nil error: not a refusal

	r = recorder{}
	standintest.CheckRefuses(&r, &pinger{}, standintest.Methods{"Ping": standintest.Mutates}, errRefused)
	checkFailures(t, r.errs, "returns no error, so it cannot refuse")
}

func checkFailures(t *testing.T, errs []string, want string) {
	t.Helper()
	switch {
	case want == "" && len(errs) > 0:
		t.Errorf("unexpected failures: %q", errs)
	case want != "" && (len(errs) != 1 || !strings.Contains(errs[0], want)):
		t.Errorf("failures %q, want one containing %q", errs, want)
	}
}
