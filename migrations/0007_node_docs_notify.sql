-- Tells metadata replicas that something node documents are made of changed (node facts,
-- groups and memberships, cloud-init data, secrets), so that each replica can keep its reads of
-- them while nothing changes and drop them at once when something does, whichever replica or
-- tool made the change. The payload is empty: a replica drops everything. One notification per
-- statement; Postgres merges identical ones within a transaction. A node's last_boot_at and
-- other columns outside its documents change at every boot and do not notify.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION node_docs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('attestboot_node_docs', '');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER nodes_docs_notify AFTER UPDATE OF id, hostname, mac OR DELETE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION node_docs_notify();
CREATE TRIGGER groups_docs_notify AFTER INSERT OR UPDATE OR DELETE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION node_docs_notify();
CREATE TRIGGER group_members_docs_notify AFTER INSERT OR UPDATE OR DELETE ON group_members
    FOR EACH STATEMENT EXECUTE FUNCTION node_docs_notify();
CREATE TRIGGER cloud_init_data_docs_notify AFTER INSERT OR UPDATE OR DELETE ON cloud_init_data
    FOR EACH STATEMENT EXECUTE FUNCTION node_docs_notify();
CREATE TRIGGER secrets_docs_notify AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION node_docs_notify();

-- +goose Down
DROP TRIGGER secrets_docs_notify ON secrets;
DROP TRIGGER cloud_init_data_docs_notify ON cloud_init_data;
DROP TRIGGER group_members_docs_notify ON group_members;
DROP TRIGGER groups_docs_notify ON groups;
DROP TRIGGER nodes_docs_notify ON nodes;
DROP FUNCTION node_docs_notify();
