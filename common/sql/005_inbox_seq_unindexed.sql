-- seq records the order in which a consumer applied its events: the tests and a human read it
-- in that order, over the whole table, and no query looks one up. Its UNIQUE index cost every
-- consumed event one more index entry (a bigserial is unique by construction): the primary key
-- on event_id, which makes a redelivery a no-op, is the inbox's only index now.
ALTER TABLE inbox DROP CONSTRAINT inbox_seq_key;
