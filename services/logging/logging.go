package logging

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Formats accepted by New.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Config is the logging part of a service configuration.
type Config struct {
	// Level is debug, info, warn or error. Empty means info.
	Level string
	// Format is text or json. Empty means text.
	Format string
}

// RegisterFlags registers -log-level and -log-format, with the current values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Level, "log-level", c.Level, "log level: debug, info, warn or error (debug logs request summaries, secrets redacted)")
	fs.StringVar(&c.Format, "log-format", c.Format, "log format: text or json")
}

// New returns a logger writing to w at the given level in the given format. It returns an error
// for an unknown level or format rather than guessing, so a typo in a deployment is noticed at
// start-up instead of silently logging at the wrong level.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "", FormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("logging: unknown log format %q (want %s or %s)", format, FormatText, FormatJSON)
	}
}

// ParseLevel parses debug, info, warn (or warning) and error, case-insensitively; empty is info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errors.New("logging: unknown log level " + fmt.Sprintf("%q", s) + " (want debug, info, warn or error)")
}
