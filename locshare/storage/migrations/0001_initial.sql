-- locshare schema, version 1.
-- Privacy rule: no table has a location column, ever.  Locations live only in the
-- server's memory for location_ttl_s seconds.

CREATE TABLE sessions (
    id                   uuid PRIMARY KEY,
    name                 varchar(100) NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    creator_secret_hash  bytea NOT NULL,
    max_participants     smallint NOT NULL CHECK (max_participants BETWEEN 2 AND 50),
    is_active            boolean NOT NULL DEFAULT true,
    ended_reason         text CHECK (ended_reason IN ('ended', 'expired', 'inactive')),
    ended_at             timestamptz,
    last_activity        timestamptz NOT NULL,
    -- Active participants, kept by the join/leave statements themselves so that a
    -- join can check capacity and take a place in one atomic UPDATE.
    participant_count    smallint NOT NULL DEFAULT 0 CHECK (participant_count >= 0),
    CHECK (is_active = (ended_reason IS NULL))
);

CREATE INDEX sessions_active_expires_at ON sessions (expires_at) WHERE is_active;
CREATE INDEX sessions_active_last_activity ON sessions (last_activity) WHERE is_active;
CREATE INDEX sessions_ended_at ON sessions (ended_at) WHERE NOT is_active;

CREATE TABLE participants (
    id            uuid PRIMARY KEY,
    session_id    uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    display_name  varchar(100) NOT NULL,
    avatar_color  char(7) NOT NULL CHECK (avatar_color ~ '^#[0-9A-F]{6}$'),
    joined_at     timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    is_active     boolean NOT NULL DEFAULT true,
    left_reason   text CHECK (left_reason IN ('left', 'removed')),
    CHECK (is_active = (left_reason IS NULL))
);

CREATE INDEX participants_session_id ON participants (session_id);
