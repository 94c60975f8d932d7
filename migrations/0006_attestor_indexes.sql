-- Indexes for the attestor's rate limits, which count recent sessions per node and per EK
-- across every replica.

-- +goose Up
CREATE INDEX attestation_sessions_node_recent ON attestation_sessions (node_id, created_at);
CREATE INDEX attestation_sessions_ek_recent ON attestation_sessions (ek_sha256, created_at);
DROP INDEX attestation_sessions_node;

-- +goose Down
CREATE INDEX attestation_sessions_node ON attestation_sessions (node_id);
DROP INDEX attestation_sessions_ek_recent;
DROP INDEX attestation_sessions_node_recent;
