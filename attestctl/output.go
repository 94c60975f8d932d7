package attestctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// flags returns a flag set for a subcommand; -json is accepted after the command name too.
func (a *app) flags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("attestctl "+name, flag.ContinueOnError)
	fs.SetOutput(a.env.Stderr)
	fs.BoolVar(&a.cfg.JSON, "json", a.cfg.JSON, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(a.env.Stderr, "usage: attestctl %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// errHelpShown ends a command after -h printed its usage: not a failure.
var errHelpShown = errors.New("help shown")

// parse parses flags given anywhere among args ("enroll NODE --ek-sha256 X" as well as
// "enroll --ek-sha256 X NODE") and checks the number of positional arguments is in [min, max]
// (max < 0: unbounded).
func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelpShown
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < min || (max >= 0 && len(pos) > max) {
		fs.Usage()
		switch {
		case max == 0:
			return nil, usagef("%s takes no arguments, got %q", fs.Name(), pos)
		case len(pos) < min:
			return nil, usagef("%s: missing argument", fs.Name())
		default:
			return nil, usagef("%s: unexpected argument %q", fs.Name(), pos[max])
		}
	}
	return pos, nil
}

// sub dispatches the subcommands of a group.
func (a *app) sub(group string, args []string, subs map[string]func([]string) error) error {
	if len(args) == 0 {
		return usagef("%s: missing subcommand (%s)", group, keys(subs))
	}
	if slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]) {
		a.help([]string{group})
		return errHelpShown
	}
	f, ok := subs[args[0]]
	if !ok {
		return usagef("%s: unknown subcommand %q (%s)", group, args[0], keys(subs))
	}
	return f(args[1:])
}

func keys(m map[string]func([]string) error) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, "|")
}

// table writes aligned columns for people.
type table struct{ tw *tabwriter.Writer }

func (a *app) table(header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(a.env.Stdout, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		// A tab or newline inside a cell would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cells[i])
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// printProto prints an API message as one protojson document. protojson varies its
// whitespace on purpose; re-indenting with encoding/json makes the output stable.
func (a *app) printProto(m proto.Message) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, protoAsJSON(m), "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := a.env.Stdout.Write(buf.Bytes())
	return err
}

// printProtoLine prints an API message as one line of JSON (for streams).
func (a *app) printProtoLine(m proto.Message) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, protoAsJSON(m)); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := a.env.Stdout.Write(buf.Bytes())
	return err
}

// printJSON prints a value that is not an API message.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// isTerminal reports whether w is a terminal (progress bars and redraws only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// protoAsJSON embeds an API message, in protojson, in a document made with printJSON.
func protoAsJSON(m proto.Message) json.RawMessage {
	b, err := protojson.Marshal(m)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return b
}

// printJSONLine prints a value as one line of JSON (for streams).
func (a *app) printJSONLine(v any) error {
	return json.NewEncoder(a.env.Stdout).Encode(v)
}
