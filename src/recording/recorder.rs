//! A camera's recorder: its frames into segment files, for as long as the camera records.
//!
//! Ownership: the camera owns its [`Recorder`] slot; the slot owns the recorder's task and
//! awaits it when recording is switched off or the camera goes. The task is a viewer of the
//! stream (counted as `viewers.recording`); while the camera is stopped it waits for it to run
//! again. The sans-IO [`Writer`] decides what to write; writes, syncs and index updates run on
//! the blocking pool, one part at a time, so a slow disk makes the recorder fall behind (the
//! hub then skips it to a keyframe) and never holds up live viewers.
//!
//! A failed write (a full disk, a folder that cannot be written) pauses recording with the
//! reason in the camera's status; the recorder tries again every [`RETRY`], starting a new
//! segment at a keyframe, so freeing space resumes it.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::index::Index;
use super::segment::{Action, Cuts, Writer};
use super::Recording;
use crate::hub::Stream;
use crate::resources::{spawn_task, ViewerKind};

const RETRY: Duration = Duration::from_secs(5);

/// What a camera's recorder is doing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordingStatus {
    /// `off`, `waiting` (for the camera to run), `recording`, or `paused` (a write failed).
    pub state: &'static str,
    pub reason: Option<String>,
}

impl RecordingStatus {
    fn new(state: &'static str, reason: Option<String>) -> RecordingStatus {
        RecordingStatus { state, reason }
    }
}

/// A camera's recorder slot.
#[derive(Default)]
pub struct Recorder {
    running: Mutex<Option<Running>>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    status: Arc<Mutex<RecordingStatus>>,
}

impl Recorder {
    /// Starts recording `stream` unless it is being recorded.
    pub fn start(&self, stream: &Arc<Stream>, recording: &Arc<Recording>) {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return;
        }
        let status = Arc::new(Mutex::new(RecordingStatus::new("waiting", None)));
        let cancel = CancellationToken::new();
        let task = spawn_task(run(
            stream.clone(),
            recording.clone(),
            status.clone(),
            cancel.clone(),
        ));
        *running = Some(Running {
            cancel,
            task,
            status,
        });
    }

    /// Stops recording: what is pending is written and the segment closed before this returns.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(r) = running {
            r.cancel.cancel();
            let _ = r.task.await;
        }
    }

    pub fn status(&self) -> RecordingStatus {
        match &*self.running.lock().unwrap() {
            Some(r) => r.status.lock().unwrap().clone(),
            None => RecordingStatus::new("off", None),
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

async fn run(
    stream: Arc<Stream>,
    recording: Arc<Recording>,
    status: Arc<Mutex<RecordingStatus>>,
    cancel: CancellationToken,
) {
    let settings = recording.settings();
    let mut writer = Writer::new(Cuts {
        segment: settings.segment,
        part: settings.part,
    });
    let mut disk = Some(Disk::new(stream.id(), recording.clone()));
    let mut paused_until: Option<Instant> = None;
    let set = |s: RecordingStatus| *status.lock().unwrap() = s;
    'camera: loop {
        if paused_until.is_none() {
            set(RecordingStatus::new("waiting", None));
        }
        let mut frames = tokio::select! {
            s = stream.subscribe_when_running(ViewerKind::Recording) => s,
            _ = cancel.cancelled() => break 'camera,
        };
        loop {
            let packet = tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'camera,
                p = frames.next() => p,
            };
            let actions = match packet {
                Ok(packet) => {
                    if paused_until.is_some_and(|t| Instant::now() < t) {
                        continue;
                    }
                    writer.push(&packet, stream.audio().as_ref(), now_us())
                }
                // The camera stopped: close the segment and wait for it to run again.
                Err(_) => {
                    let actions = writer.finish();
                    disk = apply(disk, actions).await.ok();
                    break;
                }
            };
            if actions.is_empty() {
                continue;
            }
            match apply(disk.take(), actions).await {
                Ok(d) => {
                    disk = Some(d);
                    if paused_until.take().is_some() || status.lock().unwrap().state != "recording"
                    {
                        set(RecordingStatus::new("recording", None));
                    }
                }
                Err((d, reason)) => {
                    tracing::warn!(camera = %stream.id(), "recording paused: {reason}");
                    disk = Some(d);
                    writer.abandon();
                    paused_until = Some(Instant::now() + RETRY);
                    set(RecordingStatus::new("paused", Some(reason)));
                }
            }
        }
        if disk.is_none() {
            disk = Some(Disk::new(stream.id(), recording.clone()));
        }
    }
    let _ = apply(disk, writer.finish()).await;
}

/// Applies `actions` on the blocking pool; the disk comes back with the outcome.
async fn apply(disk: Option<Disk>, actions: Vec<Action>) -> Result<Disk, (Disk, String)> {
    let Some(mut disk) = disk else {
        return Err((Disk::broken(), "the recorder lost its disk state".into()));
    };
    if actions.is_empty() {
        return Ok(disk);
    }
    match tokio::task::spawn_blocking(move || {
        let result = disk.apply(actions);
        (disk, result)
    })
    .await
    {
        Ok((disk, Ok(()))) => Ok(disk),
        Ok((mut disk, Err(reason))) => {
            disk.give_up();
            Err((disk, reason))
        }
        Err(e) => Err((Disk::broken(), format!("the recorder's writer failed: {e}"))),
    }
}

/// The recorder's side of the disk: the open file and its index row.
struct Disk {
    camera: String,
    recording: Option<Arc<Recording>>,
    open: Option<OpenFile>,
}

struct OpenFile {
    file: File,
    id: i64,
    index: Arc<Index>,
    /// Bytes known good (written and synced).
    size: u64,
    end_us: i64,
}

impl Disk {
    fn new(camera: &str, recording: Arc<Recording>) -> Disk {
        Disk {
            camera: camera.to_string(),
            recording: Some(recording),
            open: None,
        }
    }

    fn broken() -> Disk {
        Disk {
            camera: String::new(),
            recording: None,
            open: None,
        }
    }

    fn apply(&mut self, actions: Vec<Action>) -> Result<(), String> {
        let recording = self.recording.clone().ok_or("no recording")?;
        for action in actions {
            match action {
                Action::Open(opened) => {
                    self.give_up();
                    let index = recording.index()?;
                    let (path, relative) =
                        recording.new_file_path(&self.camera, opened.start_us)?;
                    let mut file = File::options()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    write(&mut file, std::slice::from_ref(&opened.init), &path)?;
                    let size = opened.init.len() as u64;
                    let id = index.add(
                        &self.camera,
                        opened.start_us,
                        &relative,
                        size,
                        &opened.codecs,
                    )?;
                    self.open = Some(OpenFile {
                        file,
                        id,
                        index,
                        size,
                        end_us: opened.start_us,
                    });
                }
                Action::Append {
                    chunks,
                    size,
                    end_us,
                    keyframes,
                } => {
                    let Some(open) = self.open.as_mut() else {
                        continue;
                    };
                    let path = PathBuf::from(&self.camera);
                    write(&mut open.file, &chunks, &path)?;
                    open.size = size;
                    open.end_us = end_us;
                    open.index.extend(open.id, end_us, size, &keyframes)?;
                }
                Action::Close { size, end_us } => {
                    if let Some(open) = self.open.take() {
                        open.index.close(open.id, end_us, size)?;
                        recording.segment_closed();
                    }
                }
            }
        }
        Ok(())
    }

    /// After a failed write: the file is cut back to what was known good, and its row closed.
    fn give_up(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.file.set_len(open.size);
            let _ = open.index.close(open.id, open.end_us, open.size);
        }
    }
}

/// Writes `chunks` and syncs them to the disk (a crash must not lose a part once indexed).
fn write(file: &mut File, chunks: &[bytes::Bytes], path: &std::path::Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    for c in chunks {
        file.write_all(c).map_err(fail)?;
    }
    file.sync_data().map_err(fail)
}
