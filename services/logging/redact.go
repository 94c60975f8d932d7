package logging

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Redacted replaces the value of every sensitive field in Redact's output.
const Redacted = "[REDACTED]"

// Bounds on Redact's output: a log line must stay small even for a hostile or huge message.
const (
	maxDepth      = 16
	maxListItems  = 32
	maxStringSize = 256
)

// Redact renders m as a compact, single-line summary for logs, in the spirit of the protobuf text
// format, that never contains secret or key material:
//   - a field carrying the standard `[debug_redact = true]` option, an enum value carrying it, or a
//     field whose name contains secret, password, passphrase, private, token, preshared or
//     credential is shown as [REDACTED], whatever its type;
//   - every bytes field is shown only as its length, <N bytes>, because bytes fields hold keys,
//     nonces, certificates and blobs that are either sensitive or useless in a log;
//   - nested messages, repeated fields and maps are walked with protoreflect; long strings, long
//     lists and deep nesting are truncated; unknown fields are shown only as their length.
//
// Fields are printed in field-number order and map entries in key order, so the output is stable.
func Redact(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	rm := m.ProtoReflect()
	if !rm.IsValid() {
		return "<nil>"
	}
	var b strings.Builder
	writeMessage(&b, rm, 0)
	return b.String()
}

// Message returns a slog.LogValuer for m that runs Redact only if the record is actually written,
// so summaries cost nothing when debug logging is off.
func Message(m proto.Message) slog.LogValuer { return redactedMessage{m: m} }

type redactedMessage struct{ m proto.Message }

func (r redactedMessage) LogValue() slog.Value { return slog.StringValue(Redact(r.m)) }

type fieldValue struct {
	fd protoreflect.FieldDescriptor
	v  protoreflect.Value
}

func writeMessage(b *strings.Builder, m protoreflect.Message, depth int) {
	if depth >= maxDepth {
		b.WriteString("{…}")
		return
	}
	var fields []fieldValue
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fields = append(fields, fieldValue{fd: fd, v: v})
		return true
	})
	slices.SortFunc(fields, func(a, b fieldValue) int { return cmp.Compare(a.fd.Number(), b.fd.Number()) })

	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		if f.fd.IsExtension() {
			b.WriteString("[" + string(f.fd.FullName()) + "]")
		} else {
			b.WriteString(string(f.fd.Name()))
		}
		b.WriteByte(':')
		switch {
		case sensitive(f.fd):
			b.WriteString(Redacted)
		case f.fd.IsMap():
			writeMap(b, f.fd, f.v.Map(), depth)
		case f.fd.IsList():
			writeList(b, f.fd, f.v.List(), depth)
		default:
			writeValue(b, f.fd, f.v, depth)
		}
	}
	if n := len(m.GetUnknown()); n > 0 {
		if len(fields) > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(b, "unknown:<%d bytes>", n)
	}
	b.WriteByte('}')
}

func writeList(b *strings.Builder, fd protoreflect.FieldDescriptor, l protoreflect.List, depth int) {
	b.WriteByte('[')
	n := l.Len()
	for i := 0; i < n && i < maxListItems; i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeValue(b, fd, l.Get(i), depth)
	}
	if n > maxListItems {
		fmt.Fprintf(b, " …(+%d)", n-maxListItems)
	}
	b.WriteByte(']')
}

func writeMap(b *strings.Builder, fd protoreflect.FieldDescriptor, m protoreflect.Map, depth int) {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, compareMapKeys)
	b.WriteByte('{')
	for i, k := range keys {
		if i >= maxListItems {
			fmt.Fprintf(b, " …(+%d)", len(keys)-maxListItems)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		writeValue(b, fd.MapKey(), k.Value(), depth)
		b.WriteByte(':')
		writeValue(b, fd.MapValue(), m.Get(k), depth)
	}
	b.WriteByte('}')
}

// compareMapKeys orders keys of one map, which all have the same kind (string, bool or integer).
func compareMapKeys(a, b protoreflect.MapKey) int {
	switch av := a.Interface().(type) {
	case string:
		return strings.Compare(av, b.String())
	case bool:
		return cmp.Compare(boolInt(av), boolInt(b.Bool()))
	case int32, int64:
		return cmp.Compare(a.Int(), b.Int())
	default:
		return cmp.Compare(a.Uint(), b.Uint())
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// writeValue writes one singular value (or one element of a list or map) of field fd.
func writeValue(b *strings.Builder, fd protoreflect.FieldDescriptor, v protoreflect.Value, depth int) {
	switch fd.Kind() {
	case protoreflect.BytesKind:
		fmt.Fprintf(b, "<%d bytes>", len(v.Bytes()))
	case protoreflect.StringKind:
		writeString(b, v.String())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		writeMessage(b, v.Message(), depth+1)
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(v.Enum())
		switch {
		case ev == nil:
			b.WriteString(strconv.Itoa(int(v.Enum())))
		case enumValueRedacted(ev):
			b.WriteString(Redacted)
		default:
			b.WriteString(string(ev.Name()))
		}
	default:
		// Booleans, integers and floats: protoreflect.Value formats them plainly.
		b.WriteString(v.String())
	}
}

func writeString(b *strings.Builder, s string) {
	if len(s) <= maxStringSize {
		b.WriteString(strconv.Quote(s))
		return
	}
	cut := maxStringSize
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	b.WriteString(strconv.Quote(s[:cut]))
	fmt.Fprintf(b, "…(%d bytes)", len(s))
}

// sensitive reports whether a field's value must not appear in logs at all.
func sensitive(fd protoreflect.FieldDescriptor) bool {
	if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDebugRedact() {
		return true
	}
	// Names catch secret-bearing fields whose proto author forgot debug_redact: a missing
	// annotation must not be enough to leak a secret into the logs.
	name := strings.ToLower(string(fd.Name()))
	for _, part := range [...]string{"secret", "password", "passphrase", "private", "token", "preshared", "credential"} {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

func enumValueRedacted(ev protoreflect.EnumValueDescriptor) bool {
	opts, ok := ev.Options().(*descriptorpb.EnumValueOptions)
	return ok && opts.GetDebugRedact()
}
