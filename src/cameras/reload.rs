//! Hot reload: the config file is watched (inotify through `notify`, debounced) and re-read on
//! `SIGHUP`, and its cameras are applied one by one through the same path as the API's
//! changes; unchanged cameras are not touched. A file that does not parse or validate changes
//! nothing and is reported, with every problem, at `GET /api/config/status`.
//!
//! livelens writes the file itself when cameras change through the API; the text it wrote is
//! remembered, so the watcher does not take livelens's own write for an edit.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CameraError, Cameras};
use crate::config::{CameraConfig, Config, Problem};

/// Editors write a file in several steps (truncate, write, rename); a reload waits for this
/// much quiet so it reads the finished file once.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What `GET /api/config/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// False when the file as it is now could not be applied; the cameras run as before.
    pub ok: bool,
    /// When the running config was last read from the file (RFC 3339).
    pub loaded_at: String,
    /// Everything wrong with the file, each with its place (`camera[1].source`).
    pub problems: Vec<Problem>,
    /// Sections changed in the file that take effect only after a restart.
    pub restart_needed: Vec<&'static str>,
    /// Reloads that read a changed file since start.
    pub reloads: u64,
    /// The last time livelens wrote cameras back to the file (API changes), if it has.
    pub write_back: Option<WriteBack>,
    /// The file cameras are read from and saved to; null when changes are not saved.
    pub file: Option<String>,
}

/// The last write-back of cameras to the config file.
#[derive(Debug, Clone, Serialize)]
pub struct WriteBack {
    /// False when the change was refused because the file could not hold it; the file and
    /// the cameras were left as they were.
    pub ok: bool,
    /// When (RFC 3339).
    pub at: String,
    /// What went wrong, naming the section (`camera "front".analysis.alert[1]: …`).
    pub error: Option<String>,
}

impl ConfigStatus {
    pub(super) fn loaded(file: Option<&Path>) -> ConfigStatus {
        ConfigStatus {
            file: file.map(|p| p.display().to_string()),
            ok: true,
            loaded_at: crate::common::rfc3339(SystemTime::now()),
            problems: Vec::new(),
            restart_needed: Vec::new(),
            reloads: 0,
            write_back: None,
        }
    }

    pub(super) fn wrote(&mut self, result: &Result<(), Problem>) {
        self.write_back = Some(WriteBack {
            ok: result.is_ok(),
            at: crate::common::rfc3339(SystemTime::now()),
            error: result.as_ref().err().map(ToString::to_string),
        });
    }
}

impl Cameras {
    /// Remembers the text the running config was loaded from.
    pub async fn loaded_from(&self, text: String) {
        if let Some(file) = &self.file {
            *file.known.lock().await = Some(text);
        }
    }

    /// Re-reads the config file and applies its cameras. `started` is the config livelens
    /// started with (for the sections that need a restart). Unless `forced` (SIGHUP), a file
    /// that reads as livelens last wrote or applied it is left alone.
    pub async fn reload(&self, started: &Config, forced: bool) {
        let Some(file) = &self.file else {
            tracing::info!("no config file to reload");
            return;
        };
        let _edit = self.edits.write().await;
        let text = match tokio::fs::read_to_string(&file.path).await {
            Ok(t) => t,
            // The default file before the first change saved it (`serve` without --config).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && file.known.lock().await.is_none() =>
            {
                tracing::info!(
                    "no config file yet at {}: nothing to reload",
                    file.path.display()
                );
                return;
            }
            Err(e) => {
                let problem = Problem {
                    place: String::new(),
                    message: format!("cannot read {}: {e}", file.path.display()),
                };
                self.refused(vec![problem]);
                return;
            }
        };
        if !forced && file.known.lock().await.as_deref() == Some(text.as_str()) {
            return;
        }
        let new = match Config::parse(&text) {
            Ok(c) => c,
            Err(problems) => {
                // Seen, so that putting the file back as it was is a change that clears this.
                *file.known.lock().await = Some(text);
                self.refused(problems);
                return;
            }
        };
        let problems = self.apply_all(new.camera.clone()).await;
        *file.known.lock().await = Some(text);
        let restart_needed = started.restart_needed(&new);
        for p in &problems {
            tracing::warn!(place = %p.place, "config reload: {}", p.message);
        }
        if !restart_needed.is_empty() {
            tracing::warn!(
                ?restart_needed,
                "config reload: these sections changed and take effect after a restart"
            );
        }
        let mut status = self.status.lock().unwrap();
        status.reloads += 1;
        tracing::info!(reloads = status.reloads, "config reloaded");
        *status = ConfigStatus {
            ok: problems.is_empty(),
            loaded_at: crate::common::rfc3339(SystemTime::now()),
            problems,
            restart_needed,
            reloads: status.reloads,
            write_back: status.write_back.clone(),
            file: status.file.clone(),
        };
    }

    /// A file that cannot be applied: nothing changes, and the status says why.
    fn refused(&self, problems: Vec<Problem>) {
        tracing::warn!(
            "config reload refused, the cameras run as before; {} problem(s):",
            problems.len()
        );
        for p in &problems {
            tracing::warn!("  {p}");
        }
        let mut status = self.status.lock().unwrap();
        status.ok = false;
        status.problems = problems;
    }

    /// Makes the running cameras those of `desired`: removes the ones gone, applies the ones
    /// changed, adds the new ones. Returns what could not be applied (the rest is).
    async fn apply_all(&self, desired: Vec<CameraConfig>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let wanted: BTreeSet<String> = desired.iter().map(|c| c.id.clone()).collect();
        for camera in self.list() {
            if !wanted.contains(camera.id()) {
                tracing::info!(camera = %camera.id(), "removed from the config file");
                let _ = self.take_out(camera.id()).await;
            }
        }
        for (i, config) in desired.into_iter().enumerate() {
            let place = format!("camera[{i}]");
            let result = match self.get(&config.id) {
                Ok(camera) => {
                    let _turn = camera.changes.lock().await;
                    match self.check(config) {
                        Ok(checked) => {
                            self.apply(&camera, checked).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(_) => {
                    let id = config.id.clone();
                    match self.check(config) {
                        Ok(checked) => self.insert(checked).await.map(|_| {
                            tracing::info!(camera = %id, "added from the config file");
                        }),
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) => {}
                Err(CameraError::Invalid(list)) => {
                    problems.extend(list.into_iter().map(|p| Problem {
                        place: format!("{place}.{}", p.place),
                        message: p.message,
                    }))
                }
                Err(e) => problems.push(Problem {
                    place,
                    message: e.to_string(),
                }),
            }
        }
        problems
    }
}

/// Watches the config file (unless `watch` is false) and `SIGHUP`, and reloads on each, until
/// `shutdown`. The signal handler is installed before this returns, so a `SIGHUP` sent once
/// the server listens is never the default "terminate".
pub fn spawn(
    cameras: Arc<Cameras>,
    started: Config,
    watch: bool,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let changed = Arc::new(tokio::sync::Notify::new());
    let watcher = match (&cameras.file, watch) {
        // The default file that the first change will create is watched from the next start.
        (Some(file), true) if file.path.exists() => match watch_file(&file.path, changed.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch the config file ({e}); reload it with SIGHUP");
                None
            }
        },
        _ => None,
    };
    Ok(crate::resources::spawn_task(async move {
        // Dropped with the task: the watcher's thread ends with it.
        let _watcher = watcher;
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangup.recv() => true,
                _ = changed.notified() => {
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                            _ = changed.notified() => {}
                        }
                    }
                    false
                }
            };
            if forced {
                tracing::info!("SIGHUP: reloading the config file");
            }
            cameras.reload(&started, forced).await;
        }
    }))
}

/// Watches the folder of `path` (editors replace files by renaming, which a watch on the file
/// itself would lose) and signals `changed` for events that name the file.
fn watch_file(
    path: &Path,
    changed: Arc<tokio::sync::Notify>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let name = path.file_name().map(|n| n.to_os_string());
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            changed.notify_one();
        }
    })?;
    watcher.watch(&folder, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
