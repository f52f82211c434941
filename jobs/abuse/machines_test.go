package abuse

import (
	"strings"
	"testing"
)

func TestMachinesReachEveryStateFromGood(t *testing.T) {
	for _, m := range Machines() {
		reached := map[string]bool{StateGood: true}
		for changed := true; changed; {
			changed = false
			for _, e := range machineEvents[m] {
				for _, src := range e.Src {
					if reached[src] && !reached[e.Dst] {
						reached[e.Dst], changed = true, true
					}
				}
			}
		}
		for _, e := range machineEvents[m] {
			if !reached[e.Dst] {
				t.Errorf("%s: %s unreachable", m, e.Dst)
			}
			// Closed states are terminal: nothing leaves them.
			for _, src := range e.Src {
				if src != StateGood && !IsOpen(m, src) {
					t.Errorf("%s: %s leaves closed state %s", m, e.Name, src)
				}
			}
		}
	}
}

func TestEveryOpenStateCanBeResolvedByAPerson(t *testing.T) {
	for _, m := range Machines() {
		for _, e := range machineEvents[m] {
			for _, s := range append([]string{e.Dst}, e.Src...) {
				if IsOpen(m, s) && !canFire(m, s, EventClear) {
					t.Errorf("%s: an operator cannot clear a case in %s", m, s)
				}
			}
		}
	}
}

func TestGraphIsDrawnFromTheMachines(t *testing.T) {
	out, err := Graph(Dunning, "mermaid")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range machineEvents[Dunning] {
		for _, src := range e.Src {
			line := "    " + src + " --> " + e.Dst + ": " + e.Name
			if !strings.Contains(out, line) {
				t.Errorf("mermaid lacks %q", line)
			}
		}
	}
	dot, err := Graph("", "dot")
	if err != nil || !strings.Contains(dot, "digraph dunning {") || !strings.Contains(dot, "digraph free_credit {") ||
		!strings.Contains(dot, `"flagged" -> "suspended" [ label = "suspend" ];`) {
		t.Fatalf("dot: %v\n%s", err, dot)
	}
	if _, err := Graph("", "svg"); err == nil {
		t.Fatal("unknown format accepted")
	}
	if _, err := Graph("nope", "dot"); err == nil {
		t.Fatal("unknown machine accepted")
	}
}
