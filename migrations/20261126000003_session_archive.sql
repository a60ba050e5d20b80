-- A user may archive a session: it leaves the default listing and keeps everything.
ALTER TABLE sessions ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
