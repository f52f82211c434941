package abuse

import (
	"fmt"
	"slices"
	"strings"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/cases"
)

// The two machines. A case belongs to one.
const (
	Dunning    = "dunning"
	FreeCredit = "free_credit"
)

// States. "good" is the state of an account with no open case: a case row is created
// by the first transition out of it.
const (
	StateGood = "good"

	// Dunning.
	StateReminded            = "reminded"
	StateWarned              = "warned"
	StateSuspended           = "suspended" // also free credit
	StateTerminationProposed = "termination_proposed"
	StateTerminationApproved = "termination_approved"
	StateTerminated          = "terminated" // also free credit
	StateResolved            = "resolved"

	// Free credit.
	StateFlagged   = "flagged"
	StateConfirmed = "confirmed"
	StateCleared   = "cleared"
)

// Events. Those marked "person" come only from an operator command.
const (
	EventRemind             = "remind"
	EventWarn               = "warn"
	EventSuspend            = "suspend"
	EventProposeTermination = "propose_termination"
	EventApprove            = "approve" // person
	EventTerminate          = "terminate"
	EventResolve            = "resolve"
	EventClear              = "clear"   // person
	EventExclude            = "exclude" // person, or an exclusion tag found by a run
	EventFlag               = "flag"
	EventConfirm            = "confirm" // person
)

// machineEvents are the two machines' transitions: the single definition the job
// runs, the graph command draws and the tests walk.
var machineEvents = map[string]fsm.Events{
	Dunning: {
		{Name: EventRemind, Src: []string{StateGood}, Dst: StateReminded},
		{Name: EventWarn, Src: []string{StateGood, StateReminded}, Dst: StateWarned},
		{Name: EventSuspend, Src: []string{StateWarned}, Dst: StateSuspended},
		{Name: EventProposeTermination, Src: []string{StateSuspended}, Dst: StateTerminationProposed},
		{Name: EventApprove, Src: []string{StateTerminationProposed}, Dst: StateTerminationApproved},
		{Name: EventTerminate, Src: []string{StateTerminationApproved}, Dst: StateTerminated},
		{Name: EventResolve, Src: dunningOpen, Dst: StateResolved},
		{Name: EventClear, Src: dunningOpen, Dst: StateResolved},
		{Name: EventExclude, Src: dunningOpen, Dst: StateResolved},
	},
	FreeCredit: {
		{Name: EventFlag, Src: []string{StateGood}, Dst: StateFlagged},
		{Name: EventSuspend, Src: []string{StateFlagged}, Dst: StateSuspended},
		{Name: EventConfirm, Src: []string{StateSuspended}, Dst: StateConfirmed},
		{Name: EventTerminate, Src: []string{StateConfirmed}, Dst: StateTerminated},
		{Name: EventClear, Src: freeCreditOpen, Dst: StateCleared},
		{Name: EventExclude, Src: freeCreditOpen, Dst: StateCleared},
	},
}

var (
	dunningOpen    = []string{StateReminded, StateWarned, StateSuspended, StateTerminationProposed, StateTerminationApproved}
	freeCreditOpen = []string{StateFlagged, StateSuspended, StateConfirmed}
)

// Machines lists the machines in a fixed order.
func Machines() []string { return []string{Dunning, FreeCredit} }

// IsOpen reports whether a case in state is still open (not resolved, cleared or
// terminated).
func IsOpen(machine, state string) bool {
	switch machine {
	case Dunning:
		return slices.Contains(dunningOpen, state)
	case FreeCredit:
		return slices.Contains(freeCreditOpen, state)
	}
	return false
}

// holdsSuspension reports whether a case in state keeps the account suspended: its
// VMs stopped and the orchestrator account disabled.
func holdsSuspension(machine, state string) bool {
	switch state {
	case StateSuspended, StateTerminated:
		return true
	case StateTerminationProposed, StateTerminationApproved:
		return machine == Dunning
	case StateConfirmed:
		return machine == FreeCredit
	}
	return false
}

// machineDef is a machine as lib/cases runs it: the definition above, "good" as the
// state of an account without a case, and its open states.
func machineDef(machine string) (*cases.Machine, error) {
	events, ok := machineEvents[machine]
	if !ok {
		return nil, fmt.Errorf("unknown machine %q", machine)
	}
	open := dunningOpen
	if machine == FreeCredit {
		open = freeCreditOpen
	}
	return &cases.Machine{Name: machine, Initial: StateGood, Events: events, Open: open}, nil
}

// machineDefs returns both machines, for the run's case store.
func machineDefs() []*cases.Machine {
	var out []*cases.Machine
	for _, name := range Machines() {
		m, _ := machineDef(name) // every name of Machines() is defined
		out = append(out, m)
	}
	return out
}

// canFire reports whether event is a transition of machine from state.
func canFire(machine, state, event string) bool {
	m, err := machineDef(machine)
	return err == nil && m.Can(state, event)
}

// Graph draws machine (or both, machine "") from the definitions the job runs, as a
// Mermaid state diagram ("mermaid") or Graphviz ("dot"), with looplab/fsm's
// visualizer. Each machine starts at "good", the state of an account without a case.
func Graph(machine, format string) (string, error) {
	var typ fsm.VisualizeType
	switch format {
	case "mermaid":
		typ = fsm.MermaidStateDiagram
	case "dot", "graphviz":
		typ = fsm.GRAPHVIZ
	default:
		return "", fmt.Errorf("graph format %q: want mermaid or dot", format)
	}
	names := Machines()
	if machine != "" {
		if _, ok := machineEvents[machine]; !ok {
			return "", fmt.Errorf("graph: unknown machine %q: want %s", machine, strings.Join(Machines(), " or "))
		}
		names = []string{machine}
	}
	var b strings.Builder
	for i, name := range names {
		m, err := machineDef(name)
		if err != nil {
			return "", err
		}
		out, err := fsm.VisualizeWithType(m.FSM(StateGood, nil), typ)
		if err != nil {
			return "", fmt.Errorf("graph %s: %w", name, err)
		}
		if i > 0 {
			b.WriteString("\n")
		}
		if typ == fsm.GRAPHVIZ {
			// fsm names every graph "fsm"; name it after its machine so both can sit in
			// one file.
			out = strings.Replace(out, "digraph fsm {", "digraph "+name+" {", 1)
		} else {
			b.WriteString("%% " + name + "\n")
		}
		b.WriteString(out)
	}
	return b.String(), nil
}
