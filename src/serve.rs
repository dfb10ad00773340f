//! `livelens serve`: build the hub from the config, serve the API, and shut down in order.
//!
//! Shutdown order (principle 1): a signal cancels the root token → the HTTP server stops
//! accepting and drains → every stream is stopped and awaited → the process exits 0. The whole
//! sequence is bounded so SIGTERM is answered within 2 s (children get a shorter grace period
//! once shutdown begins); a second SIGINT SIGKILLs every child group and exits at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::analysis::events::EventStore;
use crate::analysis::mqtt::Mqtt;
use crate::analysis::Analysis;
use crate::api::{self, AppState};
use crate::cameras::Cameras;
use crate::config::{Config, DEFAULT_LISTEN};
use crate::output::rtmp::{RtmpServer, RtmpSettings};
use crate::output::rtsp::auth::Credential;
use crate::output::rtsp::{FindPublishTarget, FindStream, RtspServer};
use crate::recording::{Recording, RecordingSettings};
use crate::supervisor::Workers;

pub struct ServeOptions {
    pub config_path: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub insecure: bool,
    /// Watch the config file and reload it when it changes (SIGHUP reloads it either way).
    pub watch: bool,
}

/// How long streams get to stop after the HTTP server has closed.
const STOP_STREAMS_BUDGET: Duration = Duration::from_millis(1500);
/// How long open HTTP connections get to drain after the shutdown signal; together with
/// `STOP_STREAMS_BUDGET` this keeps SIGTERM-to-exit under 2 s.
const HTTP_DRAIN_BUDGET: Duration = Duration::from_millis(300);

pub async fn run(mut options: ServeOptions) -> anyhow::Result<()> {
    crate::resources::map_large_allocations();
    // Without --config: the default file when there is one; otherwise the demo camera, and
    // the first change made in the UI or API creates the default file, so nothing is lost.
    let mut save_to = None;
    if options.config_path.is_none() {
        match crate::config::default_path() {
            Some(path) if path.exists() => {
                tracing::info!(
                    "reading {} (the default config file; --config names another)",
                    path.display()
                );
                options.config_path = Some(path);
            }
            Some(path) => {
                tracing::info!(
                    "no config file: serving the demo camera; cameras added or changed in the UI or API are saved to {}",
                    path.display()
                );
                save_to = Some(path);
            }
            None => tracing::warn!(
                "no config file, and neither XDG_CONFIG_HOME nor HOME to keep one in: \
                 cameras added in the UI or API are lost on restart (pass --config FILE)"
            ),
        }
    }
    let loaded = match &options.config_path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let config = match (&options.config_path, &loaded) {
        (Some(path), Some(text)) => Config::parse(text).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            anyhow::anyhow!(
                "{} has {} problem(s):\n{}",
                path.display(),
                problems.len(),
                list.join("\n")
            )
        })?,
        _ => Config::default(),
    };
    let listen: SocketAddr = match (options.listen, config.typed.listen) {
        (Some(addr), _) | (None, Some(addr)) => addr,
        (None, None) => DEFAULT_LISTEN.parse()?,
    };
    let token = std::env::var("LIVELENS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or(config.server.token.clone());
    if !listen.ip().is_loopback() && token.is_none() && !options.insecure {
        bail!(
            "refusing to listen on {listen} without an API token: anyone on the network could \
             change cameras. Set [server] token or LIVELENS_TOKEN, or pass --insecure."
        );
    }

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(120)),
        )
        .install_recorder()
        .ok();
    let webrtc = match crate::output::webrtc::WebRtc::start(
        config.webrtc_listen(listen),
        &config.typed.webrtc_candidates,
    )
    .await
    {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::error!("WebRTC is off: cannot open its UDP port: {e}");
            None
        }
    };
    let shutdown_token = CancellationToken::new();
    let workers = Arc::new(Workers::new(&config.worker));
    workers.start().await;
    // A relative path is relative to the config file, like every path in it.
    let beside_config = |p: PathBuf| match &options.config_path {
        Some(c) if p.is_relative() => c.parent().unwrap_or(std::path::Path::new(".")).join(p),
        _ => p,
    };
    let storage = config.typed.storage_path.clone().map(beside_config);
    let recording = Arc::new(Recording::new(RecordingSettings {
        path: beside_config(config.typed.recording.path.clone()),
        ..config.typed.recording.clone()
    }));
    let events = Arc::new(
        EventStore::open(storage.as_deref()).map_err(|e| anyhow::anyhow!("[storage] {e}"))?,
    );
    let analysis = Arc::new(Analysis::new(events.clone(), workers.clone()));
    let cameras = Arc::new(Cameras::new(
        analysis.clone(),
        webrtc.clone(),
        recording.clone(),
        (config.typed.mjpeg, config.typed.hls, config.typed.publish),
        config.sources.allow_exec,
        options.config_path.clone().or(save_to),
    ));
    // Without a config file, serve the demo camera so a new user sees video at once.
    let configured = if options.config_path.is_some() {
        config.camera.clone()
    } else {
        config.cameras_or_demo()
    };
    cameras
        .load(configured)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(text) = loaded {
        cameras.loaded_from(text).await;
    }
    let rtsp = start_rtsp(&config, token.as_deref(), options.insecure, &cameras).await?;
    let rtmp = start_rtmp(&config, token.as_deref(), options.insecure, &cameras).await?;
    let housekeeping = crate::resources::spawn_task(return_memory(shutdown_token.clone()));
    let retention = crate::resources::spawn_task(prune_events(
        events.clone(),
        config.typed.keep,
        shutdown_token.clone(),
    ));
    let recording_retention =
        crate::resources::spawn_task(prune_recordings(cameras.clone(), shutdown_token.clone()));
    let shutdown = shutdown_token;
    let state = Arc::new(AppState {
        cameras: cameras.clone(),
        token,
        access: api::Access::new(
            &config.server.allowed_hosts,
            &config.server.allowed_origins,
            &config.server.player_origins,
        ),
        metrics,
        shutdown: shutdown.clone(),
        webrtc: webrtc.clone(),
        rtsp: rtsp.clone(),
        rtmp: rtmp.clone(),
        workers: workers.clone(),
        analysis: analysis.clone(),
        mse: config.typed.mse,
    });

    // A server holds a descriptor per viewer: use all the process may have, and keep a quarter
    // (at least 256) for cameras, peers, children and files.
    let open_files = api::raise_open_file_limit() as usize;
    let fit = open_files.saturating_sub((open_files / 4).max(256)).max(64);
    let limits = api::Limits {
        total: config.server.max_connections.unwrap_or(10_000).min(fit),
        per_ip: config.server.max_connections_per_ip.unwrap_or(2_000),
        header_timeout: config.typed.header_timeout,
    };
    tracing::info!(open_files, ?limits, "connection limits");
    let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let mut mqtt = config.typed.mqtt.as_ref().map(|endpoint| {
        let cameras = cameras.clone();
        let discovered: crate::analysis::mqtt::DiscoverySource =
            Arc::new(move || cameras.discovered());
        Mqtt::start(
            endpoint,
            events.clone(),
            discovered,
            config
                .typed
                .mqtt_public_url
                .clone()
                .unwrap_or_else(|| format!("http://{local}")),
        )
    });
    let signals = crate::resources::spawn_task(watch_signals(shutdown.clone()));
    // Watching before the line below: an edit made as soon as livelens says it listens is seen.
    let reload = crate::cameras::reload::spawn(
        cameras.clone(),
        config.clone(),
        options.watch,
        shutdown.clone(),
    )
    .context("cannot install the SIGHUP handler")?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("livelens listening on http://{local}/");
    tracing::info!(%local, cameras = cameras.list().len(), "serving");
    api::serve(
        listener,
        api::router(state),
        limits,
        shutdown.clone(),
        HTTP_DRAIN_BUDGET,
    )
    .await;
    tracing::info!("stopping cameras and workers");
    crate::supervisor::begin_shutdown();
    let stop_all = async {
        if let Some(w) = &webrtc {
            w.stop().await;
        }
        if let Some(r) = &rtsp {
            r.stop().await;
        }
        if let Some(r) = &rtmp {
            r.stop().await;
        }
        let _ = reload.await;
        // Analysers first: they hold viewers of the streams and leases on the workers.
        cameras.stop_analysers().await;
        tokio::join!(cameras.stop_streams(), workers.stop());
        if let Some(m) = &mut mqtt {
            m.stop().await;
        }
        let _ = retention.await;
        let _ = recording_retention.await;
        let _ = housekeeping.await;
    };
    if tokio::time::timeout(STOP_STREAMS_BUDGET, stop_all)
        .await
        .is_err()
    {
        crate::supervisor::kill_all_now();
        bail!("cameras did not stop within {STOP_STREAMS_BUDGET:?}");
    }
    signals.abort();
    let _ = signals.await;
    tracing::info!("stopped");
    Ok(())
}

/// The RTSP re-stream, unless `[rtsp] enabled = false` or its port cannot be opened (then the
/// rest runs without it). Clients authenticate when `[rtsp] users` are set or the server
/// listens beyond loopback (then with a user's password or the API token); off loopback with
/// neither, livelens refuses to start rather than serve every camera to the network.
/// Publishers need the API token (or the camera's publish key) wherever it is set, as over
/// WHIP and RTMP.
async fn start_rtsp(
    config: &Config,
    token: Option<&str>,
    insecure: bool,
    cameras: &Arc<Cameras>,
) -> anyhow::Result<Option<Arc<RtspServer>>> {
    let settings = &config.typed.rtsp;
    if !settings.enabled {
        return Ok(None);
    }
    let mut credentials: Vec<Credential> = settings
        .users
        .iter()
        .map(|(user, password)| Credential {
            user: Some(user.clone()),
            password: password.clone(),
        })
        .collect();
    let needed = !credentials.is_empty() || !settings.listen.ip().is_loopback();
    if needed {
        credentials.extend(token.map(|t| Credential {
            user: None,
            password: t.to_string(),
        }));
        if credentials.is_empty() && !insecure {
            bail!(
                "refusing to serve RTSP on {} without credentials: anyone on the network could \
                 watch every camera. Set [rtsp] users or an API token, or pass --insecure.",
                settings.listen
            );
        }
    } else {
        credentials.clear();
    }
    let (find, find_publish_target) = lookups(cameras);
    let rtsp = RtspServer::start(
        crate::output::rtsp::RtspSettings {
            listen: settings.listen,
            credentials,
            token: token.map(str::to_string),
            session_timeout: settings.session_timeout,
        },
        find,
        find_publish_target,
    )
    .await;
    match rtsp {
        Ok(r) => Ok(Some(Arc::new(r))),
        Err(e) => {
            tracing::error!("the RTSP re-stream is off: cannot open its port: {e}");
            Ok(None)
        }
    }
}

/// How the protocol servers find cameras (the registry is above the outputs): a camera's
/// stream, and the camera a publisher names (made for it with `[publish] auto_create`).
fn lookups(cameras: &Arc<Cameras>) -> (FindStream, FindPublishTarget) {
    let find: FindStream = {
        let cameras = cameras.clone();
        Arc::new(move |id: &str| cameras.stream(id).ok())
    };
    let find_publish_target: FindPublishTarget = {
        let cameras = cameras.clone();
        Arc::new(move |id: String| {
            let cameras = cameras.clone();
            Box::pin(async move { cameras.publish_target(&id).await.ok() })
        })
    };
    (find, find_publish_target)
}

/// The RTMP publish server, unless `[rtmp] enabled = false` or its port cannot be opened.
/// Publishers give the API token when one is set; off loopback without one, livelens refuses
/// to start (anyone on the network could feed any `publish:` camera) unless `--insecure`.
async fn start_rtmp(
    config: &Config,
    token: Option<&str>,
    insecure: bool,
    cameras: &Arc<Cameras>,
) -> anyhow::Result<Option<Arc<RtmpServer>>> {
    let settings = &config.typed.rtmp;
    if !settings.enabled {
        return Ok(None);
    }
    if token.is_none() && !settings.listen.ip().is_loopback() && !insecure {
        bail!(
            "refusing to take RTMP publishers on {} without a token: anyone on the network \
             could publish to every publish: camera. Set an API token, or pass --insecure.",
            settings.listen
        );
    }
    let (find, find_publish_target) = lookups(cameras);
    let rtmp = RtmpServer::start(
        RtmpSettings {
            listen: settings.listen,
            token: token.map(str::to_string),
        },
        find,
        find_publish_target,
    )
    .await;
    match rtmp {
        Ok(r) => Ok(Some(Arc::new(r))),
        Err(e) => {
            tracing::error!("RTMP publishing is off: cannot open its port: {e}");
            Ok(None)
        }
    }
}

/// The HTTP listener, with a deep accept queue: with the default of 128, a burst of clients
/// (a page of many players, a reconnecting wall of viewers) waits out SYN retransmits of 1 s
/// and more while the server itself is idle.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// First SIGINT or SIGTERM: graceful shutdown. A second SIGINT: exit now.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tracing::debug!("signal handlers installed");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down (press Ctrl+C again to force)");
    shutdown.cancel();
    int.recv().await;
    tracing::warn!("second interrupt: exiting now");
    crate::supervisor::kill_all_now();
    std::process::exit(130);
}

/// Every 10 s, freed heap goes back to the system (see `resources::return_freed_memory`), so
/// memory returns near its baseline within a minute after a load.
async fn return_memory(shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let _ = tokio::task::spawn_blocking(crate::resources::return_freed_memory).await;
    }
}

/// Deletes recordings past their camera's `keep` or beyond `[recording] max_size`: at start,
/// hourly, and each time a segment is closed (a size limit must hold between the hours).
async fn prune_recordings(cameras: Arc<Cameras>, shutdown: CancellationToken) {
    loop {
        let recording = cameras.recording().clone();
        let keeps = cameras.recording_keeps();
        match tokio::task::spawn_blocking(move || recording.prune(&keeps)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!("deleted {n} recorded segments (retention)"),
            Ok(Err(e)) => tracing::warn!("recording retention failed: {e}"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = cameras.recording().wait_segment_closed() => {}
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Deletes events older than `keep`, at start and then hourly, until shutdown.
async fn prune_events(events: Arc<EventStore>, keep: Duration, shutdown: CancellationToken) {
    loop {
        let store = events.clone();
        match tokio::task::spawn_blocking(move || store.prune(keep)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!("deleted {n} events older than {keep:?}"),
            Ok(Err(e)) => tracing::warn!("pruning events failed: {e}"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
