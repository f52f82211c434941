package fakecloudstack

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// authErrorText is CloudStack's answer to a bad or missing signature, an unknown API
// key or an expired request.
const authErrorText = "unable to verify user credentials and/or request signature"

// timeLayout is how CloudStack writes timestamps: "2021-10-04T09:24:38+0000".
const timeLayout = "2006-01-02T15:04:05-0700"

// Identifiers of the simulated host a running VM sits on.
const (
	simHostID   = "0f1c5e1a-0000-4000-8000-0000000040a7"
	simHostName = "SimulatedAgent.fakecloudstack"
)

// reply is a JSON answer: HTTP status and body.
type reply struct {
	status int
	body   map[string]any
}

// params are a request's parameters with lower-cased names and first values, which is
// how CloudStack's dispatcher reads them.
type params map[string]string

func ok(command string, inner map[string]any) reply {
	return reply{status: http.StatusOK, body: map[string]any{strings.ToLower(command) + "response": inner}}
}

// apiError is CloudStack's error shape; the HTTP status is the error code, as
// CloudStack sends it (cloudstack-go turns any non-200 into an error).
func apiError(command string, code int, text string) reply {
	if command == "" {
		command = "error"
	}
	inner := map[string]any{"uuidList": []string{}, "errorcode": code, "errortext": text}
	switch code {
	case 401:
	case 431:
		inner["cserrorcode"] = 4350 // InvalidParameterValueException
	case 530:
		inner["cserrorcode"] = 4250 // CloudRuntimeException
	default:
		inner["cserrorcode"] = 9999
	}
	status := code
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	return reply{status: status, body: map[string]any{strings.ToLower(command) + "response": inner}}
}

// notFound is what CloudStack answers when a uuid parameter names nothing.
func notFound(command, param, value string) reply {
	return apiError(command, 431, fmt.Sprintf("Unable to execute API command %s due to invalid value. "+
		"Invalid parameter %s value=%s due to incorrect long value format, or entity does not exist "+
		"or due to incorrect parameter annotation for the field in api cmd class.",
		strings.ToLower(command), param, value))
}

func missingParam(command, param string) reply {
	return apiError(command, 431, fmt.Sprintf("Unable to execute API command %s due to missing parameter %s",
		strings.ToLower(command), param))
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeJSON(w, apiError("", 405, "method "+r.Method+" not allowed"))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, apiError("", 431, "malformed request: "+err.Error()))
		return
	}
	command := r.Form.Get("command")
	if command == "" || !s.verify(r.Form) {
		s.mu.Lock()
		s.counters.AuthFailures++
		s.mu.Unlock()
		writeJSON(w, apiError(command, 401, authErrorText))
		return
	}

	s.mu.Lock()
	delay := s.latency[strings.ToLower(command)]
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone: do nothing, as if the request never arrived
		}
	}

	p := params{}
	for k, vs := range r.Form {
		if len(vs) > 0 {
			p[strings.ToLower(k)] = vs[0]
		}
	}
	now := s.now()
	s.mu.Lock()
	rep := s.handle(command, p, now)
	s.mu.Unlock()
	writeJSON(w, rep)
}

func writeJSON(w http.ResponseWriter, rep reply) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(rep.status)
	_ = json.NewEncoder(w).Encode(rep.body) // a client that hung up cannot be told
}

// handle runs one authenticated command. Callers hold s.mu.
func (s *Server) handle(command string, p params, now time.Time) reply {
	lc := strings.ToLower(command)
	s.calls[lc]++
	if f := s.failNext[lc]; f != nil && f.remaining > 0 {
		f.remaining--
		return apiError(command, f.code, "fakecloudstack: injected failure of "+command)
	}
	if command == "queryAsyncJobResult" {
		if j, ok := s.jobs[p["jobid"]]; ok {
			j.polls++
		}
	}
	s.at = now
	s.advance(now)

	switch command { // CloudStack matches command names case-sensitively
	case "listAccounts":
		return s.listAccounts(command, p)
	case "listVirtualMachines":
		return s.listVMs(command, p, false)
	case "listVirtualMachinesMetrics":
		return s.listVMs(command, p, true)
	case "deployVirtualMachine":
		return s.deployVM(command, p, now)
	case "stopVirtualMachine":
		return s.stopVM(command, p, now)
	case "startVirtualMachine":
		return s.startVM(command, p, now)
	case "destroyVirtualMachine":
		return s.destroyVM(command, p, now)
	case "disableAccount":
		return s.disableAccount(command, p, now)
	case "enableAccount":
		return s.enableAccount(command, p)
	case "queryAsyncJobResult":
		return s.queryAsyncJobResult(command, p)
	case "listUsageRecords":
		return s.listUsageRecords(command, p, now)
	case "listUsageServerMetrics":
		return s.listUsageServerMetrics(command, now)
	case "listEvents":
		return s.listEvents(command, p, now)
	case "listVolumes":
		return s.listVolumes(command, p, now)
	case "listPublicIpAddresses":
		return s.listPublicIPs(command, p, now)
	default:
		return apiError(command, 432, fmt.Sprintf("The given command %s either does not exist or is not implemented by fakecloudstack", command))
	}
}

// page cuts [0,total) to the requested page. CloudStack pages are 1-based; without
// pagesize a list returns at most MaxPageSize items; pagesize -1 means everything.
func page(command string, p params, total int) (lo, hi int, bad *reply) {
	size := MaxPageSize
	if v, ok := p["pagesize"]; ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			r := apiError(command, 431, fmt.Sprintf("Unable to execute API command %s due to invalid value. Invalid parameter pagesize value=%s due to incorrect long value format", strings.ToLower(command), v))
			return 0, 0, &r
		case n == -1:
			size = total
		case n > MaxPageSize:
			r := apiError(command, 431, fmt.Sprintf("Page size can't exceed max allowed page size value: %d", MaxPageSize))
			return 0, 0, &r
		case n < 1:
			r := apiError(command, 431, "Page size must be a positive number or -1")
			return 0, 0, &r
		default:
			size = n
		}
	}
	pg := 1
	if v, ok := p["page"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			r := apiError(command, 431, fmt.Sprintf("Unable to execute API command %s due to invalid value. Invalid parameter page value=%s due to incorrect long value format", strings.ToLower(command), v))
			return 0, 0, &r
		}
		if n > 1 {
			pg = n
		}
	}
	lo = (pg - 1) * size
	if lo > total {
		lo = total
	}
	hi = lo + size
	if hi > total {
		hi = total
	}
	return lo, hi, nil
}

// findAccountByName is CloudStack's findActiveAccount(name, domain): names compare
// case-insensitively (MySQL collation). Callers hold s.mu.
func (s *Server) findAccountByName(name, domainID string) *Account {
	for _, id := range s.acctOrder {
		a := s.accounts[id]
		if strings.EqualFold(a.Name, name) && a.DomainID == domainID {
			return a
		}
	}
	return nil
}

func (s *Server) domainExists(domainID string) bool {
	if domainID == RootDomainID {
		return true
	}
	for _, a := range s.accounts {
		if a.DomainID == domainID {
			return true
		}
	}
	return false
}

func (s *Server) listAccounts(command string, p params) reply {
	if id := p["id"]; id != "" {
		if _, ok := s.accounts[id]; !ok {
			return notFound(command, "id", id)
		}
	}
	if d := p["domainid"]; d != "" && !s.domainExists(d) {
		return notFound(command, "domainid", d)
	}
	total, running := map[string]int{}, map[string]int{}
	for _, v := range s.vms {
		total[v.AccountID]++
		if v.State == "Running" {
			running[v.AccountID]++
		}
	}
	var match []*Account
	for _, id := range s.acctOrder {
		a := s.accounts[id]
		if (p["id"] == "" || a.ID == p["id"]) &&
			(p["name"] == "" || strings.EqualFold(a.Name, p["name"])) &&
			(p["domainid"] == "" || a.DomainID == p["domainid"]) &&
			(p["state"] == "" || strings.EqualFold(a.State, p["state"])) {
			match = append(match, a)
		}
	}
	return pagedList(command, p, match, "account", func(a *Account) map[string]any {
		return renderAccount(a, total[a.ID], running[a.ID])
	})
}

// pagedList answers a list command the way CloudStack does: the page asked for
// under key, with the total count, and no key at all when nothing matched.
func pagedList[T any](command string, p params, match []T, key string, render func(T) map[string]any) reply {
	lo, hi, bad := page(command, p, len(match))
	if bad != nil {
		return *bad
	}
	inner := map[string]any{}
	if len(match) > 0 {
		inner["count"] = len(match)
		if hi > lo {
			list := make([]map[string]any, 0, hi-lo)
			for _, x := range match[lo:hi] {
				list = append(list, render(x))
			}
			inner[key] = list
		}
	}
	return ok(command, inner)
}

func renderAccount(a *Account, vmTotal, vmRunning int) map[string]any {
	return map[string]any{
		"id":          a.ID,
		"name":        a.Name,
		"accounttype": a.AccountType,
		"domain":      a.Domain,
		"domainid":    a.DomainID,
		"state":       a.State,
		"isdefault":   false,
		"groups":      []string{},
		"vmtotal":     vmTotal,
		"vmrunning":   vmRunning,
		"vmlimit":     "Unlimited",
		"vmavailable": "Unlimited",
	}
}

// listVMs answers listVirtualMachines and listVirtualMachinesMetrics, in CloudStack's
// order: ascending internal id, i.e. the order VMs were added.
func (s *Server) listVMs(command string, p params, metrics bool) reply {
	if id := p["id"]; id != "" {
		if _, ok := s.vms[id]; !ok {
			return notFound(command, "id", id)
		}
	}
	domainID := p["domainid"]
	if domainID != "" && !s.domainExists(domainID) {
		return notFound(command, "domainid", domainID)
	}
	accountID := ""
	if name := p["account"]; name != "" {
		d := domainID
		if d == "" {
			d = RootDomainID // the caller's domain: the fake's keys act as ROOT admin
		}
		a := s.findAccountByName(name, d)
		if a == nil {
			return apiError(command, 431, fmt.Sprintf("could not find account %s in domain %s", name, d))
		}
		accountID = a.ID
	}
	var match []*VM
	for _, id := range s.vmOrder {
		v := s.vms[id]
		a := s.accounts[v.AccountID]
		if (p["id"] == "" || v.ID == p["id"]) &&
			(accountID == "" || v.AccountID == accountID) &&
			(domainID == "" || a.DomainID == domainID) &&
			(p["state"] == "" || strings.EqualFold(v.State, p["state"])) {
			match = append(match, v)
		}
	}
	return pagedList(command, p, match, "virtualmachine", func(v *VM) map[string]any {
		m := s.renderVM(v, v.State)
		if metrics {
			addMetrics(m, v)
		}
		return m
	})
}

// renderVM writes a VM with the field names of CloudStack's UserVmResponse (a subset
// of what the simulator recorded). Callers hold s.mu.
func (s *Server) renderVM(v *VM, state string) map[string]any {
	m := map[string]any{
		"id":                    v.ID,
		"name":                  v.Name,
		"displayname":           v.DisplayName,
		"state":                 state,
		"created":               v.Created.UTC().Format(timeLayout),
		"serviceofferingid":     v.ServiceOfferingID,
		"serviceofferingname":   v.ServiceOfferingName,
		"cpunumber":             v.CPUNumber,
		"cpuspeed":              v.CPUSpeed,
		"memory":                v.Memory,
		"cpuused":               formatPercent(v.CPUUsed),
		"zoneid":                v.ZoneID,
		"zonename":              v.ZoneName,
		"hypervisor":            "Simulator",
		"haenable":              false,
		"passwordenabled":       false,
		"isdynamicallyscalable": false,
		"displayvm":             true,
		"nic":                   []any{},
		"securitygroup":         []any{},
		"affinitygroup":         []any{},
		"tags":                  []any{},
	}
	if a, ok := s.accounts[v.AccountID]; ok {
		m["account"] = a.Name
		m["domainid"] = a.DomainID
		m["domain"] = a.Domain
	}
	if v.TemplateID != "" {
		m["templateid"] = v.TemplateID
	}
	if state == "Running" {
		m["hostid"] = simHostID
		m["hostname"] = simHostName
	}
	return m
}

// addMetrics adds listVirtualMachinesMetrics' human-readable totals.
func addMetrics(m map[string]any, v *VM) {
	m["cputotal"] = fmt.Sprintf("%.2f Ghz", float64(v.CPUNumber*v.CPUSpeed)/1000)
	m["memorytotal"] = fmt.Sprintf("%.2f GB", float64(v.Memory)/1024)
	m["networkread"] = "0.00 MiB"
	m["networkwrite"] = "0.00 MiB"
	m["diskread"] = "0.00 MiB"
	m["diskwrite"] = "0.00 MiB"
	m["diskiopstotal"] = 0
}

// formatPercent writes a percentage as CloudStack does (DecimalFormat "#.##" + "%"):
// 95.3 -> "95.3%", 10 -> "10%".
func formatPercent(pct float64) string {
	return strconv.FormatFloat(math.Round(pct*100)/100, 'f', -1, 64) + "%"
}
