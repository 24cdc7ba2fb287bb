-- The leader lease (issue 15, replicas): one row naming the replica that
-- runs the supervision duties, until `expires_at` (unix micros, the
-- database's clock). `epoch` grows by one at every change of holder and
-- never goes back: the writer of a leader refuses to commit once the row's
-- epoch is not its own, and pod-hosts refuse commands from an older epoch
-- (STALE_EPOCH). SQLite serves one central-manager per file, which takes
-- the lease at start; the row still gives every start a new epoch.
CREATE TABLE leader_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    replica_id  TEXT    NOT NULL,
    epoch       INTEGER NOT NULL CHECK (epoch >= 0),
    expires_at  INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL
);
INSERT INTO leader_lease (id, replica_id, epoch, expires_at, acquired_at) VALUES (1, '', 0, 0, 0);

-- Every replica's last sign of life and the address it serves on
-- (GetClusterInfo; followers forward pod operations to the leader's).
CREATE TABLE replicas (
    replica_id   TEXT    PRIMARY KEY NOT NULL,
    address      TEXT    NOT NULL,
    last_seen_at INTEGER NOT NULL
);
