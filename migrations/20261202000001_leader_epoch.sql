-- The leader epoch in a row of its own (issue 15). A leader's writer reads
-- it inside every transaction (PostgreSQL: FOR SHARE); a takeover updates
-- it (with the lease row) and so waits for those transactions. Renewals
-- touch only `leader_lease`, so they never queue behind the writer.
CREATE TABLE leader_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL CHECK (epoch >= 0)
);
INSERT INTO leader_epoch (id, epoch) SELECT 1, epoch FROM leader_lease WHERE id = 1;
