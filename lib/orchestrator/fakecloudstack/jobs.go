package fakecloudstack

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Java command classes CloudStack reports as a job's "cmd".
const (
	cmdStopVM         = "org.apache.cloudstack.api.command.admin.vm.StopVMCmdByAdmin"
	cmdStartVM        = "org.apache.cloudstack.api.command.admin.vm.StartVMCmdByAdmin"
	cmdDestroyVM      = "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin"
	cmdDisableAccount = "org.apache.cloudstack.api.command.admin.account.DisableAccountCmd"
)

// asyncFailureCode is the errorcode of a failed job (CloudStack's INTERNAL_ERROR).
const asyncFailureCode = 530

// job is one async job. Its effect happens in finish, when the job completes.
type job struct {
	id, cmdClass             string
	instanceType, instanceID string
	created, completed       time.Time
	polls                    int
	status                   int // 0 pending, 1 succeeded, 2 failed
	resultCode               int
	result                   map[string]any
	// finish applies the job's effect and returns its result, or an error code and
	// text for a failed job. It runs once, with s.mu held.
	finish func() (result map[string]any, code int, text string)
}

// startJob registers a job and answers the command as CloudStack does for async
// commands: the object's id and the job id. Callers hold s.mu.
func (s *Server) startJob(command, cmdClass, instanceType, instanceID string, now time.Time,
	finish func() (map[string]any, int, string)) reply {
	if typ, ok := vmCommandEvents[command]; ok {
		v := s.vms[instanceID]
		parent := s.logEvent(typ, "Scheduled", "INFO", now, resourceVM, v.ID, v.Name, v.AccountID,
			fmt.Sprintf("%s scheduled for Vm. Vm Id: %s", command, v.ID))
		inner := finish
		finish = func() (map[string]any, int, string) {
			result, code, text := inner()
			if text != "" {
				e := s.logEvent(typ, "Completed", "ERROR", s.stamp(), resourceVM, v.ID, v.Name, v.AccountID,
					fmt.Sprintf("Error while running %s for Vm. Vm Id: %s: %s", command, v.ID, text))
				e.parentID = parent.id
			}
			return result, code, text
		}
	}
	j := &job{
		id: s.newID(), cmdClass: cmdClass,
		instanceType: instanceType, instanceID: instanceID,
		created: now, finish: finish,
	}
	s.jobs[j.id] = j
	s.pending = append(s.pending, j)
	s.counters.AsyncJobs++
	return ok(command, map[string]any{"id": instanceID, "jobid": j.id})
}

// advance completes the pending jobs that are due (see SetAsyncCompletion). Callers
// hold s.mu.
func (s *Server) advance(now time.Time) {
	s.pending = slices.DeleteFunc(s.pending, func(j *job) bool {
		if s.pendingPolls > 0 && j.polls <= s.pendingPolls {
			return false
		}
		if now.Sub(j.created) < s.asyncDelay {
			return false
		}
		result, code, text := j.finish()
		j.completed = now
		if text != "" {
			j.status, j.resultCode = 2, code
			j.result = map[string]any{"errorcode": code, "errortext": text}
		} else {
			j.status, j.result = 1, result
		}
		return true
	})
}

// takeAsyncFailure consumes one FailAsyncNext for command. Callers hold s.mu.
func (s *Server) takeAsyncFailure(command string) bool {
	lc := strings.ToLower(command)
	if s.failAsync[lc] > 0 {
		s.failAsync[lc]--
		return true
	}
	return false
}

func (s *Server) lookupVM(command string, p params) (*VM, *reply) {
	id := p["id"]
	if id == "" {
		r := missingParam(command, "id")
		return nil, &r
	}
	v, ok := s.vms[id]
	if !ok {
		r := notFound(command, "id", id)
		return nil, &r
	}
	return v, nil
}

// lookupAccount finds the account named by id, or by account (name) and domainid, as
// disableAccount and enableAccount accept.
func (s *Server) lookupAccount(command string, p params) (*Account, *reply) {
	if id := p["id"]; id != "" {
		a, ok := s.accounts[id]
		if !ok {
			r := notFound(command, "id", id)
			return nil, &r
		}
		return a, nil
	}
	if p["account"] == "" || p["domainid"] == "" {
		r := apiError(command, 431, "Either id or account name and domainid must be specified")
		return nil, &r
	}
	a := s.findAccountByName(p["account"], p["domainid"])
	if a == nil {
		r := apiError(command, 431, fmt.Sprintf("Unable to find account by name %s in domain %s", p["account"], p["domainid"]))
		return nil, &r
	}
	return a, nil
}

func (s *Server) stopVM(command string, p params, now time.Time) reply {
	v, bad := s.lookupVM(command, p)
	if bad != nil {
		return *bad
	}
	from := v.State
	fail := ""
	switch {
	case s.takeAsyncFailure(command):
		fail = "fakecloudstack: injected async failure of " + command
	case from == "Destroyed" || from == "Expunging":
		fail = fmt.Sprintf("Unable to stop VM %s: it is in state %s", v.ID, from)
	case from == "Running":
		s.setState(v, "Stopping")
	}
	return s.startJob(command, cmdStopVM, "VirtualMachine", v.ID, now, func() (map[string]any, int, string) {
		if fail != "" {
			return nil, asyncFailureCode, fail
		}
		s.setState(v, "Stopped")
		s.counters.Stops++
		return map[string]any{"virtualmachine": s.renderVM(v, v.State)}, 0, ""
	})
}

func (s *Server) startVM(command string, p params, now time.Time) reply {
	v, bad := s.lookupVM(command, p)
	if bad != nil {
		return *bad
	}
	from := v.State
	code, fail := asyncFailureCode, ""
	switch {
	case s.takeAsyncFailure(command):
		fail = "fakecloudstack: injected async failure of " + command
	case from == "Destroyed" || from == "Expunging":
		fail = fmt.Sprintf("Unable to start VM %s: it is in state %s", v.ID, from)
	case s.accounts[v.AccountID].State == "disabled":
		// CloudStack refuses to start a disabled account's VM (PermissionDenied).
		code, fail = 531, fmt.Sprintf("The owner of VM %s is disabled: %s", v.ID, v.AccountID)
	case from == "Stopped":
		s.setState(v, "Starting")
	}
	return s.startJob(command, cmdStartVM, "VirtualMachine", v.ID, now, func() (map[string]any, int, string) {
		if fail != "" {
			return nil, code, fail
		}
		s.setState(v, "Running")
		s.counters.Starts++
		return map[string]any{"virtualmachine": s.renderVM(v, v.State)}, 0, ""
	})
}

// destroyVM destroys a VM; with expunge=true it is removed at once (its last answer
// shows state Expunging) and disappears from lists, as in CloudStack.
func (s *Server) destroyVM(command string, p params, now time.Time) reply {
	v, bad := s.lookupVM(command, p)
	if bad != nil {
		return *bad
	}
	expunge := strings.EqualFold(p["expunge"], "true")
	fail := ""
	if s.takeAsyncFailure(command) {
		fail = "fakecloudstack: injected async failure of " + command
	}
	return s.startJob(command, cmdDestroyVM, "VirtualMachine", v.ID, now, func() (map[string]any, int, string) {
		if fail != "" {
			return nil, asyncFailureCode, fail
		}
		s.counters.Destroys++
		if !expunge {
			s.setState(v, "Destroyed")
			return map[string]any{"virtualmachine": s.renderVM(v, v.State)}, 0, ""
		}
		s.counters.Expunges++
		out := s.renderVM(v, "Expunging")
		s.setState(v, "Expunged")
		delete(s.vms, v.ID)
		s.vmOrder = slices.DeleteFunc(s.vmOrder, func(id string) bool { return id == v.ID })
		return map[string]any{"virtualmachine": out}, 0, ""
	})
}

// disableAccount with lock=false disables the account and, as CloudStack does, stops
// its running VMs (those stops are not counted in Counters.Stops); with lock=true it
// only locks the account (users cannot log in, VMs keep running).
func (s *Server) disableAccount(command string, p params, now time.Time) reply {
	if _, ok := p["lock"]; !ok {
		return missingParam(command, "lock")
	}
	a, bad := s.lookupAccount(command, p)
	if bad != nil {
		return *bad
	}
	lock := strings.EqualFold(p["lock"], "true")
	fail := ""
	if s.takeAsyncFailure(command) {
		fail = "fakecloudstack: injected async failure of " + command
	}
	return s.startJob(command, cmdDisableAccount, "Account", a.ID, now, func() (map[string]any, int, string) {
		if fail != "" {
			return nil, asyncFailureCode, fail
		}
		total, running := 0, 0
		for _, v := range s.vms {
			if v.AccountID != a.ID {
				continue
			}
			total++
			if !lock && (v.State == "Running" || v.State == "Starting") {
				s.setState(v, "Stopped")
			}
			if v.State == "Running" {
				running++
			}
		}
		if lock {
			a.State = "locked"
		} else {
			a.State = "disabled"
		}
		s.counters.Disables++
		return map[string]any{"account": renderAccount(a, total, running)}, 0, ""
	})
}

// enableAccount is synchronous in CloudStack: it answers with the account.
func (s *Server) enableAccount(command string, p params) reply {
	a, bad := s.lookupAccount(command, p)
	if bad != nil {
		return *bad
	}
	a.State = "enabled"
	s.counters.Enables++
	total, running := 0, 0
	for _, v := range s.vms {
		if v.AccountID == a.ID {
			total++
			if v.State == "Running" {
				running++
			}
		}
	}
	return ok(command, map[string]any{"account": renderAccount(a, total, running)})
}

func (s *Server) queryAsyncJobResult(command string, p params) reply {
	id := p["jobid"]
	if id == "" {
		return missingParam(command, "jobid")
	}
	j, found := s.jobs[id]
	if !found {
		return notFound(command, "jobid", id)
	}
	m := map[string]any{
		"accountid":       AdminAccountID,
		"userid":          AdminUserID,
		"cmd":             j.cmdClass,
		"jobid":           j.id,
		"jobstatus":       j.status,
		"jobprocstatus":   0,
		"jobresultcode":   j.resultCode,
		"jobinstancetype": j.instanceType,
		"jobinstanceid":   j.instanceID,
		"created":         j.created.UTC().Format(timeLayout),
	}
	if j.status != 0 {
		m["jobresulttype"] = "object"
		m["jobresult"] = j.result
		m["completed"] = j.completed.UTC().Format(timeLayout)
	}
	return ok(command, m)
}
