package attestctl

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries its own exit code and hint, for failures found locally (a missing file is
// not a gRPC status) or for a summary of many failures.
type exitError struct {
	code int
	err  error
	hint string
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// rpcError is a failed call to a service, with what the operator can do about it.
type rpcError struct {
	op      string // what we tried, e.g. "get node x1"
	service string // "attestor", "tunnelmgr", "metadata"
	addr    string
	st      *status.Status
	hint    string
}

// Error prints the service's message, which names what it refused (services put their own
// operation and ids in it), and adds what we tried only where the message cannot know it:
// transport failures and authentication.
func (e *rpcError) Error() string {
	switch e.st.Code() {
	case codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.InvalidArgument, codes.ResourceExhausted:
		return fmt.Sprintf("%s (%s)", e.st.Message(), e.st.Code())
	}
	return fmt.Sprintf("%s: %s (%s)", e.op, e.st.Message(), e.st.Code())
}

// GRPCStatus lets status.Code see through the wrapping.
func (e *rpcError) GRPCStatus() *status.Status { return e.st }

// rpcErr wraps the error of a call to service made for op.
func (a *app) rpcErr(service, op string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	e := &rpcError{op: op, service: service, addr: a.addr(service), st: st}
	e.hint = a.hintFor(e)
	return e
}

func (a *app) hintFor(e *rpcError) string {
	flagName := "-" + e.service
	switch e.st.Code() {
	case codes.Unauthenticated:
		if a.creds != nil && !a.creds.hasCert && a.cfg.Token == "" {
			return "no admin credential: pass -cert/-key (or -state-dir with admin.pem) or set " + TokenEnv
		}
		return "the server did not accept the admin credential: check " + TokenEnv + " or use the admin certificate of this deployment's PKI (-cert/-key)"
	case codes.PermissionDenied:
		return "the client certificate is not an admin identity on " + e.service + ": use its admin certificate (-cert/-key) or set " + TokenEnv
	case codes.Unavailable:
		msg := e.st.Message()
		if strings.Contains(msg, "certificate") || strings.Contains(msg, "x509") || strings.Contains(msg, "tls") {
			return fmt.Sprintf("TLS with %s at %s failed: check -ca (the CA of its server certificate) and that the address is one its certificate covers", e.service, e.addr)
		}
		return fmt.Sprintf("cannot reach %s at %s: is it running? set %s or %s", e.service, e.addr, flagName, envName(e.service))
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s at %s did not answer within -timeout %s", e.service, e.addr, a.cfg.Timeout)
	case codes.NotFound:
		switch e.service {
		case "metadata":
			return "nothing by that name: see `attestctl secrets list` or check the scope (defaults | group:NAME | node:ID)"
		case "tunnelmgr":
			return "no such tunnel: see `attestctl tunnels list`"
		}
		return "nothing by that name: see `attestctl nodes list` or `attestctl groups list`"
	case codes.AlreadyExists:
		return "it exists already: change it with `update`; an EK binding is replaced only after `attestctl enrollment delete NODE --reason ...`"
	case codes.FailedPrecondition:
		return "the request conflicts with the current state: read the message above"
	case codes.InvalidArgument:
		return "the server refused the input: read the message above"
	}
	return ""
}

func envName(service string) string { return EnvPrefix + "_" + strings.ToUpper(service) }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ee):
		return ee.code
	}
	switch status.Code(err) {
	case codes.NotFound:
		return ExitNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return ExitRefused
	case codes.AlreadyExists, codes.FailedPrecondition:
		return ExitConflict
	case codes.Unavailable, codes.DeadlineExceeded:
		return ExitUnavailable
	}
	return ExitError
}

// report prints err with its hint and returns the exit code.
func (a *app) report(err error) int {
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(a.env.Stderr, "attestctl: %v\n", err)
	var re *rpcError
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &re) && re.hint != "":
		fmt.Fprintf(a.env.Stderr, "hint: %s\n", re.hint)
	case errors.As(err, &ee) && ee.hint != "":
		fmt.Fprintf(a.env.Stderr, "hint: %s\n", ee.hint)
	case errors.As(err, &ue):
		fmt.Fprintln(a.env.Stderr, "hint: `attestctl help` lists the commands and flags")
	}
	return exitCode(err)
}
