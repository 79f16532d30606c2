-- Users' SCRAM credentials (UserScramCredentialSet / UserScramCredentialRemoved
-- records): the salt and the keys derived from the salted password, never
-- the password.
CREATE TABLE scram_credentials (
    user       TEXT    NOT NULL,
    -- Kafka's mechanism code: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    mechanism  INTEGER NOT NULL,
    iterations INTEGER NOT NULL,
    salt       BLOB    NOT NULL,
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (user, mechanism)
);
