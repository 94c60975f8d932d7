// Package admin is the admin API of the inventory: the InventoryService gRPC handlers through
// which operators manage nodes, groups, PCR policies and EK enrollments, and read or follow the
// event log. The attestor serves it behind grpcserver's admin authorization.
//
// Requests are validated here, at the edge, before they reach the store; store errors become
// gRPC codes in one place (status.go). Every change that matters for security (an enrollment
// made or removed, a node disabled, enabled or deleted, trust on first use or a PCR policy
// changed, membership of a group changed) is written to the event log in the same transaction
// as the change, with the admin who made it.
package admin
