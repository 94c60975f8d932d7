-- Notify only what a listener acts on. A transaction that notifies wakes every session of the
-- database that listens, on whatever channel (Postgres signals them all, and each reads the
-- notification queue in a transaction of its own): with the attestor, tunnelmgr and metadata
-- listening, each such commit cost three wake-ups, more with replicas. During a boot storm
-- nearly every commit appended an event or touched a tunnel.
--
-- Events no longer notify. Their only listener was WatchEvents, which holds every event back
-- two seconds (late commits) and so gained nothing from being woken at once; it polls.
--
-- Tunnels notify only when a reconciler has something to do: a tunnel opened, closed, expired
-- or deleted, or its gateway, key, addresses or expiry changed; not a phone-home's time stamp
-- (UPDATE OF fires when a listed column is assigned, changed or not).

-- +goose Up
DROP TRIGGER events_notify ON events;
DROP FUNCTION events_notify();

DROP TRIGGER tunnels_notify ON tunnels;
CREATE TRIGGER tunnels_notify
    AFTER INSERT OR DELETE OR UPDATE OF gateway, wireguard_public_key, address_v4, address_v6, state, expires_at
    ON tunnels
    FOR EACH ROW EXECUTE FUNCTION tunnels_notify();

-- +goose Down
DROP TRIGGER tunnels_notify ON tunnels;
CREATE TRIGGER tunnels_notify
    AFTER INSERT OR UPDATE OR DELETE ON tunnels
    FOR EACH ROW EXECUTE FUNCTION tunnels_notify();

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
