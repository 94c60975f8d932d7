package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/attestboot/attestboot/services/logging"
)

// callRecord collects what inner interceptors learn about a call (the admin principal) for the
// request log written by the outermost interceptor.
type callRecord struct{ principal string }

type recordKey struct{}

func recordFromContext(ctx context.Context) *callRecord {
	r, _ := ctx.Value(recordKey{}).(*callRecord)
	return r
}

// requestLogger writes one log record per call. Requests are summarised only at debug level and
// only through logging.Redact; metadata (where the bearer token travels) is never logged.
type requestLogger struct{ logger *slog.Logger }

func (l requestLogger) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rec := &callRecord{}
		ctx = context.WithValue(ctx, recordKey{}, rec)
		start := time.Now()
		resp, err := handler(ctx, req)
		attrs := l.attrs(ctx, info.FullMethod, start, err, rec)
		if m, ok := req.(proto.Message); ok && l.logger.Enabled(ctx, slog.LevelDebug) {
			attrs = append(attrs, slog.Any("request", logging.Message(m)))
		}
		l.logger.LogAttrs(ctx, levelFor(status.Code(err)), "grpc call", attrs...)
		return resp, err
	}
}

func (l requestLogger) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rec := &callRecord{}
		ctx := context.WithValue(ss.Context(), recordKey{}, rec)
		start := time.Now()
		err := handler(srv, &loggedStream{contextStream: contextStream{ServerStream: ss, ctx: ctx}, logger: l.logger, method: info.FullMethod})
		l.logger.LogAttrs(ctx, levelFor(status.Code(err)), "grpc stream", l.attrs(ctx, info.FullMethod, start, err, rec)...)
		return err
	}
}

func (l requestLogger) attrs(ctx context.Context, method string, start time.Time, err error, rec *callRecord) []slog.Attr {
	st := status.Convert(err)
	attrs := []slog.Attr{
		slog.String("grpc.method", method),
		slog.String("grpc.code", st.Code().String()),
		slog.Duration("duration", time.Since(start)),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if rec.principal != "" {
		attrs = append(attrs, slog.String("principal", rec.principal))
	}
	if err != nil {
		// Handlers put only a generic reason in the status (see CONVENTIONS.md); it is safe to log.
		attrs = append(attrs, slog.String("error", st.Message()))
	}
	return attrs
}

// loggedStream summarises every received message at debug level.
type loggedStream struct {
	contextStream
	logger *slog.Logger
	method string
}

func (s *loggedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && s.logger.Enabled(s.ctx, slog.LevelDebug) {
		if pm, ok := m.(proto.Message); ok {
			s.logger.LogAttrs(s.ctx, slog.LevelDebug, "grpc stream message", slog.String("grpc.method", s.method), slog.Any("request", logging.Message(pm)))
		}
	}
	return err
}

// levelFor logs server faults as errors, refusals and client mistakes as warnings.
func levelFor(c codes.Code) slog.Level {
	switch c {
	case codes.OK, codes.Canceled:
		return slog.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return slog.LevelError
	default:
		return slog.LevelWarn
	}
}

// recoverer turns a panic in a handler into codes.Internal, so one bad request cannot take down
// a server that thousands of booting nodes depend on. The stack goes to the log, not the caller.
type recoverer struct{ logger *slog.Logger }

func (r recoverer) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer r.recover(ctx, info.FullMethod, &err)
		return handler(ctx, req)
	}
}

func (r recoverer) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer r.recover(ss.Context(), info.FullMethod, &err)
		return handler(srv, ss)
	}
}

func (r recoverer) recover(ctx context.Context, method string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	r.logger.ErrorContext(ctx, "panic in gRPC handler",
		"grpc.method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	*err = status.Error(codes.Internal, "internal error")
}
