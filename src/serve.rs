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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Config, DEFAULT_LISTEN};
use crate::hub::Hub;
use crate::output::snapshot::Snapshots;
use crate::supervisor::Workers;

pub struct ServeOptions {
    pub config_path: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub insecure: bool,
}

/// How long streams get to stop after the HTTP server has closed.
const STOP_STREAMS_BUDGET: Duration = Duration::from_millis(1500);
/// How long open HTTP connections get to drain after the shutdown signal; together with
/// `STOP_STREAMS_BUDGET` this keeps SIGTERM-to-exit under 2 s.
const HTTP_DRAIN_BUDGET: Duration = Duration::from_millis(300);

pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let config = match &options.config_path {
        Some(path) => Config::load(path).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            anyhow::anyhow!(
                "{} has {} problem(s):\n{}",
                path.display(),
                problems.len(),
                list.join("\n")
            )
        })?,
        None => Config::default(),
    };
    let listen: SocketAddr = match (options.listen, &config.server.listen) {
        (Some(addr), _) => addr,
        (None, Some(text)) => text.parse().context("server.listen")?,
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

    let hub = Arc::new(Hub::new(
        config.sources.allow_exec,
        options.config_path.clone(),
    ));
    // Without a config file, serve the demo camera so a new user sees video at once.
    let cameras = if options.config_path.is_some() {
        config.camera.clone()
    } else {
        config.cameras_or_demo()
    };
    for camera in cameras {
        let id = camera.id.clone();
        hub.add(camera, false)
            .await
            .map_err(|e| anyhow::anyhow!("camera {id:?}: {e}"))?;
    }

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE,
            Some(Duration::from_secs(120)),
        )
        .install_recorder()
        .ok();
    let webrtc = match crate::output::webrtc::WebRtc::start(
        config.webrtc_listen(),
        &config.webrtc_candidates(),
    )
    .await
    {
        Ok(w) => Some(Arc::new(w)),
        Err(e) => {
            tracing::error!("WebRTC is off: cannot open its UDP port: {e}");
            None
        }
    };
    let workers = Arc::new(Workers::new(&config.worker));
    workers.start().await;
    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState {
        hub: hub.clone(),
        snapshots: Snapshots::default(),
        token,
        metrics,
        shutdown: shutdown.clone(),
        webrtc: webrtc.clone(),
        workers: workers.clone(),
    });

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("livelens listening on http://{local}/");
    tracing::info!(%local, cameras = hub.list().len(), "serving");

    let signals = crate::resources::spawn_task(watch_signals(shutdown.clone()));
    let server = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        result = &mut server => result.context("HTTP server")?,
        // Connections that do not drain within the budget are dropped with the runtime.
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(HTTP_DRAIN_BUDGET).await;
        } => tracing::warn!("HTTP connections still open at shutdown; closing them"),
    }
    tracing::info!("stopping cameras and workers");
    crate::supervisor::begin_shutdown();
    let stop_all = async {
        if let Some(w) = &webrtc {
            w.stop().await;
        }
        tokio::join!(hub.stop_all(), workers.stop());
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
