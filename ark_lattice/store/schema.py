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
]
