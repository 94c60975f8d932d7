// Package logging builds the slog loggers of the attestboot services and renders protobuf messages
// for logs with every secret redacted, so request logging can never leak key or secret material.
package logging
