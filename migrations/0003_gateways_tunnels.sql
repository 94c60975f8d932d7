-- WireGuard gateways and the tunnels opened through them. The one-open-address-per-gateway and
-- one-open-key-per-gateway rules are partial unique indexes, so two tunnelmgr replicas racing
-- for an address cannot both win.

-- +goose Up
CREATE TABLE gateways (
    name              text PRIMARY KEY
                      CONSTRAINT gateways_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    public_key        bytea NOT NULL
                      CONSTRAINT gateways_public_key_length CHECK (octet_length(public_key) = 32),
    -- host:port or [ipv6]:port that nodes dial.
    endpoint          text NOT NULL
                      CONSTRAINT gateways_endpoint_format
                      CHECK (endpoint ~ '^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):[0-9]{1,5}$'),
    -- Node tunnel addresses are allocated from these pools.
    ipv4_pool         cidr CONSTRAINT gateways_ipv4_pool_family CHECK (family(ipv4_pool) = 4),
    ipv6_pool         cidr CONSTRAINT gateways_ipv6_pool_family CHECK (family(ipv6_pool) = 6),
    -- The gateway's own tunnel addresses (the metadata service listens there).
    address_v4        inet CONSTRAINT gateways_address_v4_family CHECK (family(address_v4) = 4),
    address_v6        inet CONSTRAINT gateways_address_v6_family CHECK (family(address_v6) = 6),
    metadata_url      text NOT NULL DEFAULT '',
    keepalive_seconds integer NOT NULL DEFAULT 25
                      CONSTRAINT gateways_keepalive_range CHECK (keepalive_seconds BETWEEN 0 AND 65535),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz,
    CONSTRAINT gateways_pool_required CHECK (ipv4_pool IS NOT NULL OR ipv6_pool IS NOT NULL)
);

CREATE TABLE tunnels (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- No cascade: a gateway that still has tunnels cannot be deleted.
    gateway              text NOT NULL REFERENCES gateways (name),
    node_id              text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    -- UNIQUE: one attestation opens at most one tunnel.
    attestation_id       uuid NOT NULL UNIQUE REFERENCES attestations (id),
    wireguard_public_key bytea NOT NULL
                         CONSTRAINT tunnels_wireguard_public_key_length CHECK (octet_length(wireguard_public_key) = 32),
    -- Host addresses only (/32, /128): inet compares the mask too, so 10.0.0.5/24 and
    -- 10.0.0.5/32 would otherwise slip past the unique indexes below.
    address_v4           inet
                         CONSTRAINT tunnels_address_v4_host CHECK (family(address_v4) = 4 AND masklen(address_v4) = 32),
    address_v6           inet
                         CONSTRAINT tunnels_address_v6_host CHECK (family(address_v6) = 6 AND masklen(address_v6) = 128),
    state                text NOT NULL DEFAULT 'open'
                         CONSTRAINT tunnels_state_valid CHECK (state IN ('open', 'closed', 'expired', 'failed')),
    opened_at            timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    closed_at            timestamptz,
    close_reason         text,
    phoned_home_at       timestamptz,
    CONSTRAINT tunnels_expiry_after_open CHECK (expires_at > opened_at),
    CONSTRAINT tunnels_closed_unless_open CHECK ((state = 'open') = (closed_at IS NULL)),
    CONSTRAINT tunnels_address_required CHECK (address_v4 IS NOT NULL OR address_v6 IS NOT NULL)
);

CREATE UNIQUE INDEX tunnels_open_address_v4 ON tunnels (gateway, address_v4) WHERE state = 'open';
CREATE UNIQUE INDEX tunnels_open_address_v6 ON tunnels (gateway, address_v6) WHERE state = 'open';
CREATE UNIQUE INDEX tunnels_open_wireguard_public_key ON tunnels (gateway, wireguard_public_key) WHERE state = 'open';
CREATE INDEX tunnels_gateway_state_expiry ON tunnels (gateway, state, expires_at);
CREATE INDEX tunnels_node ON tunnels (node_id);

-- Wakes the tunnelmgr reconciler of the gateway concerned. Correctness never depends on it: the
-- reconcilers also poll. Notifications with the same payload in one transaction are merged by
-- Postgres, so a batch costs one wake-up per gateway.
-- +goose StatementBegin
CREATE FUNCTION tunnels_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('attestboot_tunnels', NEW.gateway);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('attestboot_tunnels', NEW.gateway);
        IF OLD.gateway <> NEW.gateway THEN
            PERFORM pg_notify('attestboot_tunnels', OLD.gateway);
        END IF;
    ELSE
        PERFORM pg_notify('attestboot_tunnels', OLD.gateway);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER tunnels_notify
    AFTER INSERT OR UPDATE OR DELETE ON tunnels
    FOR EACH ROW EXECUTE FUNCTION tunnels_notify();

-- +goose Down
DROP TABLE tunnels;
DROP FUNCTION tunnels_notify();
DROP TABLE gateways;
