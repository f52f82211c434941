package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/rs/zerolog"
)

// StopVM stops a VM. A VM already Stopped, Destroyed or Expunging is left alone (it is
// not running, which is what stopping is for), so repeating the call is harmless. A VM
// CloudStack does not know is ErrNotFound.
func (c *Client) StopVM(ctx context.Context, id string) error {
	vm, err := c.vm(ctx, id)
	if err != nil {
		return fmt.Errorf("stop vm %s: %w", id, err)
	}
	switch vm.State {
	case VMStopped, VMDestroyed, VMExpunging:
		zerolog.Ctx(ctx).Debug().Str("vm_id", id).Str("state", vm.State).Msg("vm not running, no stop needed")
		return nil
	}
	return c.act(ctx, "stop vm", id, vm.State, "stopVirtualMachine", func(cs *cloudstack.CloudStackClient) (string, error) {
		r, err := cs.VirtualMachine.StopVirtualMachine(cs.VirtualMachine.NewStopVirtualMachineParams(id))
		if err != nil {
			return "", err
		}
		return r.JobID, nil
	})
}

// StartVM starts a VM; a Running VM is left alone. CloudStack refuses to start a VM of
// a disabled account or a destroyed VM, which surfaces as an *APIError.
func (c *Client) StartVM(ctx context.Context, id string) error {
	vm, err := c.vm(ctx, id)
	if err != nil {
		return fmt.Errorf("start vm %s: %w", id, err)
	}
	if vm.State == VMRunning {
		zerolog.Ctx(ctx).Debug().Str("vm_id", id).Msg("vm already running, no start needed")
		return nil
	}
	return c.act(ctx, "start vm", id, vm.State, "startVirtualMachine", func(cs *cloudstack.CloudStackClient) (string, error) {
		r, err := cs.VirtualMachine.StartVirtualMachine(cs.VirtualMachine.NewStartVirtualMachineParams(id))
		if err != nil {
			return "", err
		}
		return r.JobID, nil
	})
}

// DestroyVM destroys a VM, and with expunge also deletes it for good (no recovery).
// Nothing is done when the VM is already gone (unknown to CloudStack) or Expunging, or
// Destroyed and expunge is false: repeating the call is harmless.
func (c *Client) DestroyVM(ctx context.Context, id string, expunge bool) error {
	vm, err := c.vm(ctx, id)
	if errors.Is(err, ErrNotFound) {
		zerolog.Ctx(ctx).Debug().Str("vm_id", id).Msg("vm already gone, no destroy needed")
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy vm %s: %w", id, err)
	}
	if vm.State == VMExpunging || (vm.State == VMDestroyed && !expunge) {
		zerolog.Ctx(ctx).Debug().Str("vm_id", id).Str("state", vm.State).Msg("vm already destroyed, no destroy needed")
		return nil
	}
	return c.act(ctx, "destroy vm", id, vm.State, "destroyVirtualMachine", func(cs *cloudstack.CloudStackClient) (string, error) {
		p := cs.VirtualMachine.NewDestroyVirtualMachineParams(id)
		p.SetExpunge(expunge)
		r, err := cs.VirtualMachine.DestroyVirtualMachine(p)
		if err != nil {
			return "", err
		}
		return r.JobID, nil
	})
}

// DisableAccount disables an account (disableAccount with lock=false): its users are
// locked out and CloudStack stops its running VMs. A disabled account is left alone; a
// locked one is disabled (locking keeps VMs running, which is not enough).
func (c *Client) DisableAccount(ctx context.Context, accountID string) error {
	a, err := c.account(ctx, accountID)
	if err != nil {
		return fmt.Errorf("disable account %s: %w", accountID, err)
	}
	if a.State == AccountDisabled {
		zerolog.Ctx(ctx).Debug().Str("account_id", accountID).Msg("account already disabled")
		return nil
	}
	return c.act(ctx, "disable account", accountID, a.State, "disableAccount", func(cs *cloudstack.CloudStackClient) (string, error) {
		p := cs.Account.NewDisableAccountParams(false)
		p.SetId(accountID)
		r, err := cs.Account.DisableAccount(p)
		if err != nil {
			return "", err
		}
		return r.JobID, nil
	})
}

// EnableAccount enables a disabled or locked account; an enabled one is left alone.
// CloudStack does not restart the VMs that disabling stopped: that is StartVM's job.
func (c *Client) EnableAccount(ctx context.Context, accountID string) error {
	a, err := c.account(ctx, accountID)
	if err != nil {
		return fmt.Errorf("enable account %s: %w", accountID, err)
	}
	if a.State == AccountEnabled {
		zerolog.Ctx(ctx).Debug().Str("account_id", accountID).Msg("account already enabled")
		return nil
	}
	// enableAccount is synchronous: no job id, nothing to poll.
	return c.act(ctx, "enable account", accountID, a.State, "enableAccount", func(cs *cloudstack.CloudStackClient) (string, error) {
		p := cs.Account.NewEnableAccountParams()
		p.SetId(accountID)
		_, err := cs.Account.EnableAccount(p)
		return "", err
	})
}

// act issues a command that changes something and, when CloudStack answers with a job
// id, waits for the job. op and id name the operation in errors and logs; from is the
// state that made the change necessary.
func (c *Client) act(ctx context.Context, op, id, from, command string, submit func(*cloudstack.CloudStackClient) (jobID string, err error)) error {
	if c.cfg.ReadOnly {
		return fmt.Errorf("%s %s (state %s): %w", op, id, from, ErrReadOnly)
	}
	var jobID string
	err := c.call(ctx, command, func(cs *cloudstack.CloudStackClient) error {
		var err error
		jobID, err = submit(cs)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if jobID != "" {
		if err := c.wait(ctx, command, jobID); err != nil {
			return fmt.Errorf("%s %s: %w", op, id, err)
		}
	}
	zerolog.Ctx(ctx).Info().Str("op", op).Str("id", id).Str("from", from).Str("job_id", jobID).Msg("orchestrator change done")
	return nil
}

// wait polls queryAsyncJobResult every AsyncPoll until the job succeeds (nil), fails
// (*APIError with the job's error), AsyncTimeout passes (ErrAsyncTimeout) or ctx ends.
// cloudstack-go's own async client is not used: it sleeps 1 to 15 s between polls
// with time.Sleep, ignores contexts and counts its timeout in whole seconds.
func (c *Client) wait(ctx context.Context, command, jobID string) error {
	deadline := time.NewTimer(c.cfg.AsyncTimeout)
	defer deadline.Stop()
	for {
		var r *cloudstack.QueryAsyncJobResultResponse
		err := c.call(ctx, "queryAsyncJobResult", func(cs *cloudstack.CloudStackClient) error {
			var err error
			r, err = cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(jobID))
			return err
		})
		if err != nil {
			return fmt.Errorf("poll job %s: %w", jobID, err)
		}
		switch r.Jobstatus {
		case 1:
			return nil
		case 2:
			return jobError(command, jobID, r)
		}
		poll := time.NewTimer(c.cfg.AsyncPoll)
		select {
		case <-ctx.Done():
			poll.Stop()
			return fmt.Errorf("wait for job %s: %w", jobID, ctx.Err())
		case <-deadline.C:
			poll.Stop()
			return fmt.Errorf("job %s after %s: %w", jobID, c.cfg.AsyncTimeout, ErrAsyncTimeout)
		case <-poll.C:
		}
	}
}

// jobError reads a failed job's result: {"errorcode":530,"errortext":"..."}.
func jobError(command, jobID string, r *cloudstack.QueryAsyncJobResultResponse) *APIError {
	e := &APIError{Command: command, JobID: jobID, ErrorCode: r.Jobresultcode}
	var res struct {
		ErrorCode   int    `json:"errorcode"`
		CSErrorCode int    `json:"cserrorcode"`
		ErrorText   string `json:"errortext"`
	}
	if json.Unmarshal(r.Jobresult, &res) == nil {
		if res.ErrorCode != 0 {
			e.ErrorCode = res.ErrorCode
		}
		e.CSErrorCode, e.ErrorText = res.CSErrorCode, res.ErrorText
	}
	if e.ErrorText == "" {
		e.ErrorText = string(r.Jobresult)
	}
	return e
}
