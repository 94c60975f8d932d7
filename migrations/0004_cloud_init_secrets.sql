-- What the metadata service serves: cloud-init documents and encrypted secrets, each scoped to
-- the cluster defaults (no group, no node), one group, or one node; and the SSH host keys nodes
-- report when they phone home.

-- +goose Up
CREATE TABLE cloud_init_data (
    id             bigserial PRIMARY KEY,
    group_name     text UNIQUE REFERENCES groups (name) ON DELETE CASCADE,
    node_id        text UNIQUE REFERENCES nodes (id) ON DELETE CASCADE,
    meta_data      jsonb NOT NULL DEFAULT '{}'
                   CONSTRAINT cloud_init_data_meta_data_object CHECK (jsonb_typeof(meta_data) = 'object'),
    user_data      text NOT NULL DEFAULT '',
    vendor_data    text NOT NULL DEFAULT '',
    network_config text NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cloud_init_data_one_scope CHECK (group_name IS NULL OR node_id IS NULL)
);

-- At most one cluster-defaults row.
CREATE UNIQUE INDEX cloud_init_data_defaults ON cloud_init_data ((true))
    WHERE group_name IS NULL AND node_id IS NULL;

CREATE TABLE secrets (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL
                     CONSTRAINT secrets_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    group_name       text REFERENCES groups (name) ON DELETE CASCADE,
    node_id          text REFERENCES nodes (id) ON DELETE CASCADE,
    -- AEAD ciphertext of the value, its nonce and the id of the key that sealed it; the key
    -- itself never reaches the database.
    ciphertext       bytea NOT NULL,
    nonce            bytea NOT NULL,
    key_id           text NOT NULL,
    -- Served only until the node has phoned home during the current boot.
    until_phone_home boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT secrets_one_scope CHECK (group_name IS NULL OR node_id IS NULL)
);

-- A name is unique within its scope.
CREATE UNIQUE INDEX secrets_defaults_name ON secrets (name) WHERE group_name IS NULL AND node_id IS NULL;
CREATE UNIQUE INDEX secrets_group_name ON secrets (group_name, name) WHERE group_name IS NOT NULL;
CREATE UNIQUE INDEX secrets_node_name ON secrets (node_id, name) WHERE node_id IS NOT NULL;

CREATE TABLE ssh_host_keys (
    node_id     text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    key_type    text NOT NULL CONSTRAINT ssh_host_keys_key_type_format CHECK (key_type ~ '^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$'),
    public_key  text NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, key_type)
);

-- +goose Down
DROP TABLE ssh_host_keys;
DROP TABLE secrets;
DROP TABLE cloud_init_data;
