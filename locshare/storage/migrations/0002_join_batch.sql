-- Joins in batches: one round trip admits many participants (group commit).
--
-- Rows are processed in session-id order, so concurrent batches (several servers on
-- one database) always lock sessions in the same order and cannot deadlock.  Each
-- admission is the same single-row UPDATE as before: it re-checks capacity on the
-- newest row version, so N concurrent joins into k free places admit exactly k.
CREATE FUNCTION locshare_join_many(
    p_ids uuid[], p_sessions uuid[], p_names text[], p_colors text[], p_now timestamptz
) RETURNS TABLE (o_ord bigint, o_status text, o_session sessions)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    s sessions%ROWTYPE;
BEGIN
    FOR r IN
        SELECT t.pid, t.sid, t.name, t.color, t.ord
          FROM unnest(p_ids, p_sessions, p_names, p_colors) WITH ORDINALITY AS t(pid, sid, name, color, ord)
         ORDER BY t.sid, t.ord
    LOOP
        UPDATE sessions
           SET participant_count = participant_count + 1, last_activity = p_now
         WHERE id = r.sid AND is_active AND expires_at > p_now
           AND participant_count < max_participants
        RETURNING * INTO s;
        IF FOUND THEN
            INSERT INTO participants (id, session_id, display_name, avatar_color, joined_at, last_seen, is_active)
            VALUES (r.pid, r.sid, r.name, r.color, p_now, p_now, true);
            o_status := 'joined';
        ELSE
            SELECT * INTO s FROM sessions WHERE id = r.sid;
            IF NOT FOUND THEN
                o_status := 'not_found';
            ELSIF NOT s.is_active OR s.expires_at <= p_now THEN
                o_status := 'ended';
            ELSE
                o_status := 'full';
            END IF;
        END IF;
        o_ord := r.ord;
        o_session := s;
        RETURN NEXT;
    END LOOP;
END
$$;
