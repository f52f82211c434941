package fakecloudstack

import (
	"fmt"
	"strings"
	"time"
)

// cmdDeployVM is the Java command class CloudStack reports for an admin's deploy.
const cmdDeployVM = "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin"

// deployVM creates a VM as CloudStack's deployVirtualMachine does, so that a person
// trying the sandbox can deploy one through the real API and watch reconcile judge
// it:
//   - serviceofferingid, templateid and zoneid are required (the fake models no
//     offerings, templates or zones, so any value is taken and kept); the owner is
//     named by account and domainid, as an admin deploys for an account (the fake's
//     keys act as a ROOT admin whose own account it does not model, so the owner is
//     required); name (unique within the account), displayname and startvm
//     (default true) are honoured;
//   - the answer is the new VM's id and a job id, as for the other async commands;
//     the VM is listed at once (state Starting, or Stopped with startvm=false) and
//     VM.CREATE is logged Scheduled;
//   - when the job completes, VM.CREATE is logged Completed and the VM starts
//     (VM.START, and its usage from then on), as its history in listEvents and the
//     usage server says; queryAsyncJobResult gives the VM. A failed job
//     (FailAsyncNext) leaves it in state Error with VM.CREATE Completed at level
//     ERROR, as a deploy that found no capacity does.
//
// Callers hold s.mu.
func (s *Server) deployVM(command string, p params, now time.Time) reply {
	for _, name := range []string{"serviceofferingid", "templateid", "zoneid"} {
		if p[name] == "" {
			return missingParam(command, name)
		}
	}
	if p["account"] == "" || p["domainid"] == "" {
		return apiError(command, 431, "fakecloudstack: deployVirtualMachine needs account and domainid (the owner; the fake does not model the caller's own account)")
	}
	a := s.findAccountByName(p["account"], p["domainid"])
	if a == nil {
		return apiError(command, 431, fmt.Sprintf("Unable to find account %s in domain %s", p["account"], p["domainid"]))
	}
	switch a.State {
	case "disabled":
		return apiError(command, 531, fmt.Sprintf("The owner of vm to deploy is disabled: %s", a.Name))
	case "locked":
		return apiError(command, 531, fmt.Sprintf("The owner of vm to deploy is locked: %s", a.Name))
	}
	start := true
	if v := p["startvm"]; v != "" {
		start = !strings.EqualFold(v, "false")
	}
	v := VM{ID: s.newID(), AccountID: a.ID, Name: p["name"], DisplayName: p["displayname"], ServiceOfferingID: p["serviceofferingid"],
		TemplateID: p["templateid"], ZoneID: p["zoneid"], State: "Starting", Created: now}
	if !start {
		v.State = "Stopped"
	}
	fillVM(&v, now)
	for _, id := range s.vmOrder {
		if o := s.vms[id]; o.AccountID == a.ID && strings.EqualFold(o.Name, v.Name) {
			return apiError(command, 431, fmt.Sprintf("The vm with hostname %s already exists in the network domain of account %s", v.Name, a.Name))
		}
	}
	stored := &v
	s.vms[v.ID] = stored
	s.vmOrder = append(s.vmOrder, v.ID)
	s.trackVM(stored)
	fail := ""
	if s.takeAsyncFailure(command) {
		fail = "fakecloudstack: injected async failure of " + command + ": insufficient capacity"
	}
	return s.startJob(command, cmdDeployVM, "VirtualMachine", v.ID, now, func() (map[string]any, int, string) {
		if fail != "" {
			s.setState(stored, "Error")
			return nil, asyncFailureCode, fail
		}
		s.logEvent("VM.CREATE", "Completed", "INFO", s.stamp(), resourceVM, stored.ID, stored.Name, stored.AccountID,
			"Successfully completed deploying Vm. Vm Id: "+stored.ID)
		if start {
			s.setState(stored, "Running")
		}
		s.counters.Deploys++
		return map[string]any{"virtualmachine": s.renderVM(stored, stored.State)}, 0, ""
	})
}
