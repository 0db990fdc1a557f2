-- Every write of an application or an event type notifies the channel hookline_changes
-- (payload: the table's name) when it commits, whichever process or tool made it: each
-- hookline process drops its in-memory lookups of that table then. One notice per
-- statement, sent at commit, and only for these rarely written tables.

CREATE FUNCTION hookline_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookline_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER applications_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON applications
    FOR EACH STATEMENT EXECUTE FUNCTION hookline_notify_change();

CREATE TRIGGER event_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_types
    FOR EACH STATEMENT EXECUTE FUNCTION hookline_notify_change();
