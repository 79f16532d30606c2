-- Client quotas (ClientQuotaSet / ClientQuotaRemoved records), one row per
-- entity and quota. Each part of the entity is absent (part 0), its type's
-- default (part 1) or the name in the text column (part 2); the text is ''
-- unless named, so the primary key holds for every shape.
CREATE TABLE client_quotas (
    user_part      INTEGER NOT NULL,
    user           TEXT    NOT NULL,
    client_id_part INTEGER NOT NULL,
    client_id      TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    value          REAL    NOT NULL,
    PRIMARY KEY (user_part, user, client_id_part, client_id, key)
);
