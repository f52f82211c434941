package drip

import (
	"fmt"
	"strings"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/cases"
)

// States every funnel has. Between them, the machine has one state per step, named
// after it: the step the account is at (its message queued or sent, or skipped).
const (
	// StateSignedUp is the state of an account with no case: not in the funnel yet.
	StateSignedUp = "signed_up"
	// StateConverted: the goal was met; no more funnel mail.
	StateConverted = "converted"
	// StateExited: the account left the funnel for an exit reason (see Exit*).
	StateExited = "exited"
	// StateCompleted: every step went out (or was skipped).
	StateCompleted = "completed"
)

var (
	closedStates = []string{StateConverted, StateExited, StateCompleted}
	// reservedStates may not name a step.
	reservedStates = append([]string{StateSignedUp}, closedStates...)
)

// Events. EventSend and EventSkip move one step forward; the others close the case.
const (
	EventSend     = "send" // queue the next step's message
	EventSkip     = "skip" // a fact of the step's `unless` holds: go past it, sending nothing
	EventConvert  = "convert"
	EventExit     = "exit" // also `cronkit drip exit ACCOUNT --reason` (a person)
	EventComplete = "complete"
)

// MachineName is the funnel's machine in lib/cases, unique across jobs.
func (f *Funnel) MachineName() string { return "drip:" + f.Name }

// Machine is the funnel's state machine, as lib/cases runs it, the graph draws it
// and the tests walk it. It moves strictly forward: send or skip goes from one step
// to the next, complete leaves the last one, and convert and exit close the case
// from anywhere open. The closed states are terminal and an account never re-enters
// a funnel: the job reads the latest case, closed ones included, and Decide does
// nothing for a closed one (lib/cases itself would open a new case).
func (f *Funnel) Machine() *cases.Machine {
	open := make([]string, len(f.Steps))
	var events fsm.Events
	prev := StateSignedUp
	for i, s := range f.Steps {
		open[i] = s.Name
		events = append(events,
			fsm.EventDesc{Name: EventSend, Src: []string{prev}, Dst: s.Name},
			fsm.EventDesc{Name: EventSkip, Src: []string{prev}, Dst: s.Name})
		prev = s.Name
	}
	from := append([]string{StateSignedUp}, open...)
	events = append(events,
		fsm.EventDesc{Name: EventComplete, Src: []string{prev}, Dst: StateCompleted},
		fsm.EventDesc{Name: EventConvert, Src: from, Dst: StateConverted},
		fsm.EventDesc{Name: EventExit, Src: from, Dst: StateExited})
	return &cases.Machine{Name: f.MachineName(), Initial: StateSignedUp, Events: events, Open: open}
}

// Graph draws the funnel's machine from the definition the job runs, as a Mermaid
// state diagram ("mermaid") or Graphviz ("dot"), with looplab/fsm's visualizer.
func (f *Funnel) Graph(format string) (string, error) {
	var typ fsm.VisualizeType
	switch format {
	case "mermaid":
		typ = fsm.MermaidStateDiagram
	case "dot", "graphviz":
		typ = fsm.GRAPHVIZ
	default:
		return "", fmt.Errorf("graph format %q: want mermaid or dot", format)
	}
	m := f.Machine()
	out, err := fsm.VisualizeWithType(m.FSM(m.Initial, nil), typ)
	if err != nil {
		return "", fmt.Errorf("graph %s: %w", m.Name, err)
	}
	if typ == fsm.GRAPHVIZ {
		// fsm names every graph "fsm"; name it after the funnel.
		return strings.Replace(out, "digraph fsm {", "digraph "+f.Name+" {", 1), nil
	}
	return "%% " + m.Name + "\n" + out, nil
}
