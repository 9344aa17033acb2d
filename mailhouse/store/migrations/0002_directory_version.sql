-- A counter that moves whenever domains, accounts or aliases change, so a
-- process can cache them and notice another process's changes cheaply.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(key, value) VALUES ('directory', 1);

CREATE TRIGGER domains_ins AFTER INSERT ON domains BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER domains_del AFTER DELETE ON domains BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER accounts_ins AFTER INSERT ON accounts BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER accounts_upd AFTER UPDATE ON accounts BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER accounts_del AFTER DELETE ON accounts BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER aliases_ins AFTER INSERT ON aliases BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER aliases_upd AFTER UPDATE ON aliases BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
CREATE TRIGGER aliases_del AFTER DELETE ON aliases BEGIN UPDATE meta SET value = value + 1 WHERE key = 'directory'; END;
