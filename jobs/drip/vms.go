package drip

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

// readVMs answers has_vm for the accounts that are at a step now (only a step's
// `unless` asks it). With CloudStack, in as few calls as its API allows: one paged
// listing of every VM when that costs fewer calls than reading the accounts one by
// one (two calls each), else account by account with bounded concurrency; an account
// without a CloudStack account has no VM. Without CloudStack, from billed usage
// (charges), which arrives a day late. An account whose read failed keeps vmErr and
// is not evaluated this run.
func (r *runState) readVMs(ctx context.Context, need []*signup) error {
	if len(need) == 0 {
		return nil
	}
	r.count("has_vm_reads", int64(len(need)))
	if r.j.Orchestrator == nil {
		return r.usageVMs(ctx, need)
	}
	var ask []*signup
	for _, s := range need {
		if s.csAccount == "" {
			s.vmRead, s.hasVM = true, false
			continue
		}
		ask = append(ask, s)
	}
	if len(ask) == 0 {
		return nil
	}
	log := zerolog.Ctx(ctx)
	if len(ask) >= 3 {
		if r.listingCalls == 0 {
			calls, err := r.j.Orchestrator.ListingCalls(ctx)
			if err != nil {
				log.Warn().Err(err).Msg("orchestrator totals: reading VMs account by account")
				calls = -1
			}
			r.listingCalls = calls
		}
		if r.listingCalls > 0 && r.listingCalls <= 2*len(ask) {
			byCS := map[string][]*signup{}
			for _, s := range ask {
				byCS[s.csAccount] = append(byCS[s.csAccount], s)
			}
			var err error
			for vm, verr := range r.j.Orchestrator.VMs(ctx, orchestrator.ListVMs{}) {
				if verr != nil {
					err = verr
					break
				}
				for _, s := range byCS[vm.AccountID] {
					s.hasVM = true
				}
			}
			for _, s := range ask {
				s.vmRead = true
				if err != nil {
					s.vmErr = fmt.Errorf("list every VM: %w", err)
				}
			}
			return nil
		}
	}
	n := r.j.Config.Concurrency
	if n < 1 {
		n = 4
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, s := range ask {
		if ctx.Err() != nil {
			s.vmErr = context.Cause(ctx)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vms, err := r.j.Orchestrator.VMMetrics(ctx, s.csAccount)
			if errors.Is(err, orchestrator.ErrNotFound) {
				vms, err = nil, nil
			}
			s.vmRead, s.hasVM, s.vmErr = true, len(vms) > 0, err
		}()
	}
	wg.Wait()
	return nil
}

// usageVMs is has_vm without CloudStack: the account was billed for usage.
func (r *runState) usageVMs(ctx context.Context, need []*signup) error {
	ids := make([]int64, len(need))
	by := map[int64]*signup{}
	for i, s := range need {
		ids[i] = s.id
		by[s.id] = s
		s.vmRead, s.hasVM = true, false
	}
	rows, err := r.j.DB.QueryContext(ctx, fmt.Sprintf(queryUsage, inList(len(ids))), idArgs(ids)...)
	if err != nil {
		return fmt.Errorf("has_vm from usage: %w", err)
	}
	err = scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		if s := by[id]; s != nil {
			s.hasVM = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("has_vm from usage: %w", err)
	}
	return nil
}
