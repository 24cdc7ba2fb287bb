-- The leader lease (issue 15, replicas): one row naming the replica that
-- runs the supervision duties, until `expires_at` (unix micros of the
-- database server's clock, so replicas' clocks never matter). `epoch`
-- grows by one at every change of holder and never goes back. A leader's
-- writer reads the row FOR SHARE inside every transaction it commits and
-- refuses to commit once the epoch is not its own; a takeover's UPDATE
-- waits for those transactions, so nothing a deposed leader writes commits
-- after the new epoch exists. Pod-hosts refuse older epochs (STALE_EPOCH).
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    replica_id  TEXT    NOT NULL,
    epoch       BIGINT  NOT NULL CHECK (epoch >= 0),
    expires_at  BIGINT  NOT NULL,
    acquired_at BIGINT  NOT NULL
);
INSERT INTO leader_lease (id, replica_id, epoch, expires_at, acquired_at) VALUES (1, '', 0, 0, 0);

-- Every replica's last sign of life and the address it serves on
-- (GetClusterInfo; followers forward pod operations to the leader's).
CREATE TABLE replicas (
    replica_id   TEXT    PRIMARY KEY NOT NULL,
    address      TEXT    NOT NULL,
    last_seen_at BIGINT  NOT NULL
);
