package run

import (
	"context"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The Runner takes the job's lock in its own database: while a run of a job holds it,
// the same job in another database (another deployment on the same server) runs,
// and the same job in the same database does not.
func TestRunLockIsPerDatabase(t *testing.T) {
	a, b := mysqltest.New(t), mysqltest.New(t)
	started := make(chan struct{})
	release := make(chan struct{})
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		var o, e syncBuffer
		_ = newRunner("billing", &o, &e).Run(context.Background(), a.DB, func(ctx context.Context) (*Report, error) {
			close(started)
			<-release
			return nil, nil
		})
	}()
	select {
	case <-started:
	case <-firstDone:
		t.Fatal("the first run never started its job")
	case <-time.After(30 * time.Second):
		t.Fatal("the first run did not start in 30 s")
	}
	defer func() { close(release); <-firstDone }()

	ran := func(db *mysqltest.DB) bool {
		var o, e syncBuffer
		called := false
		_ = newRunner("billing", &o, &e).Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
			called = true
			return nil, nil
		})
		return called
	}
	if !ran(b) {
		t.Error("billing in another database was blocked by this one's run")
	}
	if ran(a) {
		t.Error("billing in the same database ran beside the running one")
	}
}
