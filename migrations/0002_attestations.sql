-- Attestation sessions (BeginAttestation) and the attestations they produce
-- (CompleteAttestation). Both are single-use, and the schema enforces it.

-- +goose Up
CREATE TABLE attestation_sessions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    node_id              text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    ek_sha256            bytea NOT NULL
                         CONSTRAINT attestation_sessions_ek_sha256_length CHECK (octet_length(ek_sha256) = 32),
    ak_public            bytea NOT NULL, -- TPMT_PUBLIC of the AK
    ak_sha256            bytea NOT NULL
                         CONSTRAINT attestation_sessions_ak_sha256_length CHECK (octet_length(ak_sha256) = 32),
    wireguard_public_key bytea NOT NULL
                         CONSTRAINT attestation_sessions_wireguard_public_key_length CHECK (octet_length(wireguard_public_key) = 32),
    nonce                bytea NOT NULL
                         CONSTRAINT attestation_sessions_nonce_length CHECK (octet_length(nonce) = 32),
    -- Only a hash of the credential secret is kept: a database reader cannot complete a session.
    secret_sha256        bytea NOT NULL
                         CONSTRAINT attestation_sessions_secret_sha256_length CHECK (octet_length(secret_sha256) = 32),
    state                text NOT NULL DEFAULT 'pending'
                         CONSTRAINT attestation_sessions_state_valid
                         CHECK (state IN ('pending', 'consumed', 'superseded', 'expired')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    CONSTRAINT attestation_sessions_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT attestation_sessions_ended_unless_pending CHECK ((state = 'pending') = (ended_at IS NULL))
);

-- A TPM has at most one session in flight: a new BeginAttestation must supersede the old one.
CREATE UNIQUE INDEX attestation_sessions_one_pending_per_ek
    ON attestation_sessions (ek_sha256) WHERE state = 'pending';
CREATE INDEX attestation_sessions_pending_expiry
    ON attestation_sessions (expires_at) WHERE state = 'pending';
CREATE INDEX attestation_sessions_node ON attestation_sessions (node_id);

-- Single use: a session leaves 'pending' exactly once and never changes afterwards.
-- +goose StatementBegin
CREATE FUNCTION attestation_sessions_single_use() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'attestation session % has already ended (%)', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation',
                  TABLE = 'attestation_sessions',
                  CONSTRAINT = 'attestation_sessions_single_use';
    END IF;
    IF (NEW.id, NEW.node_id, NEW.ek_sha256, NEW.ak_public, NEW.ak_sha256, NEW.wireguard_public_key,
        NEW.nonce, NEW.secret_sha256, NEW.created_at, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.id, OLD.node_id, OLD.ek_sha256, OLD.ak_public, OLD.ak_sha256, OLD.wireguard_public_key,
        OLD.nonce, OLD.secret_sha256, OLD.created_at, OLD.expires_at) THEN
        RAISE EXCEPTION 'attestation session % is immutable except for its state', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  TABLE = 'attestation_sessions',
                  CONSTRAINT = 'attestation_sessions_single_use';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER attestation_sessions_single_use
    BEFORE UPDATE ON attestation_sessions
    FOR EACH ROW EXECUTE FUNCTION attestation_sessions_single_use();

-- A passed attestation: bound to node, EK, AK and WireGuard key, short-lived and single-use.
CREATE TABLE attestations (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- No cascade: retention deletes tunnels, then attestations, then sessions.
    session_id           uuid NOT NULL UNIQUE REFERENCES attestation_sessions (id),
    node_id              text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    ek_sha256            bytea NOT NULL
                         CONSTRAINT attestations_ek_sha256_length CHECK (octet_length(ek_sha256) = 32),
    ak_sha256            bytea NOT NULL
                         CONSTRAINT attestations_ak_sha256_length CHECK (octet_length(ak_sha256) = 32),
    wireguard_public_key bytea NOT NULL
                         CONSTRAINT attestations_wireguard_public_key_length CHECK (octet_length(wireguard_public_key) = 32),
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    consumed_at          timestamptz,
    CONSTRAINT attestations_expiry_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX attestations_node ON attestations (node_id);

-- Single use: consumed_at goes from NULL to a time once; nothing else ever changes.
-- +goose StatementBegin
CREATE FUNCTION attestations_single_use() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.consumed_at IS NOT NULL THEN
        RAISE EXCEPTION 'attestation % has already been consumed', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  TABLE = 'attestations',
                  CONSTRAINT = 'attestations_single_use';
    END IF;
    IF (NEW.id, NEW.session_id, NEW.node_id, NEW.ek_sha256, NEW.ak_sha256, NEW.wireguard_public_key,
        NEW.created_at, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.id, OLD.session_id, OLD.node_id, OLD.ek_sha256, OLD.ak_sha256, OLD.wireguard_public_key,
        OLD.created_at, OLD.expires_at) THEN
        RAISE EXCEPTION 'attestation % is immutable except for consumed_at', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  TABLE = 'attestations',
                  CONSTRAINT = 'attestations_single_use';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER attestations_single_use
    BEFORE UPDATE ON attestations
    FOR EACH ROW EXECUTE FUNCTION attestations_single_use();

-- +goose Down
DROP TABLE attestations;
DROP FUNCTION attestations_single_use();
DROP TABLE attestation_sessions;
DROP FUNCTION attestation_sessions_single_use();
