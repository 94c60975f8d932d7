package attestctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

// maxSecret is the service's limit of a secret value.
const maxSecret = 64 << 10

func runSecrets(a *app, args []string) error {
	return a.sub("secrets", args, map[string]func([]string) error{
		"put":    a.secretsPut,
		"list":   a.secretsList,
		"delete": a.secretsDelete,
	})
}

func (a *app) secretsPut(args []string) error {
	fs := a.flags("secrets put", "secrets put SCOPE NAME [--from-file FILE] [--until-phone-home]   (value on stdin)")
	fromFile := fs.String("from-file", "", "read the value from `file` (taken verbatim) instead of stdin")
	untilPhoneHome := fs.Bool("until-phone-home", false, "serve the secret only until the node phones home in the current boot")
	pos, err := parse(fs, args, 2, -1)
	if err != nil {
		return err
	}
	if len(pos) > 2 {
		// Never echo what was given: it may be the secret.
		return usagef("secrets put: a secret value is never taken from the command line, where ps and the shell history show it: pipe it on stdin or use --from-file")
	}
	scope, err := parseScope(pos[0])
	if err != nil {
		return err
	}
	value, err := a.readSecretValue(*fromFile)
	if err != nil {
		return err
	}
	defer clear(value)
	var res *metadatav1.PutSecretResponse
	err = a.meta("put secret "+pos[1]+" of "+pos[0], func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.PutSecret(ctx, &metadatav1.PutSecretRequest{Scope: scope, Name: pos[1], Value: value, UntilPhoneHome: *untilPhoneHome})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res.GetSecret())
	}
	_, err = fmt.Fprintf(a.env.Stdout, "stored secret %s of %s (%d bytes, sealed with key %s)\n",
		res.GetSecret().GetName(), scopeString(res.GetSecret().GetScope()), len(value), res.GetSecret().GetKeyId())
	return err
}

// readSecretValue reads a secret from a file or stdin. A file or a pipe is taken verbatim (a
// key file must stay byte for byte); typed on a terminal, echo is off and the final newline
// is dropped.
func (a *app) readSecretValue(path string) ([]byte, error) {
	var (
		r   io.Reader = a.env.Stdin
		tty bool
	)
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, &exitError{code: ExitError, err: fmt.Errorf("secrets put: %w", err)}
		}
		defer f.Close()
		r = f
	} else if f, ok := a.env.Stdin.(*os.File); ok && isTerminal(f) {
		tty = true
		fmt.Fprint(a.env.Stderr, "secret value (not echoed), end with Enter: ")
		restore, err := noEcho(f)
		if err != nil {
			return nil, fmt.Errorf("secrets put: turn off terminal echo: %w", err)
		}
		defer func() {
			restore()
			fmt.Fprintln(a.env.Stderr)
		}()
		r = lineReader{f}
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("secrets put: read the value: %w", err)
	}
	if tty {
		b = bytes.TrimRight(b, "\r\n")
	}
	switch {
	case len(b) == 0:
		return nil, usagef("secrets put: empty value: pipe the value on stdin (printf %%s \"$VALUE\" | attestctl secrets put ...) or use --from-file")
	case len(b) > maxSecret:
		clear(b)
		return nil, usagef("secrets put: the value is larger than %d bytes", maxSecret)
	}
	return b, nil
}

// noEcho turns off echo on the terminal f and returns how to turn it back on.
func noEcho(f *os.File) (restore func(), err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// lineReader ends at the first newline, so a typed secret ends with Enter.
type lineReader struct{ r io.Reader }

func (l lineReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if i := bytes.IndexByte(p[:n], '\n'); i >= 0 {
		return i + 1, io.EOF
	}
	return n, err
}

func (a *app) secretsList(args []string) error {
	fs := a.flags("secrets list", "secrets list [SCOPE]")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	req := &metadatav1.ListSecretsRequest{}
	if len(pos) == 1 {
		if req.Scope, err = parseScope(pos[0]); err != nil {
			return err
		}
	}
	var res *metadatav1.ListSecretsResponse
	err = a.meta("list secrets", func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.ListSecrets(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res)
	}
	t := a.table("SCOPE", "NAME", "KEY", "UNTIL PHONE-HOME", "UPDATED")
	for _, s := range res.GetSecrets() {
		t.row(scopeString(s.GetScope()), s.GetName(), s.GetKeyId(), yesNo(s.GetUntilPhoneHome()), fmtTime(s.GetUpdateTime()))
	}
	return t.flush()
}

func (a *app) secretsDelete(args []string) error {
	fs := a.flags("secrets delete", "secrets delete SCOPE NAME")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	scope, err := parseScope(pos[0])
	if err != nil {
		return err
	}
	err = a.meta("delete secret "+pos[1]+" of "+pos[0], func(ctx context.Context, c metadatav1.MetadataServiceClient) error {
		_, err := c.DeleteSecret(ctx, &metadatav1.DeleteSecretRequest{Scope: scope, Name: pos[1]})
		return err
	})
	if err != nil {
		return err
	}
	return a.done(map[string]any{"deleted": pos[1], "scope": pos[0]}, "deleted secret %s of %s", pos[1], pos[0])
}
