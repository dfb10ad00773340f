//! Recording and playback: cameras' frames as they are (no re-encode) into fragmented MP4
//! segment files, indexed in SQLite, and read back as one stitched file for any span.
//!
//! - [`segment`] (sans-IO) decides what goes in which file and when a part is written;
//! - [`recorder`] is a camera's recorder task and its slot in the camera;
//! - [`index`] is the SQLite index beside the files; [`files`] reads segment files back;
//! - [`playback`] (sans-IO) stitches what was read into a fragmented or a progressive MP4;
//! - [`retention`] (sans-IO) picks what to delete by age and by size.
//!
//! Layout: `{path}/index.db` and `{path}/{camera}/{start}.mp4` (start in UTC, RFC 3339 with
//! `-` for `:`). The index is created with the folder, when the first segment is written.

pub mod files;
pub mod index;
pub mod playback;
pub mod recorder;
pub mod retention;
pub mod segment;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;

pub use crate::config::RecordingSettings;
use crate::output::fmp4::VIDEO_TRACK;
use index::{Index, Segment};
use playback::{Clip, Format, Plan, Run};
pub use recorder::{Recorder, RecordingStatus};

/// Segments closer than this are one span: a cut at a keyframe leaves no gap, and a camera's
/// frame interval or a source restart can leave a small one.
const CONTIGUOUS_US: i64 = 1_500_000;

pub struct Recording {
    settings: RecordingSettings,
    index: Mutex<Option<Arc<Index>>>,
    closed: Notify,
}

/// A recorded span (contiguous footage of one kind) as `GET /api/playback/list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Span {
    pub start_us: i64,
    pub end_us: i64,
}

/// A stitched file ready to stream: its plan and the files it reads.
pub struct Answer {
    pub plan: Plan,
    pub files: Vec<PathBuf>,
}

impl Recording {
    /// `settings.path` must already be absolute or relative to the working folder. An index
    /// left by an earlier run is opened and its interrupted segments repaired.
    pub fn new(settings: RecordingSettings) -> Recording {
        let recording = Recording {
            settings,
            index: Mutex::new(None),
            closed: Notify::new(),
        };
        if recording.settings.path.join("index.db").exists() {
            match recording.index() {
                Ok(index) => repair(&recording.settings.path, &index),
                Err(e) => tracing::warn!("recordings: {e}"),
            }
        }
        recording
    }

    pub fn settings(&self) -> &RecordingSettings {
        &self.settings
    }

    /// The index, created with the folder on first use.
    pub fn index(&self) -> Result<Arc<Index>, String> {
        let mut slot = self.index.lock().unwrap();
        if let Some(index) = &*slot {
            return Ok(index.clone());
        }
        let path = &self.settings.path;
        std::fs::create_dir_all(path).map_err(|e| {
            format!(
                "cannot create the recordings folder {}: {e}",
                path.display()
            )
        })?;
        let index = Arc::new(Index::open(&path.join("index.db"))?);
        *slot = Some(index.clone());
        Ok(index)
    }

    /// The index if one exists (reads never create the folder).
    fn existing_index(&self) -> Option<Arc<Index>> {
        if self.index.lock().unwrap().is_none() && !self.settings.path.join("index.db").exists() {
            return None;
        }
        self.index().ok()
    }

    /// A new segment file's path for `camera` starting at `start_us`, and its name in the index.
    fn new_file_path(&self, camera: &str, start_us: i64) -> Result<(PathBuf, String), String> {
        let folder = self.settings.path.join(camera);
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        let stamp =
            crate::common::rfc3339(UNIX_EPOCH + Duration::from_micros(start_us.max(0) as u64))
                .replace(':', "-");
        for n in 0..100 {
            let name = if n == 0 {
                format!("{stamp}.mp4")
            } else {
                format!("{stamp}-{n}.mp4")
            };
            if !folder.join(&name).exists() {
                return Ok((folder.join(&name), format!("{camera}/{name}")));
            }
        }
        Err(format!(
            "too many segments at {stamp} in {}",
            folder.display()
        ))
    }

    fn segment_closed(&self) {
        self.closed.notify_one();
    }

    /// Waits until a segment was closed (retention checks the size then).
    pub async fn wait_segment_closed(&self) {
        self.closed.notified().await
    }

    /// The camera's recorded spans overlapping `[start_us, end_us)`, cut to it.
    pub fn spans(&self, camera: &str, start_us: i64, end_us: i64) -> Result<Vec<Span>, String> {
        let Some(index) = self.existing_index() else {
            return Ok(Vec::new());
        };
        Ok(merge(&index.overlapping(camera, start_us, end_us)?)
            .into_iter()
            .map(|s| Span {
                start_us: s.start_us.max(start_us),
                end_us: s.end_us.min(end_us),
            })
            .filter(|s| s.end_us > s.start_us)
            .collect())
    }

    /// The camera's footage from `start_us` to `end_us` as one file; `None` when nothing was
    /// recorded there. Stitching stops at a gap or a change of codecs.
    pub fn answer(
        &self,
        camera: &str,
        start_us: i64,
        end_us: i64,
        format: Format,
    ) -> Result<Option<Answer>, String> {
        let Some(index) = self.existing_index() else {
            return Ok(None);
        };
        let segments = index.overlapping(camera, start_us, end_us)?;
        let mut runs = Vec::new();
        let mut files = Vec::new();
        let mut first_init = None;
        let mut last_end = None;
        for seg in &segments {
            if last_end.is_some_and(|e| seg.start_us - e > CONTIGUOUS_US) {
                break;
            }
            let path = self.settings.path.join(&seg.path);
            let init = match files::read_init(&path) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("recording {}: {e}", seg.path);
                    if runs.is_empty() {
                        continue;
                    }
                    break;
                }
            };
            match &first_init {
                None => first_init = Some(init.clone()),
                Some(first) if *first != init => break,
                Some(_) => {}
            }
            let at = if runs.is_empty() {
                start_us
            } else {
                seg.start_us
            };
            let Some(key) = index.keyframe_at(seg.id, at)? else {
                continue;
            };
            let moov = playback::read_moov(&init)?;
            let video_rate = playback::video_timescale(&moov);
            let mut anchor_dts: Option<u64> = None;
            let scanned = files::scan(&path, key.offset, |s| {
                if s.track != VIDEO_TRACK && anchor_dts.is_none() {
                    return false;
                }
                let dts = *anchor_dts.get_or_insert(s.dts);
                let wall = key.time_us
                    + ((s.dts as i128 - dts as i128) * 1_000_000 / i128::from(video_rate)) as i64;
                s.track == VIDEO_TRACK && wall >= end_us
            })?;
            last_end = Some(seg.end_us);
            runs.push(Run {
                file: files.len(),
                anchor_us: key.time_us,
                samples: scanned.samples,
            });
            files.push(path);
            if seg.end_us >= end_us {
                break;
            }
        }
        let Some(init) = first_init.filter(|_| !runs.is_empty()) else {
            return Ok(None);
        };
        let clip = Clip {
            moov: playback::read_moov(&init)?,
            runs,
            start_us,
            end_us,
        };
        let plan = match format {
            Format::Fmp4 => playback::fmp4(&clip)?,
            Format::Mp4 => playback::mp4(&clip)?,
        };
        Ok(Some(Answer { plan, files }))
    }

    /// Deletes what retention says must go; `keep` gives each camera's `keep`.
    pub fn prune(&self, keep: &HashMap<String, Duration>) -> Result<usize, String> {
        let Some(index) = self.existing_index() else {
            return Ok(0);
        };
        let segments = index.all()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let doomed = retention::expired(
            &segments,
            now,
            |camera| keep.get(camera).copied().unwrap_or(self.settings.keep),
            self.settings.max_size,
        );
        let by_id: HashMap<i64, &Segment> = segments.iter().map(|s| (s.id, s)).collect();
        for id in &doomed {
            if let Some(seg) = by_id.get(id) {
                match std::fs::remove_file(self.settings.path.join(&seg.path)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("cannot delete recording {}: {e}", seg.path);
                        continue;
                    }
                }
            }
            index.remove(*id)?;
        }
        Ok(doomed.len())
    }
}

/// Contiguous segments of the same codecs as one span each.
fn merge(segments: &[Segment]) -> Vec<Span> {
    let mut out: Vec<(Span, &str)> = Vec::new();
    for s in segments {
        match out.last_mut() {
            Some((span, codecs))
                if *codecs == s.codecs && s.start_us - span.end_us <= CONTIGUOUS_US =>
            {
                span.end_us = span.end_us.max(s.end_us)
            }
            _ => out.push((
                Span {
                    start_us: s.start_us,
                    end_us: s.end_us,
                },
                &s.codecs,
            )),
        }
    }
    out.into_iter().map(|(s, _)| s).collect()
}

/// Segments a crash left open: the fragments written after the last index update are taken
/// in (the index lags the file by at most a part), a fragment cut short is cut off, and the
/// segment is closed, so what was written is listed and plays.
fn repair(base: &Path, index: &Index) {
    let Ok(segments) = index.all() else {
        return;
    };
    for seg in segments.into_iter().filter(|s| s.open) {
        let path = base.join(&seg.path);
        let (end_us, size) = match repaired(&path, index, &seg) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("recording {}: {e}", seg.path);
                (seg.end_us, seg.size)
            }
        };
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = file.set_len(size);
        }
        let _ = index.close(seg.id, end_us, size);
        tracing::info!(segment = %seg.path, "recording repaired after an interrupted run");
    }
}

fn repaired(path: &Path, index: &Index, seg: &Segment) -> Result<(i64, u64), String> {
    let init = files::read_init(path)?;
    let moov = playback::read_moov(&init)?;
    let rates: HashMap<u32, u32> = moov
        .trak
        .iter()
        .map(|t| (t.tkhd.track_id, t.mdia.mdhd.timescale.max(1)))
        .collect();
    // The last indexed keyframe anchors camera time to wall time.
    let key = index.keyframe_at(seg.id, i64::MAX)?;
    let from = key.map_or(init.len() as u64, |k| k.offset);
    let scanned = files::scan(path, from, |_| false)?;
    let Some(first) = scanned.samples.iter().find(|s| s.track == VIDEO_TRACK) else {
        return Ok((seg.end_us, seg.size.min(scanned.end.max(init.len() as u64))));
    };
    let anchor_us = key.map_or(seg.start_us, |k| k.time_us);
    let to_us = |t: u64, track: u32| {
        (t as i128 * 1_000_000 / i128::from(*rates.get(&track).unwrap_or(&90_000))) as i64
    };
    let first_us = to_us(first.dts, VIDEO_TRACK);
    let mut end_us = seg.end_us;
    let mut keyframes = Vec::new();
    for s in &scanned.samples {
        let wall = anchor_us + to_us(s.dts, s.track) - first_us;
        end_us = end_us.max(wall + to_us(u64::from(s.duration), s.track));
        if s.track == VIDEO_TRACK && s.sync && s.fragment >= seg.size {
            keyframes.push(segment::Keyframe {
                time_us: wall,
                offset: s.fragment,
            });
        }
    }
    index.extend(seg.id, end_us, scanned.end, &keyframes)?;
    Ok((end_us, scanned.end))
}
