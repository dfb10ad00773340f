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
    CREATE INDEX events_kind_time ON events (kind, time_ms);"];

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
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                conn.execute_batch(sql)?;
                conn.pragma_update(None, "user_version", (i + 1) as i64)?;
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
}
