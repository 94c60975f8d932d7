// Package tunnel serves the node-facing TunnelManagerService (OpenTunnel: a passed, unexpired,
// unused attestation for exactly this WireGuard key becomes a peer on the gateway) and the admin
// TunnelAdminService (close, list, gateway status). A refusal changes nothing — no peer, no
// address, no consumed attestation — and is recorded as an event with its precise reason.
package tunnel
