package fakecloudstack

import (
	"encoding/json"
	"fmt"
	"io"
)

// Credential is an API key pair the fake accepts.
type Credential struct {
	APIKey    string `json:"apikey"`
	SecretKey string `json:"secretkey"`
}

// Fixtures is the JSON document LoadFixtures reads: the demo's cloud in one file.
//
//	{"credentials": [{"apikey": "...", "secretkey": "..."}],
//	 "accounts": [{"id": "...", "name": "acme", "state": "enabled"}],
//	 "vms": [{"id": "...", "name": "web-1", "accountid": "...", "state": "Running",
//	          "created": "2026-01-05T10:00:00Z", "cpuused": 97.5}]}
type Fixtures struct {
	Credentials []Credential `json:"credentials"`
	Accounts    []Account    `json:"accounts"`
	VMs         []VM         `json:"vms"`
	// Volumes and IPs feed the usage server (listUsageRecords) beside the VMs.
	Volumes []Volume   `json:"volumes,omitempty"`
	IPs     []PublicIP `json:"ips,omitempty"`
}

// LoadFixtures seeds the fake from a Fixtures JSON document, adding credentials, then
// accounts, then VMs, volumes and IPs (each one's account must come before it). Unknown fields are an
// error, so a typo in a fixture file fails loudly instead of seeding the wrong world.
func (s *Server) LoadFixtures(r io.Reader) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f Fixtures
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("fakecloudstack: load fixtures: %w", err)
	}
	for i, c := range f.Credentials {
		if c.APIKey == "" || c.SecretKey == "" {
			return fmt.Errorf("fakecloudstack: load fixtures: credential %d: apikey and secretkey are required", i)
		}
		s.AddCredential(c.APIKey, c.SecretKey)
	}
	for _, a := range f.Accounts {
		if _, err := s.AddAccount(a); err != nil {
			return fmt.Errorf("fakecloudstack: load fixtures: %w", err)
		}
	}
	for _, v := range f.VMs {
		if _, err := s.AddVM(v); err != nil {
			return fmt.Errorf("fakecloudstack: load fixtures: %w", err)
		}
	}
	for _, v := range f.Volumes {
		if _, err := s.AddVolume(v); err != nil {
			return fmt.Errorf("fakecloudstack: load fixtures: %w", err)
		}
	}
	for _, ip := range f.IPs {
		if _, err := s.AddPublicIP(ip); err != nil {
			return fmt.Errorf("fakecloudstack: load fixtures: %w", err)
		}
	}
	return nil
}
