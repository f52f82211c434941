package drip

import (
	"slices"
	"testing"

	"github.com/cronkit/cronkit/lib/golden"
)

func TestMachineMovesOnlyForward(t *testing.T) {
	f := DefaultFunnel()
	m := f.Machine()
	if m.Name != "drip:onboarding" || m.Initial != StateSignedUp ||
		!slices.Equal(m.Open, []string{"welcome", "first_vm", "tips", "trial_ending", "last_call"}) {
		t.Fatalf("machine %+v", m)
	}
	states := append([]string{StateSignedUp}, append(m.Open, closedStates...)...)
	events := []string{EventSend, EventSkip, EventConvert, EventExit, EventComplete}
	for i, s := range states {
		for _, e := range events {
			want := false
			switch {
			case slices.Contains(closedStates, s): // terminal: no re-entry
			case e == EventConvert || e == EventExit:
				want = true
			case e == EventSend || e == EventSkip:
				want = i < len(f.Steps) // signed_up and every step but the last
			case e == EventComplete:
				want = s == "last_call"
			}
			if got := m.Can(s, e); got != want {
				t.Errorf("%s from %s: %v, want %v", e, s, got, want)
			}
		}
	}
	// send and skip go to the next step, never further.
	for i, s := range states[:len(f.Steps)] {
		for _, e := range []string{EventSend, EventSkip} {
			fsm := m.FSM(s, nil)
			if err := fsm.Event(t.Context(), e); err != nil || fsm.Current() != f.Steps[i].Name {
				t.Errorf("%s from %s: %s, %v", e, s, fsm.Current(), err)
			}
		}
	}
}

func TestGraph(t *testing.T) {
	f := DefaultFunnel()
	for _, format := range []string{"mermaid", "dot"} {
		out, err := f.Graph(format)
		if err != nil {
			t.Fatal(err)
		}
		golden.Check(t, "graph."+format+".golden", []byte(out))
	}
	if _, err := f.Graph("svg"); err == nil {
		t.Fatal("unknown format accepted")
	}
}
