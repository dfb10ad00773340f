//! The hub: one [`Stream`] per camera, and the registry that adds, changes and removes cameras.
//!
//! The registry map is only locked for lookups and inserts, never across an `.await`; starting
//! and stopping a stream is serialised by the stream itself.

pub mod fanout;
pub mod packet;
pub mod state;
pub mod stats;
pub mod stream;
pub mod timeline;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::{check_camera, source_spec, write_cameras, CameraConfig, Problem};
use crate::source::SourceSpec;
pub use fanout::{Subscription, ViewerEnd};
pub use packet::{Packaged, Packet, RtpPayloads};
pub use state::{State, StateName};
pub use stream::{Stream, StreamView};

pub struct Camera {
    config: Mutex<CameraConfig>,
    pub stream: Stream,
    /// Held through a whole change (PATCH, start, stop, delete), so concurrent changes to one
    /// camera happen one after the other and config, file and running source agree.
    changes: tokio::sync::Mutex<()>,
}

impl Camera {
    pub fn config(&self) -> CameraConfig {
        self.config.lock().unwrap().clone()
    }
    pub fn id(&self) -> &str {
        self.stream.id()
    }
}

/// A change to a camera (PATCH); absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPatch {
    pub source: Option<String>,
    pub on_demand: Option<bool>,
    /// `Some(None)` (JSON null) removes the option.
    #[serde(default, deserialize_with = "present")]
    pub idle_timeout: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub transport: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub user_agent: Option<Option<String>>,
    /// Analysis settings (motion, vlm, asr); null removes them. Applied without a restart.
    #[serde(default, deserialize_with = "present_value")]
    pub analysis: Option<Option<serde_json::Value>>,
}

fn present_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<serde_json::Value>>, D::Error> {
    use serde::Deserialize;
    Option::<serde_json::Value>::deserialize(d).map(Some)
}

/// Distinguishes a field that is absent (keep) from one that is null (remove).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    use serde::Deserialize;
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug)]
pub enum HubError {
    NotFound(String),
    /// Problems with the request, each naming its field.
    Invalid(Vec<Problem>),
    Conflict(String),
    /// The change was made but could not be saved to the config file.
    Persist(String),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::NotFound(id) => write!(f, "no camera with id {id:?}"),
            HubError::Invalid(problems) => {
                let parts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                f.write_str(&parts.join("; "))
            }
            HubError::Conflict(m) | HubError::Persist(m) => f.write_str(m),
        }
    }
}

/// Default time an on-demand camera keeps its source after the last viewer leaves.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The idle timeout of an on-demand camera; `None` for a camera that always runs.
fn on_demand(config: &CameraConfig) -> Option<Duration> {
    config.on_demand.then(|| {
        config
            .idle_timeout
            .as_deref()
            .and_then(|t| crate::common::parse_duration(t).ok())
            .unwrap_or(DEFAULT_IDLE_TIMEOUT)
    })
}

pub struct Hub {
    cameras: RwLock<BTreeMap<String, Arc<Camera>>>,
    allow_exec: bool,
    /// Where API changes are written back; `None` when serving without a config file.
    config_path: Option<PathBuf>,
    /// Serialises config-file writes, so two changes can't interleave their rename.
    write_lock: tokio::sync::Mutex<()>,
}

impl Hub {
    pub fn new(allow_exec: bool, config_path: Option<PathBuf>) -> Hub {
        Hub {
            cameras: RwLock::new(BTreeMap::new()),
            allow_exec,
            config_path,
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn list(&self) -> Vec<Arc<Camera>> {
        self.cameras.read().unwrap().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Result<Arc<Camera>, HubError> {
        self.cameras
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| HubError::NotFound(id.to_string()))
    }

    fn validate(&self, config: &CameraConfig) -> Result<SourceSpec, HubError> {
        let problems = check_camera(config, self.allow_exec);
        if !problems.is_empty() {
            return Err(HubError::Invalid(problems));
        }
        source_spec(config, self.allow_exec).map_err(HubError::Invalid)
    }

    /// Adds a camera and starts it. `persist` writes the config file (API changes do; loading
    /// the config at start-up does not).
    pub async fn add(&self, config: CameraConfig, persist: bool) -> Result<Arc<Camera>, HubError> {
        let spec = self.validate(&config)?;
        let camera = Arc::new(Camera {
            stream: Stream::new(&config.id),
            config: Mutex::new(config.clone()),
            changes: tokio::sync::Mutex::new(()),
        });
        {
            let mut cameras = self.cameras.write().unwrap();
            if cameras.contains_key(&config.id) {
                return Err(HubError::Conflict(format!(
                    "a camera with id {:?} already exists",
                    config.id
                )));
            }
            cameras.insert(config.id.clone(), camera.clone());
        }
        camera.stream.start(spec, on_demand(&config)).await;
        if persist {
            self.persist().await?;
        }
        Ok(camera)
    }

    /// Changes a camera. A new source restarts the stream if it was running.
    pub async fn update(&self, id: &str, patch: CameraPatch) -> Result<Arc<Camera>, HubError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        // Removed while this change waited for its turn.
        self.still_there(&camera)?;
        let mut new = camera.config();
        if let Some(source) = patch.source {
            // Sent back as shown (credentials masked): the stored credentials stay.
            new.source = crate::common::restore_masked_credentials(&source, &new.source);
        }
        if let Some(on_demand) = patch.on_demand {
            new.on_demand = on_demand;
        }
        if let Some(v) = patch.idle_timeout {
            new.idle_timeout = v;
        }
        if let Some(v) = patch.transport {
            new.transport = v;
        }
        if let Some(v) = patch.timeout {
            new.timeout = v;
        }
        if let Some(v) = patch.user_agent {
            new.user_agent = v;
        }
        if let Some(v) = patch.analysis {
            let old_analysis = new.analysis.clone();
            new.analysis = match v {
                None => None,
                Some(json) => Some(serde_json::from_value::<toml::Table>(json).map_err(|e| {
                    HubError::Invalid(vec![Problem {
                        place: "analysis".into(),
                        message: format!("must be an object of analysers: {e}"),
                    }])
                })?),
            };
            // A client that read the camera got its secrets masked; sending them back keeps them.
            if let Some(analysis) = new.analysis.as_mut() {
                crate::config::restore_masked_secrets(analysis, old_analysis.as_ref());
            }
        }
        let spec = self.validate(&new)?;
        let old = std::mem::replace(&mut *camera.config.lock().unwrap(), new.clone());
        // Analysis settings are applied by the analysis capability without a restart.
        let restart = CameraConfig {
            analysis: None,
            ..old.clone()
        } != CameraConfig {
            analysis: None,
            ..new.clone()
        };
        // Viewers stay attached through the restart and resume at the new source's keyframe.
        if restart && camera.stream.state().is_running() {
            camera.stream.restart(spec, on_demand(&new)).await;
        }
        self.persist().await?;
        Ok(camera.clone())
    }

    /// Removes a camera: stops it (ending its viewers) and forgets it.
    pub async fn remove(&self, id: &str) -> Result<(), HubError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        {
            let mut cameras = self.cameras.write().unwrap();
            match cameras.get(id) {
                Some(c) if Arc::ptr_eq(c, &camera) => cameras.remove(id),
                _ => return Err(HubError::NotFound(id.to_string())),
            };
        }
        camera.stream.stop().await;
        self.persist().await
    }

    pub async fn start(&self, id: &str) -> Result<Arc<Camera>, HubError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        self.still_there(&camera)?;
        let config = camera.config();
        let spec = self.validate(&config)?;
        camera.stream.start(spec, on_demand(&config)).await;
        Ok(camera.clone())
    }

    pub async fn stop(&self, id: &str) -> Result<Arc<Camera>, HubError> {
        let camera = self.get(id)?;
        let _turn = camera.changes.lock().await;
        camera.stream.stop().await;
        Ok(camera.clone())
    }

    fn still_there(&self, camera: &Arc<Camera>) -> Result<(), HubError> {
        match self.cameras.read().unwrap().get(camera.id()) {
            Some(c) if Arc::ptr_eq(c, camera) => Ok(()),
            _ => Err(HubError::NotFound(camera.id().to_string())),
        }
    }

    /// Stops every camera, concurrently, and waits for all of them.
    pub async fn stop_all(&self) {
        let cameras = self.list();
        futures_util::future::join_all(cameras.iter().map(|c| c.stream.stop())).await;
    }

    async fn persist(&self) -> Result<(), HubError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let _guard = self.write_lock.lock().await;
        let cameras: Vec<CameraConfig> = self.list().iter().map(|c| c.config()).collect();
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_cameras(&path, &cameras))
            .await
            .map_err(|e| HubError::Persist(format!("saving the config failed: {e}")))?
            .map_err(|e| HubError::Persist(format!("saving the config failed: {e}")))
    }
}
