package run_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/attestboot/attestboot/services/run"
)

func waitThen(err error) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		return err
	}
}

func TestGroupFirstErrorCancelsTheRest(t *testing.T) {
	t.Parallel()
	boom := errors.New("listener failed")
	stopped := make(chan struct{}, 2)
	start := time.Now()
	err := run.Group(context.Background(),
		func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- struct{}{}
			return fmt.Errorf("server: %w", ctx.Err())
		},
		func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- struct{}{}
			return nil
		},
		func(context.Context) error { return boom },
	)
	require.ErrorIs(t, err, boom, "the cause, not the context error of the tasks it stopped")
	require.Len(t, stopped, 2, "every other task saw the cancellation and returned")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestGroupShutdownThroughContextIsNotAnError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run.Group(ctx, waitThen(nil), waitThen(context.Canceled), waitThen(fmt.Errorf("wrapped: %w", context.Canceled)))
	}()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("group did not stop after ctx was cancelled")
	}
}

func TestGroupErrorDuringShutdownIsReported(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	drainFailed := errors.New("drain failed")
	err := run.Group(ctx, waitThen(nil), waitThen(drainFailed))
	require.ErrorIs(t, err, drainFailed, "a real error while stopping is still an error")
}

func TestGroupOwnDeadlineIsAnError(t *testing.T) {
	t.Parallel()
	// A task's internal timeout, while the group is alive, is a failure like any other.
	err := run.Group(context.Background(), func(context.Context) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		<-ctx.Done()
		return ctx.Err()
	}, waitThen(nil))
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestGroupNilTaskDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var ranAfterOneShot bool
	err := run.Group(ctx,
		func(context.Context) error { return nil },
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return errors.New("cancelled by a task that succeeded")
			case <-time.After(50 * time.Millisecond):
				ranAfterOneShot = true
				cancel()
				return nil
			}
		},
	)
	require.NoError(t, err)
	require.True(t, ranAfterOneShot)
}
