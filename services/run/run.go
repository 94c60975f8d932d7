// Package run runs the long-lived tasks of a service process (gRPC server, HTTP server,
// reconcilers) as one group: the first failure stops them all and shutdown flows through ctx.
package run

import (
	"context"
	"errors"

	"golang.org/x/sync/errgroup"
)

// Group runs every task in its own goroutine with a context that is cancelled when ctx ends or
// when any task returns an error, and waits for all of them. It returns the first error that is
// not merely a task reporting that the group's context ended, or nil when the group stopped
// because ctx was cancelled (a normal shutdown).
//
// A task that returns nil does not stop the others: a one-shot task (say, applying migrations
// before serving) may finish early. Tasks must return once their context is done.
func Group(ctx context.Context, tasks ...func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, task := range tasks {
		g.Go(func() error {
			err := task(gctx)
			// A task that stops because the group is shutting down is not the cause of the shutdown;
			// dropping its error keeps the real cause (or nil, on a normal shutdown) as the result.
			if err != nil && gctx.Err() != nil && isContextErr(err) {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
