// Package config turns command-line flags into service configuration, with every flag also
// settable from the environment (PREFIX_FLAG_NAME), and reads secrets from files so that tokens
// and keys never have to appear on a command line.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxSecretFileSize bounds ReadSecretFile so a wrong path (a device, a huge file) fails fast.
const maxSecretFileSize = 1 << 20

// EnvName returns the environment variable that overrides flag name: prefix and name joined by an
// underscore, dashes and dots turned into underscores, upper-cased ("ATTESTOR", "listen" →
// "ATTESTOR_LISTEN"; "tls-cert" → "ATTESTOR_TLS_CERT"). An empty prefix gives just the name.
func EnvName(prefix, name string) string {
	n := strings.NewReplacer("-", "_", ".", "_").Replace(name)
	if prefix != "" {
		n = strings.TrimSuffix(prefix, "_") + "_" + n
	}
	return strings.ToUpper(n)
}

// Parse parses args (usually os.Args[1:]) into fs, then applies environment overrides from the
// process environment with ApplyEnv. The command line wins over the environment, which wins over
// the defaults. Each flag's usage text is extended with its variable name so -help shows it.
// A secret flag (see SecretVar) given on the command line is an error.
func Parse(fs *flag.FlagSet, prefix string, args []string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage += " (env " + EnvName(prefix, f.Name) + ")"
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	var onCommandLine []string
	fs.Visit(func(f *flag.Flag) {
		if _, ok := f.Value.(*secretValue); ok {
			onCommandLine = append(onCommandLine, f.Name)
		}
	})
	if len(onCommandLine) > 0 {
		return fmt.Errorf("config: -%s must not be given on the command line, where other users can read it: set %s or use a file",
			onCommandLine[0], EnvName(prefix, onCommandLine[0]))
	}
	return ApplyEnv(fs, prefix, os.LookupEnv)
}

// ApplyEnv sets every flag of fs that was not set on the command line from the variable
// EnvName(prefix, flag) when lookup finds it (an empty value counts as set). fs must already be
// parsed. An invalid value is an error naming the variable; secret values never appear in it.
func ApplyEnv(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	if !fs.Parsed() {
		return errors.New("config: ApplyEnv before Parse")
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] {
			return
		}
		env := EnvName(prefix, f.Name)
		v, ok := lookup(env)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("config: environment variable %s (flag -%s): %w", env, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// ReadSecretFile returns the content of the file at path with trailing newlines (\n, \r\n)
// removed, as written by `echo token > file` or a Kubernetes/Docker secret. An empty secret is an
// error: a service must not start with an empty admin token or key by accident.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: open secret file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("config: read secret file %s: %w", path, err)
	}
	if len(b) > maxSecretFileSize {
		return "", fmt.Errorf("config: secret file %s is larger than %d bytes", path, maxSecretFileSize)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("config: secret file %s is empty", path)
	}
	return s, nil
}

// SecretVar defines a flag for a secret such as a token: it can be set only from the environment
// (Parse refuses it on the command line, where `ps` shows it to every user), and its value never
// appears in -help output or in errors.
func SecretVar(fs *flag.FlagSet, p *string, name, usage string) {
	fs.Var(&secretValue{p: p}, name, usage+" (secret: environment only)")
}

type secretValue struct{ p *string }

func (s *secretValue) Set(v string) error {
	*s.p = v
	return nil
}

// String never returns the secret: the flag package prints it as the default in -help.
func (s *secretValue) String() string { return "" }

// StringList is a flag.Value holding a comma-separated list; empty items are dropped and
// surrounding spaces trimmed. Setting it replaces the list (so an environment value or a flag
// replaces the default rather than appending to it).
type StringList []string

// Set implements flag.Value.
func (l *StringList) Set(v string) error {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	*l = out
	return nil
}

// String implements flag.Value.
func (l *StringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}
