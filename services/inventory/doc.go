// Package inventory is the Postgres inventory shared by the attestboot services: the migration
// runner for the embedded schema, and a pgx/v5 store with one file per aggregate (nodes, groups,
// enrollments, events, ...).
//
// Every store method is on [Queries], which runs either directly on the pool (through the
// [Store], which embeds it) or inside a transaction opened by [Store.InTx], so a multi-step
// change composes the same methods a single step uses. Database errors come back wrapped in
// [ErrNotFound], [ErrConflict] or [ErrInvalid] for errors.Is, with the violated constraint
// named in the message; times come back in UTC.
//
// Invariants the schema can hold (one open tunnel address per gateway, single-use sessions and
// attestations, immutable EK bindings, the append-only event log) are constraints and triggers
// in the migrations, not checks in Go.
//
// Services wake each other with LISTEN/NOTIFY ([Queries.Notify], [Listener]) and never depend
// on it for correctness.
package inventory
