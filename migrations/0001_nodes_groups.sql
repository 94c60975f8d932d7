-- Nodes, groups, group membership, per-group PCR policies and EK enrollments: who may boot,
-- and with which TPM.

-- +goose Up
CREATE TABLE nodes (
    id           text PRIMARY KEY
                 CONSTRAINT nodes_id_format CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    mac          macaddr UNIQUE,
    -- RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
    hostname     text
                 CONSTRAINT nodes_hostname_format CHECK (
                     length(hostname) <= 253
                     AND hostname ~ '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$'
                 ),
    enabled      boolean NOT NULL DEFAULT true,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_boot_at timestamptz
);

CREATE TABLE groups (
    name               text PRIMARY KEY
                       CONSTRAINT groups_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    priority           integer NOT NULL DEFAULT 0,
    description        text NOT NULL DEFAULT '',
    -- Trust on first use is never implied: an operator opts a group in explicitly.
    trust_on_first_use boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    node_id    text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, node_id)
);

-- The primary key serves lookups by group; this one serves "groups of a node".
CREATE INDEX group_members_node ON group_members (node_id);

-- How operators pin the boot image: a quote must show these SHA-256 PCR values.
CREATE TABLE group_pcr_policies (
    group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    pcr        smallint NOT NULL CONSTRAINT group_pcr_policies_pcr_range CHECK (pcr BETWEEN 0 AND 23),
    sha256     bytea NOT NULL CONSTRAINT group_pcr_policies_sha256_length CHECK (octet_length(sha256) = 32),
    PRIMARY KEY (group_name, pcr)
);

-- One EK per node and one node per EK.
CREATE TABLE ek_enrollments (
    node_id        text PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    -- SHA-256 of the PKIX (DER) encoding of the EK public key.
    ek_sha256      bytea NOT NULL UNIQUE
                   CONSTRAINT ek_enrollments_ek_sha256_length CHECK (octet_length(ek_sha256) = 32),
    ek_certificate bytea, -- DER
    ek_public      bytea, -- PKIX DER
    source         text NOT NULL
                   CONSTRAINT ek_enrollments_source_valid CHECK (source IN ('admin', 'ca', 'tofu')),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The node <-> EK binding can only change through DELETE + INSERT, which leaves a visible trail
-- (the store logs both as events) instead of a silent rewrite.
-- +goose StatementBegin
CREATE FUNCTION ek_enrollments_binding_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ek_sha256 IS DISTINCT FROM OLD.ek_sha256 OR NEW.node_id IS DISTINCT FROM OLD.node_id THEN
        RAISE EXCEPTION 'the EK binding of node % is immutable: delete the enrollment and enroll again', OLD.node_id
            USING ERRCODE = 'integrity_constraint_violation',
                  TABLE = 'ek_enrollments',
                  CONSTRAINT = 'ek_enrollments_binding_immutable';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER ek_enrollments_binding_immutable
    BEFORE UPDATE ON ek_enrollments
    FOR EACH ROW EXECUTE FUNCTION ek_enrollments_binding_immutable();

-- +goose Down
DROP TABLE ek_enrollments;
DROP FUNCTION ek_enrollments_binding_immutable();
DROP TABLE group_pcr_policies;
DROP TABLE group_members;
DROP TABLE groups;
DROP TABLE nodes;
