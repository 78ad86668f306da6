"""Named, ordered schema migrations (sqlite-utils style).

Each migration runs in the same transaction as the row that records it, so a crash leaves either
both or neither. Migrations only ever move forward; a database newer than this code is refused.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value BLOB NOT NULL
        );

        -- The append-only hash chain; every state change below is also an event here.
        CREATE TABLE events (
            seq     INTEGER PRIMARY KEY,   -- 1, 2, 3, … with no gaps
            ts      INTEGER NOT NULL,      -- Unix milliseconds
            kind    TEXT NOT NULL,
            subject TEXT NOT NULL,         -- packet id, node id, … ('' when none)
            data    BLOB NOT NULL,         -- canonical CBOR map
            prev    BLOB NOT NULL,         -- hash of entry seq-1 (32 zero bytes for the first)
            hash    BLOB NOT NULL
        );
        CREATE INDEX events_kind ON events (kind, seq);
        CREATE INDEX events_subject ON events (subject, seq);

        CREATE TABLE packets (
            id          BLOB PRIMARY KEY,
            created_at  INTEGER NOT NULL,  -- hybrid logical clock from the header
            topic       TEXT NOT NULL,
            kind        TEXT NOT NULL,
            author      TEXT NOT NULL,
            header      BLOB NOT NULL,
            signature   BLOB NOT NULL,
            body        BLOB NOT NULL,
            source      TEXT NOT NULL,     -- 'local' or the node id it was received from
            received_at INTEGER NOT NULL,
            quarantined INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        -- The reconciliation order (DESIGN §6): (timestamp, id).
        CREATE INDEX packets_order ON packets (created_at, id);
        CREATE INDEX packets_topic ON packets (topic, created_at);

        CREATE TABLE peers (
            id           TEXT PRIMARY KEY,
            tier         TEXT NOT NULL,
            name         TEXT NOT NULL DEFAULT '',
            endpoints    TEXT NOT NULL DEFAULT '[]',   -- JSON list of ws:// URLs
            manifest     BLOB,
            manifest_seq INTEGER,
            first_seen   INTEGER NOT NULL,
            last_seen    INTEGER,
            strikes      INTEGER NOT NULL DEFAULT 0
        );

        CREATE TABLE checkpoints (
            size       INTEGER PRIMARY KEY,
            root       BLOB NOT NULL,
            note       TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        """,
    ),
    (
        "0002_endpoints",
        """
        -- Addresses to dial (federation add-peer, discovery); peer_id is learnt at first contact.
        CREATE TABLE endpoints (
            url      TEXT PRIMARY KEY,
            peer_id  TEXT,
            source   TEXT NOT NULL,      -- 'operator', 'mdns', 'beacon', 'manifest'
            added_at INTEGER NOT NULL
        );
        CREATE INDEX packets_source ON packets (source, created_at, id);
        """,
    ),
    (
        "0003_witnesses",
        """
        -- Witness state (DESIGN §10): every checkpoint of a peer's log we cosigned, by origin.
        -- The largest size is the state the tlog-witness rule checks against; the rest let us
        -- prove a fork when the log signs another root for a size we cosigned.
        CREATE TABLE witnessed (
            origin TEXT NOT NULL,
            size   INTEGER NOT NULL,
            root   BLOB NOT NULL,
            note   TEXT NOT NULL,     -- the log's signed note with our cosignature
            at     INTEGER NOT NULL,
            PRIMARY KEY (origin, size)
        );
        -- Cosignatures our witnesses made on our own checkpoints (ledger witnesses, ledger verify).
        CREATE TABLE cosignatures (
            witness     TEXT NOT NULL,   -- the witness's node id
            size        INTEGER NOT NULL,
            root        BLOB NOT NULL,
            timestamp   INTEGER NOT NULL,  -- the cosignature's own POSIX time
            note        TEXT NOT NULL,     -- our signed note with the witness's cosignature
            received_at INTEGER NOT NULL,
            PRIMARY KEY (witness, size)
        );
        """,
    ),
    (
        "0004_packet_rows",
        """
        -- Packets in a rowid table keyed by an integer, the 32-byte id in a unique index (issue 16):
        -- an insert appends to the table's B-tree instead of splitting pages at a random key, and
        -- a row no longer carries a large body (NULL: the body is in a file, store/bodies.py).
        -- Bodies already in rows stay there; only new large ones go to files.
        --
        -- SQLite built with SECURE_DELETE (Debian's) zeroes every page DROP TABLE frees, which
        -- writes the whole old table to the WAL again (100k 1 KiB packets: 9.9 s and a 698 MB
        -- WAL; 3.4 s and 228 MB with FAST). The rows live on in the new table: zeroing the old
        -- pages protects nothing, so FAST zeroes only where it costs no I/O.
        PRAGMA secure_delete = FAST;
        CREATE TABLE packets_0004 (
            n           INTEGER PRIMARY KEY,
            id          BLOB NOT NULL UNIQUE,
            created_at  INTEGER NOT NULL,  -- hybrid logical clock from the header
            topic       TEXT NOT NULL,
            kind        TEXT NOT NULL,
            author      TEXT NOT NULL,
            header      BLOB NOT NULL,
            signature   BLOB NOT NULL,
            body        BLOB,              -- NULL: in <ledger>-bodies/<2 hex>/<64 hex id>
            source      TEXT NOT NULL,     -- 'local' or the node id it was received from
            received_at INTEGER NOT NULL,
            quarantined INTEGER NOT NULL DEFAULT 0
        );
        -- One statement: SQLite copies the rows in the old table's order, with no row in Python.
        INSERT INTO packets_0004 (id, created_at, topic, kind, author, header, signature, body,
                                  source, received_at, quarantined)
            SELECT id, created_at, topic, kind, author, header, signature, body,
                   source, received_at, quarantined FROM packets;
        DROP TABLE packets;
        ALTER TABLE packets_0004 RENAME TO packets;
        -- The reconciliation order (DESIGN §6): (timestamp, id).
        CREATE INDEX packets_order ON packets (created_at, id);
        CREATE INDEX packets_topic ON packets (topic, created_at);
        CREATE INDEX packets_source ON packets (source, created_at, id);
        -- Listings of one kind (alerts in `status`, models), newest first, without a scan.
        CREATE INDEX packets_kind ON packets (kind, created_at, id);

        -- Counts without a scan (`status`, `federation status`): one row. Store.put_packets adds
        -- each batch it inserts in one statement (a per-row insert trigger cost ~10 µs of the
        -- writer's CPU per packet, issue 16); deletes and quarantine changes, rare, by triggers.
        -- `ledger verify` checks the counts against the rows.
        CREATE TABLE packet_counts (
            one         INTEGER PRIMARY KEY CHECK (one = 0),
            total       INTEGER NOT NULL,
            quarantined INTEGER NOT NULL
        );
        INSERT INTO packet_counts (one, total, quarantined)
            SELECT 0, count(*), count(*) FILTER (WHERE quarantined != 0) FROM packets;
        CREATE TRIGGER packets_counted_delete AFTER DELETE ON packets BEGIN
            UPDATE packet_counts SET total = total - 1, quarantined = quarantined - (OLD.quarantined != 0)
                WHERE one = 0;
        END;
        CREATE TRIGGER packets_counted_update AFTER UPDATE OF quarantined ON packets BEGIN
            UPDATE packet_counts
                SET quarantined = quarantined - (OLD.quarantined != 0) + (NEW.quarantined != 0)
                WHERE one = 0;
        END;
        """,
    ),
    (
        "0005_events_subject_partial",
        """
        -- Events by subject, less the one every stored packet writes (issue 16). A packet.stored
        -- event's subject is the packet's id, random, so each of its entries went to a random leaf
        -- of this index and each write transaction wrote most of the index's leaves to the WAL
        -- again: the largest share of the pages a 1 KiB-packet sync wrote, growing with the
        -- ledger. Nothing looks up packet.stored events by subject (the packets table has the
        -- ids); the store's lookups by subject name another kind and repeat this condition
        -- (store.SUBJECT_INDEXED), which is how SQLite knows the index holds the rows they want.
        PRAGMA secure_delete = FAST;  -- as in 0004: the dropped index's pages need no zeroing
        DROP INDEX events_subject;
        CREATE INDEX events_subject ON events (subject, seq) WHERE kind <> 'packet.stored';
        """,
    ),
]
