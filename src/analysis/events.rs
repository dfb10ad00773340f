//! Analysis events: stored in SQLite (WAL, versioned schema), pushed live to subscribers (SSE)
//! and, when configured, to MQTT ([`super::mqtt`]).
//!
//! SQLite calls are short and run on the blocking pool; the connection is owned by the store and
//! guarded by a mutex. Without `[storage] path` the database lives in memory.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        camera TEXT NOT NULL,
        kind TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        data TEXT NOT NULL,
        snapshot BLOB
    );
    CREATE INDEX events_camera_time ON events (camera, time_ms);
    CREATE INDEX events_kind_time ON events (kind, time_ms);",
    // Full-text search over what was seen, said and concluded: the model's descriptions,
    // transcripts and summaries (`text`) and alert answers (`answer`), kept in step by triggers
    // (without U+0002/U+0003, which mark the hits of a snippet).
    "CREATE VIRTUAL TABLE events_text USING fts5(text, tokenize = 'porter unicode61');
    INSERT INTO events_text (rowid, text)
        SELECT id, replace(replace(COALESCE(json_extract(data, '$.text'), json_extract(data, '$.answer')), char(2), ''), char(3), '') FROM events
        WHERE COALESCE(json_extract(data, '$.text'), json_extract(data, '$.answer')) IS NOT NULL;
    CREATE TRIGGER events_text_add AFTER INSERT ON events
        WHEN COALESCE(json_extract(new.data, '$.text'), json_extract(new.data, '$.answer')) IS NOT NULL
        BEGIN
            INSERT INTO events_text (rowid, text)
            VALUES (new.id, replace(replace(COALESCE(json_extract(new.data, '$.text'), json_extract(new.data, '$.answer')), char(2), ''), char(3), ''));
        END;
    CREATE TRIGGER events_text_remove AFTER DELETE ON events
        BEGIN DELETE FROM events_text WHERE rowid = old.id; END;"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: i64,
    pub camera: String,
    /// `motion`, `vlm`, `transcript`, `analysis_error`.
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub data: Value,
    pub has_snapshot: bool,
}

/// A found event: the event, and the part of its text that matched, as runs of text that
/// are or are not a hit (for the UI to mark without parsing markup).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Found {
    #[serde(flatten)]
    pub event: Event,
    pub snippet: Vec<SnippetRun>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnippetRun {
    pub text: String,
    pub hit: bool,
}

/// Words of a search as an FTS5 query: each a quoted term (so no character of the user's is
/// FTS5 syntax), all required, the last one also as a prefix (search as you type).
pub fn fts_query(q: &str) -> Option<String> {
    let words: Vec<&str> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(16)
        .collect();
    let (last, rest) = words.split_last()?;
    let mut terms: Vec<String> = rest.iter().map(|w| format!("\"{w}\"")).collect();
    // A prefix of one or two letters matches nearly every row: a whole word then.
    let star = if last.chars().count() >= 3 { "*" } else { "" };
    terms.push(format!("\"{last}\"{star}"));
    Some(terms.join(" "))
}

fn snippet_runs(marked: &str) -> Vec<SnippetRun> {
    let mut out = Vec::new();
    for (i, part) in marked.split(['\u{2}', '\u{3}']).enumerate() {
        if !part.is_empty() {
            out.push(SnippetRun {
                text: part.to_string(),
                hit: i % 2 == 1,
            });
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<u32>,
}

pub struct EventStore {
    conn: Mutex<Connection>,
    live: broadcast::Sender<Arc<Event>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl EventStore {
    /// Opens (creating and migrating) the database at `path`, or an in-memory one.
    pub fn open(path: Option<&Path>) -> Result<EventStore, String> {
        let conn = match path {
            Some(p) => {
                Connection::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?
            }
            None => Connection::open_in_memory().map_err(|e| e.to_string())?,
        };
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            // Each migration and its version in one transaction: one cut short by a crash is
            // not half applied (it would fail for ever on its own CREATE the next time).
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                    i + 1
                ))?;
            }
            Ok(())
        };
        setup().map_err(|e| format!("preparing the events database failed: {e}"))?;
        Ok(EventStore {
            conn: Mutex::new(conn),
            live: broadcast::channel(256).0,
        })
    }

    /// Stores an event and pushes it to live subscribers.
    pub fn add(
        &self,
        camera: &str,
        kind: &str,
        data: Value,
        snapshot: Option<&[u8]>,
    ) -> Result<Arc<Event>, String> {
        let time_ms = now_ms();
        let id = {
            let conn = self.conn.lock().unwrap();
            conn.execute(
                "INSERT INTO events (camera, kind, time_ms, data, snapshot) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![camera, kind, time_ms, data.to_string(), snapshot],
            )
            .map_err(|e| format!("storing an event failed: {e}"))?;
            conn.last_insert_rowid()
        };
        let event = Arc::new(Event {
            id,
            camera: camera.to_string(),
            kind: kind.to_string(),
            time_ms,
            data,
            has_snapshot: snapshot.is_some(),
        });
        let _ = self.live.send(event.clone());
        Ok(event)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Events matching `q`, newest first (at most 1000).
    pub fn query(&self, q: &Query) -> Result<Vec<Event>, String> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, camera, kind, time_ms, data, snapshot IS NOT NULL FROM events
                 WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR time_ms >= ?3) AND (?4 IS NULL OR time_ms <= ?4)
                 ORDER BY id DESC LIMIT ?5",
            )
            .map_err(|e| e.to_string())?;
        let limit = q.limit.unwrap_or(100).min(1000);
        let rows = stmt
            .query_map(
                params![q.camera, q.kind, q.since_ms, q.until_ms, limit],
                |r| {
                    let data: String = r.get(4)?;
                    Ok(Event {
                        id: r.get(0)?,
                        camera: r.get(1)?,
                        kind: r.get(2)?,
                        time_ms: r.get(3)?,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        has_snapshot: r.get(5)?,
                    })
                },
            )
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    /// Events whose text matches `words` (see [`fts_query`]), best first, filtered like
    /// [`EventStore::query`] (its `kind` is ignored).
    pub fn search(&self, words: &str, q: &Query) -> Result<Vec<Found>, String> {
        let Some(fts) = fts_query(words) else {
            return Ok(Vec::new());
        };
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(
                "SELECT e.id, e.camera, e.kind, e.time_ms, e.data, e.snapshot IS NOT NULL,
                        snippet(events_text, 0, char(2), char(3), '…', 16)
                 FROM events_text JOIN events e ON e.id = events_text.rowid
                 WHERE events_text MATCH ?1
                   AND (?2 IS NULL OR e.camera = ?2)
                   AND (?3 IS NULL OR e.time_ms >= ?3) AND (?4 IS NULL OR e.time_ms <= ?4)
                 ORDER BY bm25(events_text), e.id DESC LIMIT ?5",
            )
            .map_err(|e| e.to_string())?;
        let limit = q.limit.unwrap_or(50).min(1000);
        let rows = stmt
            .query_map(params![fts, q.camera, q.since_ms, q.until_ms, limit], |r| {
                let data: String = r.get(4)?;
                let marked: String = r.get(6)?;
                Ok(Found {
                    event: Event {
                        id: r.get(0)?,
                        camera: r.get(1)?,
                        kind: r.get(2)?,
                        time_ms: r.get(3)?,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                        has_snapshot: r.get(5)?,
                    },
                    snippet: snippet_runs(&marked),
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    /// The JPEG an event came from.
    pub fn snapshot(&self, id: i64) -> Result<Option<Bytes>, String> {
        let conn = self.conn.lock().unwrap();
        conn.query_row("SELECT snapshot FROM events WHERE id = ?1", [id], |r| {
            r.get::<_, Option<Vec<u8>>>(0)
        })
        .optional()
        .map(|o| o.flatten().map(Bytes::from))
        .map_err(|e| e.to_string())
    }

    /// Deletes events older than `keep`. Returns how many went.
    pub fn prune(&self, keep: Duration) -> Result<usize, String> {
        let cutoff = now_ms() - keep.as_millis() as i64;
        let conn = self.conn.lock().unwrap();
        conn.execute("DELETE FROM events WHERE time_ms <= ?1", [cutoff])
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stores_queries_and_migrates_once() {
        let dir = std::env::temp_dir().join(format!("livelens-events-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("events.db");
        let _ = std::fs::remove_file(&path);
        {
            let store = EventStore::open(Some(&path)).unwrap();
            let mut live = store.subscribe();
            let e = store
                .add(
                    "front",
                    "motion",
                    json!({"state": "start"}),
                    Some(&[0xff, 0xd8]),
                )
                .unwrap();
            store
                .add("back", "vlm", json!({"text": "a cat"}), None)
                .unwrap();
            assert_eq!(live.try_recv().unwrap().id, e.id);
            let front = store
                .query(&Query {
                    camera: Some("front".into()),
                    ..Query::default()
                })
                .unwrap();
            assert_eq!(front.len(), 1);
            assert_eq!(front[0].data["state"], "start");
            assert!(front[0].has_snapshot);
            assert_eq!(&store.snapshot(e.id).unwrap().unwrap()[..], &[0xff, 0xd8]);
            assert_eq!(store.query(&Query::default()).unwrap()[0].kind, "vlm");
        }
        // Reopening keeps the data and runs no migration twice.
        let store = EventStore::open(Some(&path)).unwrap();
        assert_eq!(store.query(&Query::default()).unwrap().len(), 2);
        assert_eq!(store.prune(Duration::ZERO).unwrap(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn search_finds_matching_texts_only_ranked_with_marked_snippets() {
        let store = EventStore::open(None).unwrap();
        let add =
            |camera: &str, kind: &str, data: Value| store.add(camera, kind, data, None).unwrap().id;
        let person = add(
            "door",
            "vlm",
            json!({"text": "A person is standing at the front door."}),
        );
        let car = add(
            "yard",
            "vlm",
            json!({"text": "A red car parked in the driveway."}),
        );
        let said = add(
            "door",
            "transcript",
            json!({"text": "Hello, is anybody home? Parcel for you."}),
        );
        let alert = add(
            "door",
            "alert",
            json!({"name": "person", "answer": "Yes, a person with a parcel."}),
        );
        add("door", "motion", json!({"state": "start"}));
        let ids = |words: &str, q: &Query| -> Vec<i64> {
            store
                .search(words, q)
                .unwrap()
                .iter()
                .map(|f| f.event.id)
                .collect()
        };
        let all = Query::default();
        assert_eq!(ids("car", &all), vec![car]);
        let mut parcel = ids("parcel", &all);
        parcel.sort();
        assert_eq!(parcel, vec![said, alert]);
        assert_eq!(
            ids("standing persons", &all),
            vec![person],
            "stems, every word"
        );
        assert_eq!(ids("drive", &all), vec![car], "the last word as a prefix");
        assert_eq!(
            ids("person\" (door*", &all),
            vec![person],
            "no FTS5 syntax from the user"
        );
        assert!(ids("cat", &all).is_empty());
        assert!(ids("  ", &all).is_empty());
        let yard = Query {
            camera: Some("yard".into()),
            ..Query::default()
        };
        assert!(ids("person", &yard).is_empty());
        let found = store.search("driveway", &all).unwrap();
        let hits: Vec<&str> = found[0]
            .snippet
            .iter()
            .filter(|r| r.hit)
            .map(|r| r.text.as_str())
            .collect();
        assert_eq!(hits, vec!["driveway"]);
        assert_eq!(
            found[0]
                .snippet
                .iter()
                .map(|r| r.text.as_str())
                .collect::<String>(),
            "A red car parked in the driveway."
        );
        // Pruned events leave the index too.
        assert_eq!(store.prune(Duration::ZERO).unwrap(), 5);
        assert!(ids("car", &all).is_empty());
    }
}
