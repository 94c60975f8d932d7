package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/attestboot/attestboot/services/logging"
	"github.com/attestboot/attestboot/services/logging/loggingtest"
)

func TestNew(t *testing.T) {
	t.Parallel()
	t.Run("json at debug", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		logger, err := logging.New(&buf, "DEBUG", "json")
		require.NoError(t, err)
		logger.Debug("hello", "k", "v")
		var rec map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &rec))
		require.Equal(t, "hello", rec["msg"])
		require.Equal(t, "DEBUG", rec["level"])
		require.Equal(t, "v", rec["k"])
	})
	t.Run("text at warn drops info", func(t *testing.T) {
		t.Parallel()
		var buf bytes.Buffer
		logger, err := logging.New(&buf, "warn", "")
		require.NoError(t, err)
		logger.Info("quiet")
		logger.Warn("loud")
		require.NotContains(t, buf.String(), "quiet")
		require.Contains(t, buf.String(), "level=WARN msg=loud")
	})
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		_, err := logging.New(&bytes.Buffer{}, "verbose", "text")
		require.ErrorContains(t, err, `"verbose"`)
		_, err = logging.New(&bytes.Buffer{}, "info", "xml")
		require.ErrorContains(t, err, `"xml"`)
	})
}

func TestRedactDebugRedactAndBytes(t *testing.T) {
	t.Parallel()
	const marker = "S3CR3T-MARKER"
	key := []byte("KEY-MATERIAL-" + marker)
	req, err := loggingtest.NewPutRequest(loggingtest.Values{
		Name:     "x1000c0s0b0n0",
		Marker:   marker,
		Key:      key,
		Note:     "visible note",
		Labels:   map[string]string{"b": "2", "a": "1"},
		ItemsLen: 2,
	})
	require.NoError(t, err)

	got := logging.Redact(req)
	t.Log(got)
	require.NotContains(t, got, marker, "no redacted or bytes value may appear")
	require.NotContains(t, got, "KEY-MATERIAL")
	require.Equal(t,
		`{name:"x1000c0s0b0n0" value:[REDACTED] key:<26 bytes> `+
			`inner:{note:"visible note" pin:[REDACTED] blob:<18 bytes>} `+
			`items:[{note:"visible note" pin:[REDACTED] blob:<18 bytes>} {note:"visible note" pin:[REDACTED] blob:<18 bytes>}] `+
			`by_name:{"x1000c0s0b0n0":{note:"visible note" pin:[REDACTED] blob:<18 bytes>}} `+
			`kind:[REDACTED] blobs:[<19 bytes>] labels:{"a":"1" "b":"2"} hidden:[REDACTED] admin_token:[REDACTED]}`,
		got)
}

func TestRedactWellKnownAndEdgeCases(t *testing.T) {
	t.Parallel()
	require.Equal(t, "<nil>", logging.Redact(nil))
	require.Equal(t, "<nil>", logging.Redact((*wrapperspb.BytesValue)(nil)))
	require.Equal(t, "{value:<4 bytes>}", logging.Redact(wrapperspb.Bytes([]byte("abcd"))))

	s, err := structpb.NewStruct(map[string]any{"user": "alice", "n": 3, "list": []any{true, "x"}})
	require.NoError(t, err)
	got := logging.Redact(s)
	require.Equal(t,
		`{fields:{"list":{list_value:{values:[{bool_value:true} {string_value:"x"}]}} "n":{number_value:3} "user":{string_value:"alice"}}}`,
		got)

	long := strings.Repeat("é", 300)
	got = logging.Redact(wrapperspb.String(long))
	require.Contains(t, got, "…(600 bytes)")
	require.Less(t, len(got), 300)

	// Deep nesting and long lists stay bounded.
	deep := structpb.NewNullValue()
	for range 100 {
		deep = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{deep}})
	}
	require.Contains(t, logging.Redact(deep), "{…}")
	many := &structpb.ListValue{}
	for range 1000 {
		many.Values = append(many.Values, structpb.NewBoolValue(true))
	}
	require.Contains(t, logging.Redact(many), "…(+968)")
}

func TestMessageLogValuerIsLazy(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger, err := logging.New(&buf, "info", "text")
	require.NoError(t, err)
	logger.Debug("skipped", "request", logging.Message(wrapperspb.Bytes([]byte("zzz"))))
	require.Empty(t, buf.String())
	logger.Info("shown", "request", logging.Message(wrapperspb.Bytes([]byte("zzz"))))
	require.Contains(t, buf.String(), `request="{value:<3 bytes>}"`)
	var _ slog.LogValuer = logging.Message(nil)
}
