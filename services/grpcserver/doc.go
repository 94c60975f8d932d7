// Package grpcserver is the gRPC server every attestboot service runs: TLS from the development
// PKI or operator files, admin authorization (client certificate or bearer token) for every
// method not declared node-facing, request logging with secrets redacted, panic recovery,
// Prometheus metrics, the health and reflection services, and graceful shutdown through a context.
//
// Authorization fails closed. A method is node-facing (server TLS is enough, since a node's
// identity is proven by its TPM inside the RPCs) only if Config.NodeFacing names it or its
// service, or it belongs to grpc.health.v1.Health; everything else, including reflection and any
// service added later and forgotten, is admin-only. An admin call needs either a client
// certificate verified against the configured CA whose common name or URI SAN is in
// Config.AdminIdentities, or `authorization: Bearer <token>` equal to the admin token (compared
// in constant time). Refusals:
//
//   - no credential, or a wrong, malformed or unexpected bearer token: codes.Unauthenticated
//     (the caller did not authenticate);
//   - a verified client certificate whose identity is not an admin: codes.PermissionDenied (the
//     caller is known, but not allowed);
//   - a client certificate from another CA never gets that far: the TLS handshake fails.
package grpcserver
