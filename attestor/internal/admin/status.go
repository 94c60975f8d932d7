package admin

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestboot/attestboot/services/inventory"
)

// invalidArgument is a request refused at the edge, before it reached the store.
type invalidArgument struct{ msg string }

func (e *invalidArgument) Error() string { return e.msg }

// invalidf returns an invalidArgument error; the message says what is wrong and is sent to
// the caller as it is.
func invalidf(format string, args ...any) error {
	return &invalidArgument{msg: fmt.Sprintf(format, args...)}
}

// toStatus is the one place where errors become gRPC codes. Store errors keep their message
// (it names the node, group or constraint involved, and no secret: this API handles none);
// anything unexpected is logged with its detail and reported as a bare Internal.
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var invalid *invalidArgument
	switch {
	case errors.As(err, &invalid):
		return status.Error(codes.InvalidArgument, invalid.msg)
	case ctx.Err() != nil:
		// The call was cancelled or timed out: whatever the store said is a consequence.
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, inventory.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, inventory.ErrConflict):
		// Every conflict this API can meet is something that exists already: an id, a MAC, an
		// EK bound to a node. The handlers make the message say what to do about it.
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, inventory.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if st, ok := status.FromError(err); ok {
		// Already a status: a failed stream Send, for instance.
		return st.Err()
	}
	method, _ := grpc.Method(ctx)
	s.log.ErrorContext(ctx, "inventory admin: internal error", "method", method, "error", err)
	return status.Error(codes.Internal, "internal error (details in the server log)")
}

// Page tokens are opaque to clients: base64 of the list they belong to, the last key of the
// previous page and a digest of the filter, so that a token is refused with another list or
// with a changed filter instead of silently returning a different result set.
type pageToken struct {
	List   string `json:"l"`
	After  string `json:"a"`
	Filter string `json:"f"`
}

// maxPageTokenLength bounds the tokens accepted: ours are well under 200 characters.
const maxPageTokenLength = 1024

// filterDigest summarises the filter fields of a list request for a page token.
func filterDigest(fields ...any) string {
	b, err := json.Marshal(fields)
	if err != nil {
		// Only strings, bools and times are passed: this cannot fail.
		panic(fmt.Sprintf("admin: filter digest: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func encodePageToken(list, after, filter string) string {
	b, _ := json.Marshal(pageToken{List: list, After: after, Filter: filter})
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the last key of the previous page ("" for the first page).
func decodePageToken(token, list, filter string) (string, error) {
	if token == "" {
		return "", nil
	}
	bad := invalidf("page_token: not a token returned by a previous %s call", list)
	if len(token) > maxPageTokenLength {
		return "", bad
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", bad
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || t.List != list || t.After == "" {
		return "", bad
	}
	if t.Filter != filter {
		return "", invalidf("page_token: the filter changed since the first page; send the same filter with every page")
	}
	return t.After, nil
}
