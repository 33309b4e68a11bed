-- Places and the convoy's route (issue 14).
--
-- Privacy: these are session data, like names: shapes that participants add to the
-- session on purpose (a meeting point, a hazard, the route the creator uploads), deleted
-- with their session by the retention purge and rewritten out of the table files with
-- it.  A person's position is never stored: it lives in the server's memory for
-- location_ttl_s only.

CREATE TABLE places (
    id          uuid PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name        varchar(60) NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('meet', 'poi', 'hazard', 'parking', 'fuel', 'food')),
    -- NULL: added by the session's creator over REST.
    author      uuid,
    -- GeoJSON Point or Polygon, as validated by locshare.geo.parse_place.
    geometry    jsonb NOT NULL,
    radius_m    real CHECK (radius_m IS NULL OR radius_m BETWEEN 10 AND 2000),
    created_at  timestamptz NOT NULL
);

CREATE INDEX places_session_id ON places (session_id, created_at);

CREATE TABLE routes (
    session_id   uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    -- The full GeoJSON LineString (up to 20,000 points), as validated.
    geometry     jsonb NOT NULL,
    off_route_m  real NOT NULL CHECK (off_route_m BETWEEN 10 AND 10000),
    updated_at   timestamptz NOT NULL
);
