//! The recordings' index in SQLite (`index.db` in the recordings folder, beside the files it
//! lists): one row per segment file and one per keyframe, so listing any range and finding
//! where to start playing are index lookups, never a walk over files.
//!
//! Calls are short; the recorder and the API make them on the blocking pool.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::segment::Keyframe;

const MIGRATIONS: &[&str] = &["CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        camera TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        codecs TEXT NOT NULL,
        -- 1 while the recorder writes it (or was writing it when livelens stopped).
        open INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX segments_camera_start ON segments (camera, start_us);
    CREATE INDEX segments_camera_end ON segments (camera, end_us);
    CREATE TABLE keyframes (
        segment INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
        time_us INTEGER NOT NULL,
        offset INTEGER NOT NULL
    );
    CREATE INDEX keyframes_segment_time ON keyframes (segment, time_us);"];

/// One segment file as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: i64,
    pub camera: String,
    pub start_us: i64,
    pub end_us: i64,
    /// Relative to the recordings folder.
    pub path: String,
    pub size: u64,
    pub codecs: String,
    pub open: bool,
}

pub struct Index {
    conn: Mutex<Connection>,
}

type Result<T> = std::result::Result<T, String>;

fn err(e: rusqlite::Error) -> String {
    format!("recordings index: {e}")
}

fn segment(row: &rusqlite::Row) -> rusqlite::Result<Segment> {
    Ok(Segment {
        id: row.get(0)?,
        camera: row.get(1)?,
        start_us: row.get(2)?,
        end_us: row.get(3)?,
        path: row.get(4)?,
        size: row.get::<_, i64>(5)? as u64,
        codecs: row.get(6)?,
        open: row.get(7)?,
    })
}

const COLUMNS: &str = "id, camera, start_us, end_us, path, size, codecs, open";

impl Index {
    /// Opens (creating and migrating) the index at `path`.
    pub fn open(path: &Path) -> Result<Index> {
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        // Each migration and its version in one transaction (a crash never half applies one).
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(err)?;
        }
        Ok(Index {
            conn: Mutex::new(conn),
        })
    }

    /// A new open segment; its id.
    pub fn add(
        &self,
        camera: &str,
        start_us: i64,
        path: &str,
        size: u64,
        codecs: &str,
    ) -> Result<i64> {
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "INSERT INTO segments (camera, start_us, end_us, path, size, codecs) VALUES (?1, ?2, ?2, ?3, ?4, ?5)",
            params![camera, start_us, path, size as i64, codecs],
        )
        .map_err(err)?;
        Ok(conn.last_insert_rowid())
    }

    /// A part was written: the segment's new end and size, and its keyframes.
    pub fn extend(&self, id: i64, end_us: i64, size: u64, keyframes: &[Keyframe]) -> Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().map_err(err)?;
        tx.execute(
            "UPDATE segments SET end_us = ?2, size = ?3 WHERE id = ?1",
            params![id, end_us, size as i64],
        )
        .map_err(err)?;
        for k in keyframes {
            tx.execute(
                "INSERT INTO keyframes (segment, time_us, offset) VALUES (?1, ?2, ?3)",
                params![id, k.time_us, k.offset as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn close(&self, id: i64, end_us: i64, size: u64) -> Result<()> {
        self.conn
            .lock()
            .unwrap()
            .execute(
                "UPDATE segments SET end_us = ?2, size = ?3, open = 0 WHERE id = ?1",
                params![id, end_us, size as i64],
            )
            .map(drop)
            .map_err(err)
    }

    pub fn remove(&self, id: i64) -> Result<()> {
        self.conn
            .lock()
            .unwrap()
            .execute("DELETE FROM segments WHERE id = ?1", params![id])
            .map(drop)
            .map_err(err)
    }

    /// The camera's segments that overlap `[start_us, end_us)`, oldest first.
    pub fn overlapping(&self, camera: &str, start_us: i64, end_us: i64) -> Result<Vec<Segment>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM segments WHERE camera = ?1 AND end_us > ?2 AND start_us < ?3 ORDER BY start_us"
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(params![camera, start_us, end_us], segment)
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Every segment, oldest first (retention, start-up repair).
    pub fn all(&self) -> Result<Vec<Segment>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM segments ORDER BY start_us"))
            .map_err(err)?;
        let rows = stmt.query_map([], segment).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// The last keyframe of segment `id` at or before `time_us` (or its first, when none is).
    pub fn keyframe_at(&self, id: i64, time_us: i64) -> Result<Option<Keyframe>> {
        let conn = self.conn.lock().unwrap();
        let row = |r: &rusqlite::Row| {
            Ok(Keyframe {
                time_us: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
            })
        };
        let before = conn
            .prepare_cached(
                "SELECT time_us, offset FROM keyframes WHERE segment = ?1 AND time_us <= ?2 ORDER BY time_us DESC LIMIT 1",
            )
            .map_err(err)?
            .query_row(params![id, time_us], row)
            .optional()
            .map_err(err)?;
        if before.is_some() {
            return Ok(before);
        }
        let first = conn
            .prepare_cached(
                "SELECT time_us, offset FROM keyframes WHERE segment = ?1 ORDER BY time_us LIMIT 1",
            )
            .map_err(err)?
            .query_row(params![id], row)
            .optional()
            .map_err(err)?;
        Ok(first)
    }

    /// Total size of every segment.
    pub fn total_size(&self) -> Result<u64> {
        self.conn
            .lock()
            .unwrap()
            .query_row("SELECT COALESCE(SUM(size), 0) FROM segments", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(err)
    }

    /// Adds many closed segments at once (tests and benchmarks of large indexes).
    pub fn add_closed_many(&self, rows: &[(String, i64, i64, String, u64, String)]) -> Result<()> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction().map_err(err)?;
        for (camera, start, end, path, size, codecs) in rows {
            tx.execute(
                "INSERT INTO segments (camera, start_us, end_us, path, size, codecs, open) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                params![camera, start, end, path, *size as i64, codecs],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_found_by_overlap_and_keyframes_by_time() {
        let dir = std::env::temp_dir().join(format!("livelens-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = Index::open(&dir.join("index.db")).unwrap();
        let a = index
            .add("door", 1_000, "door/a.mp4", 500, "video/mp4")
            .unwrap();
        index
            .extend(
                a,
                5_000,
                900,
                &[
                    Keyframe {
                        time_us: 1_000,
                        offset: 500,
                    },
                    Keyframe {
                        time_us: 3_000,
                        offset: 700,
                    },
                ],
            )
            .unwrap();
        index.close(a, 6_000, 1_000).unwrap();
        let b = index
            .add("door", 6_000, "door/b.mp4", 500, "video/mp4")
            .unwrap();
        index.add("yard", 0, "yard/a.mp4", 10, "video/mp4").unwrap();
        let found = index.overlapping("door", 5_500, 7_000).unwrap();
        assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(
            (found[0].end_us, found[0].size, found[0].open),
            (6_000, 1_000, false)
        );
        assert!(found[1].open);
        assert!(index.overlapping("door", 0, 1_000).unwrap().is_empty());
        assert_eq!(index.keyframe_at(a, 2_999).unwrap().unwrap().offset, 500);
        assert_eq!(index.keyframe_at(a, 3_000).unwrap().unwrap().offset, 700);
        assert_eq!(
            index.keyframe_at(a, 0).unwrap().unwrap().offset,
            500,
            "the first"
        );
        assert_eq!(index.total_size().unwrap(), 1_510);
        index.remove(a).unwrap();
        assert!(
            index.keyframe_at(a, 3_000).unwrap().is_none(),
            "keyframes go with it"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
