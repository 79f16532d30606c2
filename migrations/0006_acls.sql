-- ACL bindings (AclCreated / AclRemoved records), in Kafka's wire codes.
CREATE TABLE acls (
    resource_type INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    pattern_type  INTEGER NOT NULL,
    principal     TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    operation     INTEGER NOT NULL,
    permission    INTEGER NOT NULL,
    PRIMARY KEY (resource_type, name, pattern_type, principal, host, operation, permission)
);
