// Package standintest checks a dry-run stand-in against the client it stands in for,
// by reflection, so that a method added to a client later fails its package's tests
// until it is classified and the stand-in has it. lib/payment, lib/orchestrator and
// lib/mail share it instead of each repeating the reflection.
package standintest

import (
	"context"
	"errors"
	"reflect"
	"slices"
)

// T is the part of *testing.T the checks use, so this package's own tests can
// watch them fail.
type T interface {
	Helper()
	Errorf(format string, args ...any)
}

// Kind says whether a client method may run in a dry run.
type Kind int

const (
	// Reads marks a method that changes nothing: the stand-in delegates it to its
	// reader.
	Reads Kind = iota + 1
	// Mutates marks a method that changes something (a charge, a VM stopped, a mail
	// queued): the stand-in refuses it.
	Mutates
)

// Methods classifies every exported method of a client by name. Each package's test
// writes it out by hand: that list is the reviewed decision of what a dry run may do.
type Methods map[string]Kind

// CheckCoverage fails t unless every exported method of client is classified in m,
// every name in m is a method of client, standIn has each of client's methods with
// the same signature (so it satisfies every interface client does), and reader (an
// interface type, e.g. reflect.TypeFor[payment.Reader]()) has exactly the Reads
// methods, with the client's signatures. A nil reader means the client has no reads.
func CheckCoverage(t T, client, standIn any, reader reflect.Type, m Methods) {
	t.Helper()
	ct, st := reflect.TypeOf(client), reflect.TypeOf(standIn)
	var reads []string
	for i := range ct.NumMethod() {
		cm := ct.Method(i)
		kind, ok := m[cm.Name]
		if !ok {
			t.Errorf("%s.%s is not classified as Reads or Mutates", ct, cm.Name)
		}
		if kind == Reads {
			reads = append(reads, cm.Name)
		}
		sm, ok := st.MethodByName(cm.Name)
		if !ok {
			t.Errorf("%s has no method %s of %s", st, cm.Name, ct)
			continue
		}
		if !sameSignature(cm.Type, sm.Type, 1) {
			t.Errorf("%s.%s is %s, want the signature of %s.%s %s", st, cm.Name, sm.Type, ct, cm.Name, cm.Type)
		}
	}
	for name := range m {
		if _, ok := ct.MethodByName(name); !ok {
			t.Errorf("%q is classified but %s has no such method", name, ct)
		}
	}
	var readerMethods []string
	if reader != nil {
		for i := range reader.NumMethod() {
			rm := reader.Method(i)
			readerMethods = append(readerMethods, rm.Name)
			if cm, ok := ct.MethodByName(rm.Name); ok && !sameSignature(cm.Type, rm.Type, 0) {
				t.Errorf("%s.%s is %s, want the signature of %s.%s %s", reader, rm.Name, rm.Type, ct, rm.Name, cm.Type)
			}
		}
	}
	slices.Sort(reads)
	if !slices.Equal(readerMethods, reads) {
		t.Errorf("reader %v has methods %q, want exactly the Reads methods of %s %q", reader, readerMethods, ct, reads)
	}
}

// sameSignature compares a client method (from a concrete type, so its first
// parameter is the receiver) with a stand-in's (skipOther 1: a receiver too) or an
// interface's (skipOther 0: none).
func sameSignature(client, other reflect.Type, skipOther int) bool {
	if client.NumIn()-1 != other.NumIn()-skipOther || client.NumOut() != other.NumOut() ||
		client.IsVariadic() != other.IsVariadic() {
		return false
	}
	for i := 1; i < client.NumIn(); i++ {
		if client.In(i) != other.In(i-1+skipOther) {
			return false
		}
	}
	for i := range client.NumOut() {
		if client.Out(i) != other.Out(i) {
			return false
		}
	}
	return true
}

var contextType = reflect.TypeFor[context.Context]()

// CheckRefuses calls every Mutates method of standIn with zero arguments (and a live
// context) and fails t unless its last result is an error that errors.Is sentinel. A
// mutating method with no error result fails too: it could not refuse.
func CheckRefuses(t T, standIn any, m Methods, sentinel error) {
	t.Helper()
	v := reflect.ValueOf(standIn)
	for _, name := range sortedNames(m, Mutates) {
		method := v.MethodByName(name)
		if !method.IsValid() {
			t.Errorf("%s has no method %s", v.Type(), name)
			continue
		}
		mt := method.Type()
		if mt.NumOut() == 0 || mt.Out(mt.NumOut()-1) != reflect.TypeFor[error]() {
			t.Errorf("%s.%s returns no error, so it cannot refuse", v.Type(), name)
			continue
		}
		args := make([]reflect.Value, mt.NumIn())
		for i := range args {
			args[i] = reflect.Zero(mt.In(i))
			if mt.In(i) == contextType {
				args[i] = reflect.ValueOf(context.Background())
			}
		}
		out := method.Call(args)
		err, _ := out[len(out)-1].Interface().(error)
		if !errors.Is(err, sentinel) {
			t.Errorf("%s.%s returned %v, want an error wrapping %q", v.Type(), name, err, sentinel)
		}
	}
}

// ReadNames returns the Reads methods in m, sorted, to compare with the calls a fake
// reader recorded.
func ReadNames(m Methods) []string { return sortedNames(m, Reads) }

func sortedNames(m Methods, k Kind) []string {
	var names []string
	for name, kind := range m {
		if kind == k {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
