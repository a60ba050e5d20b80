-- An event and a rating belong to the user who owns their session: the schema refuses any
-- other pairing, so no code path (a bug, a hand-written query) can file one user's event
-- under another user's session, where each would see the other's data.
CREATE TRIGGER events_belong_to_the_session_owner
BEFORE INSERT ON events
WHEN NEW.user_id IS NOT (SELECT user_id FROM sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'an event must belong to the owner of its session');
END;

CREATE TRIGGER events_stay_with_the_session_owner
BEFORE UPDATE OF user_id, session_id ON events
WHEN NEW.user_id IS NOT (SELECT user_id FROM sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'an event must belong to the owner of its session');
END;

CREATE TRIGGER feedback_belongs_to_the_session_owner
BEFORE INSERT ON feedback
WHEN NEW.user_id IS NOT (SELECT user_id FROM sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'feedback must come from the owner of its session');
END;

CREATE TRIGGER feedback_stays_with_the_session_owner
BEFORE UPDATE OF user_id, session_id ON feedback
WHEN NEW.user_id IS NOT (SELECT user_id FROM sessions WHERE id = NEW.session_id)
BEGIN
    SELECT RAISE(ABORT, 'feedback must come from the owner of its session');
END;
