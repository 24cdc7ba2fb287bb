-- The event tailer's wake-up (central-manager/src/store/postgres/tailer.rs):
-- every transaction that appends events notifies channel `ipa_events` at its
-- commit, with the head position it committed as the payload, so every
-- replica's tailer fetches what another replica wrote without waiting for
-- its fallback poll.
--
-- A deferred constraint trigger fires at commit, after every update of the
-- head in the transaction, and reads the head's final value: all its firings
-- of one transaction carry the same payload, which PostgreSQL folds into one
-- notification. A savepoint rolled back takes its firings with it; a
-- transaction rolled back notifies nothing. NOTIFY is delivered only after
-- the commit and in commit order.
CREATE FUNCTION notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ipa_events', (SELECT position FROM event_log_head WHERE id = 1)::text);
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER event_log_head_notify AFTER UPDATE ON event_log_head
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION notify_events();
