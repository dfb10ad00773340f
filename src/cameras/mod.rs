//! The cameras: each one an owned unit — its desired config, its stream, its analysers and its
//! snapshot cache — and one code path that turns a desired config into a running camera
//! ([`Cameras::apply`]), used by the API, start-up and reload alike.
//!
//! A change that the config file keeps (add, PATCH, delete) is written to the file first, and
//! applied only once the file holds it, verified by reading it back ([`crate::config::write_back`]):
//! either the change is applied and saved, or neither — never a running camera that the next
//! start would not have.
//!
//! Locks, always taken in this order so none can wait on another in a circle:
//! 1. `edits` — held exclusively by every change that writes the file (API changes, reloads):
//!    the list written must be the running list plus this one change, so two such changes
//!    never interleave;
//! 2. a camera's `changes` — changes to one camera (start and stop too) happen one after the
//!    other;
//! 3. `file` — the text last written or read.
//!
//! The registry map itself is only locked for lookups and inserts, never across an `.await`.
//! WebRTC peers live in the WebRTC loops (which own them for speed) keyed by camera; the
//! camera's removal and stop end them from here, in the same path.

pub mod change;
pub mod reload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::analysis::{Analysers, Analysis, AnalysisConfig, AnalysisStatus};
use crate::config::{
    check_camera, source_spec, write_cameras, CameraConfig, Problem, PublishSettings,
};
use crate::hub::Stream;
use crate::output::webrtc::WebRtc;
use crate::output::{hls, mjpeg, snapshot};
use crate::recording::{Recorder, Recording};
use crate::source::publish::PublishRules;
use crate::source::SourceSpec;
pub use change::{CameraPatch, Change};
pub use reload::ConfigStatus;

/// What a change does to the list of cameras the config file holds.
enum Edit<'a> {
    /// Adds the camera, or replaces the one with its id.
    Put(&'a CameraConfig),
    Remove(&'a str),
}

/// One camera and everything that exists because of it.
pub struct Camera {
    pub stream: Arc<Stream>,
    desired: Mutex<Desired>,
    analysers: Mutex<Option<Analysers>>,
    pub snapshot: snapshot::Cache,
    /// The MJPEG encoder its MJPEG viewers share, while any watch.
    pub mjpeg: mjpeg::Mjpeg,
    /// Its LL-HLS muxer, while requests come.
    pub hls: hls::Hls,
    /// Its recorder, while it records.
    pub recorder: Recorder,
    /// Held through a whole change (PATCH, start, stop, delete, reload).
    changes: tokio::sync::Mutex<()>,
}

/// A camera's config, and its analysis settings parsed once when it was applied.
#[derive(Clone)]
struct Desired {
    config: CameraConfig,
    analysis: AnalysisConfig,
}

impl Camera {
    pub fn id(&self) -> &str {
        self.stream.id()
    }

    pub fn config(&self) -> CameraConfig {
        self.desired.lock().unwrap().config.clone()
    }

    /// The typed analysis settings.
    pub fn analysis(&self) -> AnalysisConfig {
        self.desired.lock().unwrap().analysis.clone()
    }

    /// What the analysers see now; `None` when nothing analyses this camera.
    pub fn analysis_status(&self) -> Option<AnalysisStatus> {
        self.analysers
            .lock()
            .unwrap()
            .as_ref()
            .map(Analysers::status)
    }
}

#[derive(Debug)]
pub enum CameraError {
    NotFound(String),
    /// Problems with the request, each naming its field.
    Invalid(Vec<Problem>),
    Conflict(String),
    /// The change could not be saved to the config file, so it was not made.
    Persist(String),
}

impl std::fmt::Display for CameraError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CameraError::NotFound(id) => write!(f, "no camera with id {id:?}"),
            CameraError::Invalid(problems) => {
                let parts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                f.write_str(&parts.join("; "))
            }
            CameraError::Conflict(m) | CameraError::Persist(m) => f.write_str(m),
        }
    }
}

/// Default time an on-demand camera keeps its source after the last viewer leaves.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A config that passed validation, ready to run: its text and what it means, parsed once.
struct Checked {
    config: CameraConfig,
    spec: SourceSpec,
    analysis: AnalysisConfig,
    /// The idle timeout of an on-demand camera; `None` for a camera that always runs.
    on_demand: Option<Duration>,
}

/// The config file the cameras are written back to, and the text last seen in it (written by
/// livelens or applied from it), so a reload knows an edit from livelens's own write.
struct ConfigFile {
    path: PathBuf,
    known: tokio::sync::Mutex<Option<String>>,
}

pub struct Cameras {
    cameras: RwLock<BTreeMap<String, Arc<Camera>>>,
    analysis: Arc<Analysis>,
    webrtc: Option<Arc<WebRtc>>,
    recording: Arc<Recording>,
    mjpeg: mjpeg::Settings,
    hls: hls::Settings,
    publish: PublishSettings,
    allow_exec: bool,
    file: Option<ConfigFile>,
    edits: tokio::sync::RwLock<()>,
    status: Mutex<ConfigStatus>,
}

impl Cameras {
    pub fn new(
        analysis: Arc<Analysis>,
        webrtc: Option<Arc<WebRtc>>,
        recording: Arc<Recording>,
        outputs: (mjpeg::Settings, hls::Settings, PublishSettings),
        allow_exec: bool,
        config_path: Option<PathBuf>,
    ) -> Cameras {
        let (mjpeg, hls, publish) = outputs;
        let status = ConfigStatus::loaded(config_path.as_deref());
        Cameras {
            cameras: RwLock::new(BTreeMap::new()),
            analysis,
            webrtc,
            recording,
            mjpeg,
            hls,
            publish,
            allow_exec,
            file: config_path.map(|path| ConfigFile {
                path,
                known: tokio::sync::Mutex::new(None),
            }),
            edits: tokio::sync::RwLock::new(()),
            status: Mutex::new(status),
        }
    }

    pub fn analysis(&self) -> &Arc<Analysis> {
        &self.analysis
    }

    pub fn webrtc(&self) -> Option<&Arc<WebRtc>> {
        self.webrtc.as_ref()
    }

    pub fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }

    /// What MQTT discovery announces: each camera, whether it watches for motion, its rules.
    pub fn discovered(&self) -> Vec<crate::analysis::mqtt::Discovered> {
        self.list()
            .iter()
            .map(|c| {
                let analysis = c.analysis();
                crate::analysis::mqtt::Discovered {
                    camera: c.id().to_string(),
                    motion: analysis.motion().is_some(),
                    alerts: analysis.alerts().iter().map(|r| r.name.clone()).collect(),
                }
            })
            .collect()
    }

    /// Each camera's own `keep` for its recordings, where it sets one.
    pub fn recording_keeps(&self) -> std::collections::HashMap<String, Duration> {
        self.list()
            .iter()
            .filter_map(|c| {
                let keep = c.config().record.as_ref()?.keep()?;
                Some((c.id().to_string(), keep))
            })
            .collect()
    }

    /// `[mjpeg]`: the rate and width of MJPEG pictures.
    pub fn mjpeg_settings(&self) -> mjpeg::Settings {
        self.mjpeg
    }

    /// `[hls]`.
    pub fn hls_settings(&self) -> hls::Settings {
        self.hls
    }

    /// `[publish]`.
    pub fn publish_settings(&self) -> PublishSettings {
        self.publish
    }

    pub fn list(&self) -> Vec<Arc<Camera>> {
        self.cameras.read().unwrap().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Result<Arc<Camera>, CameraError> {
        self.cameras
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| CameraError::NotFound(id.to_string()))
    }

    /// The stream of camera `id`, for outputs that watch it.
    pub fn stream(&self, id: &str) -> Result<Arc<Stream>, CameraError> {
        Ok(self.get(id)?.stream.clone())
    }

    fn check(&self, config: CameraConfig) -> Result<Checked, CameraError> {
        let mut problems = check_camera(&config, self.allow_exec);
        let analysis = match config.analysis.as_ref().map(AnalysisConfig::from_table) {
            None => AnalysisConfig::default(),
            Some(Ok(a)) => a,
            Some(Err(message)) => {
                if problems.is_empty() {
                    problems.push(Problem {
                        place: "analysis".into(),
                        message,
                    });
                }
                AnalysisConfig::default()
            }
        };
        if !problems.is_empty() {
            return Err(CameraError::Invalid(problems));
        }
        let mut spec = source_spec(&config, self.allow_exec).map_err(CameraError::Invalid)?;
        if let SourceSpec::Publish(rules) = &mut spec {
            *rules = PublishRules {
                timeout: self.publish.timeout,
                takeover: self.publish.takeover,
                key: config.publish_key.clone(),
            };
        }
        let idle = match config
            .idle_timeout
            .as_deref()
            .map(crate::common::parse_duration)
        {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                return Err(CameraError::Invalid(vec![Problem {
                    place: "idle_timeout".into(),
                    message,
                }]))
            }
        };
        Ok(Checked {
            on_demand: config.on_demand.then_some(idle),
            config,
            spec,
            analysis,
        })
    }

    /// Adds a camera and starts it; written to the config file.
    pub async fn add(&self, config: CameraConfig) -> Result<Arc<Camera>, CameraError> {
        let _edit = self.edits.write().await;
        let checked = self.check(config)?;
        if self.get(&checked.config.id).is_ok() {
            return Err(CameraError::Conflict(format!(
                "a camera with id {:?} already exists",
                checked.config.id
            )));
        }
        self.persist(Edit::Put(&checked.config)).await?;
        self.insert(checked).await
    }

    /// The camera a publisher names: as it is, or, with `[publish] auto_create`, a new
    /// `publish:` camera made for it (added like one from the API, config file included).
    pub async fn publish_target(&self, id: &str) -> Result<Arc<Stream>, CameraError> {
        match self.stream(id) {
            Err(CameraError::NotFound(_)) if self.publish.auto_create => {
                match self.add(CameraConfig::with_source(id, "publish:")).await {
                    Ok(camera) => {
                        tracing::info!(
                            camera = id,
                            "made for its first publisher ([publish] auto_create)"
                        );
                        Ok(camera.stream.clone())
                    }
                    // Two publishers raced to make it: the other one did.
                    Err(CameraError::Conflict(_)) => self.stream(id),
                    Err(e) => Err(e),
                }
            }
            found => found,
        }
    }

    /// Adds the cameras of the config at start-up (nothing is written back).
    pub async fn load(&self, cameras: Vec<CameraConfig>) -> Result<(), CameraError> {
        for config in cameras {
            self.insert(self.check(config)?).await?;
        }
        Ok(())
    }

    async fn insert(&self, checked: Checked) -> Result<Arc<Camera>, CameraError> {
        let id = checked.config.id.clone();
        let camera = Arc::new(Camera {
            stream: Arc::new(Stream::new(&id)),
            desired: Mutex::new(Desired {
                config: checked.config.clone(),
                analysis: checked.analysis.clone(),
            }),
            analysers: Mutex::new(None),
            snapshot: snapshot::Cache::default(),
            mjpeg: mjpeg::Mjpeg::default(),
            hls: hls::Hls::default(),
            recorder: Recorder::default(),
            changes: tokio::sync::Mutex::new(()),
        });
        let _turn = camera.changes.lock().await;
        {
            let mut cameras = self.cameras.write().unwrap();
            if cameras.contains_key(&id) {
                return Err(CameraError::Conflict(format!(
                    "a camera with id {id:?} already exists"
                )));
            }
            cameras.insert(id, camera.clone());
        }
        camera.stream.start(checked.spec, checked.on_demand).await;
        *camera.analysers.lock().unwrap() = self.analysis.start(&camera.stream, &checked.analysis);
        self.record(&camera);
        Ok(camera.clone())
    }

    /// Changes a camera (PATCH); what it restarts is decided by [`Change::between`].
    pub async fn update(&self, id: &str, patch: CameraPatch) -> Result<Arc<Camera>, CameraError> {
        let _edit = self.edits.write().await;
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        // Removed while this change waited for its turn.
        self.still_there(&camera)?;
        let new = patch
            .apply(&camera.config())
            .map_err(|p| CameraError::Invalid(vec![p]))?;
        let checked = self.check(new)?;
        if camera.config() == checked.config {
            return Ok(camera.clone());
        }
        self.persist(Edit::Put(&checked.config)).await?;
        self.apply(&camera, checked).await;
        Ok(camera.clone())
    }

    /// The one path from a desired config to the running camera (the caller holds the camera's
    /// turn): a new source replaces the source task — viewers stay attached and resume at its
    /// first keyframe — and new analysis settings replace the analysers; nothing else is
    /// touched. A change that restarts nothing (a recording's `keep`) is only kept. Returns
    /// `None` when the config is unchanged (nothing was done).
    async fn apply(&self, camera: &Camera, checked: Checked) -> Option<Change> {
        let old = camera.config();
        if old == checked.config {
            return None;
        }
        let change = Change::between(&old, &checked.config);
        *camera.desired.lock().unwrap() = Desired {
            config: checked.config.clone(),
            analysis: checked.analysis.clone(),
        };
        if change.source && camera.stream.state().is_running() {
            camera.stream.restart(checked.spec, checked.on_demand).await;
        }
        if change.analysis {
            let old = camera.analysers.lock().unwrap().take();
            if let Some(old) = old {
                old.stop().await;
            }
            *camera.analysers.lock().unwrap() =
                self.analysis.start(&camera.stream, &checked.analysis);
        }
        if change.recording {
            if camera.config().record.as_ref().is_some_and(|r| r.is_on()) {
                self.record(camera);
            } else {
                camera.recorder.stop().await;
            }
        }
        tracing::info!(camera = %camera.id(), ?change, "camera changed");
        Some(change)
    }

    /// Removes a camera: its analysers, its WebRTC peers and its stream (ending its viewers).
    pub async fn remove(&self, id: &str) -> Result<(), CameraError> {
        let _edit = self.edits.write().await;
        self.get(id)?;
        self.persist(Edit::Remove(id)).await?;
        self.take_out(id).await
    }

    async fn take_out(&self, id: &str) -> Result<(), CameraError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        {
            let mut cameras = self.cameras.write().unwrap();
            match cameras.get(id) {
                Some(c) if Arc::ptr_eq(c, &camera) => cameras.remove(id),
                _ => return Err(CameraError::NotFound(id.to_string())),
            };
        }
        // Analysers first: they are viewers of the stream.
        let analysers = camera.analysers.lock().unwrap().take();
        if let Some(a) = analysers {
            a.stop().await;
        }
        self.end_peers(id).await;
        camera.recorder.stop().await;
        camera.mjpeg.stop().await;
        camera.hls.stop().await;
        camera.stream.stop().await;
        Ok(())
    }

    pub async fn start(&self, id: &str) -> Result<Arc<Camera>, CameraError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        self.still_there(&camera)?;
        let checked = self.check(camera.config())?;
        camera.stream.start(checked.spec, checked.on_demand).await;
        Ok(camera.clone())
    }

    /// Stops a camera's source and ends its viewers; its analysers wait for it to start again.
    pub async fn stop(&self, id: &str) -> Result<Arc<Camera>, CameraError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        camera.stream.stop().await;
        self.end_peers(id).await;
        Ok(camera.clone())
    }

    async fn end_peers(&self, id: &str) {
        if let Some(webrtc) = &self.webrtc {
            webrtc.remove_camera(id).await;
        }
    }

    fn still_there(&self, camera: &Arc<Camera>) -> Result<(), CameraError> {
        match self.cameras.read().unwrap().get(camera.id()) {
            Some(c) if Arc::ptr_eq(c, camera) => Ok(()),
            _ => Err(CameraError::NotFound(camera.id().to_string())),
        }
    }

    /// Shutdown, first step: every camera's analysers, which hold viewers of the streams and
    /// leases on the workers, all cancelled at once and then awaited.
    pub async fn stop_analysers(&self) {
        let analysers: Vec<Analysers> = self
            .list()
            .iter()
            .filter_map(|c| c.analysers.lock().unwrap().take())
            .collect();
        for a in &analysers {
            a.cancel();
        }
        futures_util::future::join_all(analysers.into_iter().map(Analysers::stop)).await;
    }

    /// Shutdown: every recorder (each writes what it has and closes its file), then every
    /// stream, concurrently.
    pub async fn stop_streams(&self) {
        let cameras = self.list();
        futures_util::future::join_all(cameras.iter().map(|c| c.recorder.stop())).await;
        futures_util::future::join_all(cameras.iter().map(|c| c.stream.stop())).await;
    }

    /// Starts the camera's recorder if its config records.
    fn record(&self, camera: &Camera) {
        if camera.config().record.as_ref().is_some_and(|r| r.is_on()) {
            camera.recorder.start(&camera.stream, &self.recording);
        }
    }

    /// Writes the running cameras with `edit` made to the config file, verified by reading it
    /// back (the caller holds `edits`, so the running list cannot change meanwhile). On an
    /// error the file is as it was, the status and the log say why, and the caller must not
    /// apply the change.
    async fn persist(&self, edit: Edit<'_>) -> Result<(), CameraError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut known = file.known.lock().await;
        let mut cameras: Vec<CameraConfig> = self.list().iter().map(|c| c.config()).collect();
        match edit {
            Edit::Put(config) => match cameras.iter_mut().find(|c| c.id == config.id) {
                Some(c) => *c = config.clone(),
                None => cameras.push(config.clone()),
            },
            Edit::Remove(id) => cameras.retain(|c| c.id != id),
        }
        let path = file.path.clone();
        let written = tokio::task::spawn_blocking(move || write_cameras(&path, &cameras))
            .await
            .unwrap_or_else(|e| {
                Err(Problem {
                    place: String::new(),
                    message: format!("the write-back task failed: {e}"),
                })
            });
        let result = match written {
            Ok(text) => {
                *known = Some(text);
                Ok(())
            }
            Err(e) => {
                tracing::error!(place = %e.place, "config write-back refused: {}", e.message);
                Err(e)
            }
        };
        self.status.lock().unwrap().wrote(&result);
        result.map_err(|e| CameraError::Persist(format!("saving the config file failed: {e}")))
    }

    pub fn config_status(&self) -> ConfigStatus {
        self.status.lock().unwrap().clone()
    }
}
