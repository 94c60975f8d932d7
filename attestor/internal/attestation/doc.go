// Package attestation serves the node-facing AttestorService: BeginAttestation issues a
// credential only the node's TPM can activate and a nonce; CompleteAttestation checks the
// activation and a quote that binds the node's WireGuard key, and records a short-lived,
// single-use attestation for tunnelmgr. Every refusal is an event with its precise reason; the
// caller learns only the status code.
package attestation
