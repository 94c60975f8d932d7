-- The append-only event log: every boot step and every refusal, by every service.

-- +goose Up
CREATE TABLE events (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- No foreign key: events outlive their nodes and record refusals for ids that do not exist.
    node_id text,
    kind    text NOT NULL CONSTRAINT events_kind_nonempty CHECK (kind <> ''),
    service text NOT NULL CONSTRAINT events_service_nonempty CHECK (service <> ''),
    reason  text NOT NULL DEFAULT '',
    detail  jsonb NOT NULL DEFAULT '{}'
            CONSTRAINT events_detail_object CHECK (jsonb_typeof(detail) = 'object')
);

CREATE INDEX events_node ON events (node_id, id);
CREATE INDEX events_kind ON events (kind, id);
CREATE INDEX events_at ON events (at);

-- +goose StatementBegin
CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              TABLE = 'events',
              CONSTRAINT = 'events_append_only';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- Followers (the admin API's event stream) wake up on this and read from their last id; a
-- missed notification only delays them until their next poll.
-- +goose StatementBegin
CREATE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('attestboot_events', NEW.id::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_notify();

-- +goose Down
DROP TABLE events;
DROP FUNCTION events_notify();
DROP FUNCTION events_append_only();
