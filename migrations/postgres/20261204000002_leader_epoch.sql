-- The leader epoch in a row of its own (issue 15). A leader's writer reads
-- it FOR SHARE inside every transaction; a takeover updates it (with the
-- lease row) and so waits for those transactions, and no transaction of
-- the deposed leader commits after it. Renewals touch only `leader_lease`,
-- so they never queue behind the writer's share locks (measured: renewals
-- of the lease row itself starved behind back-to-back writer transactions
-- under load).
CREATE TABLE leader_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL CHECK (epoch >= 0)
);
INSERT INTO leader_epoch (id, epoch) SELECT 1, epoch FROM leader_lease WHERE id = 1;
