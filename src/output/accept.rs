//! What the RTSP and RTMP servers share: the accept loop (a connection limit, more are closed at
//! once with a warning; a task per connection counted as `counted` and tracked for shutdown,
//! each ended when the server is cancelled, its reason for ending in the debug log), and the
//! running tasks, stopped together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::resources::{Counted, Resource};

/// A server's own tasks (its accept loop, its UDP readers) and its connections.
pub struct ServerTasks {
    cancel: CancellationToken,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    connections: TaskTracker,
}

impl ServerTasks {
    pub fn new(
        cancel: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
        connections: TaskTracker,
    ) -> ServerTasks {
        ServerTasks {
            cancel,
            tasks: tokio::sync::Mutex::new(tasks),
            connections,
        }
    }

    /// Closes the listener and every connection, and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        for task in self.tasks.lock().await.drain(..) {
            let _ = task.await;
        }
        self.connections.close();
        self.connections.wait().await;
    }
}

/// Accepts until `cancel`; `serve` makes each connection's future, whose output says why it
/// ended.
pub async fn accept_loop<F, Fut, End>(
    what: &'static str,
    listener: TcpListener,
    limit: usize,
    counted: Resource,
    connections: TaskTracker,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = End> + Send + 'static,
    End: std::fmt::Display,
{
    let slots = Arc::new(Semaphore::new(limit));
    loop {
        let (socket, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    tracing::warn!("{what} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{what} connection refused: {limit} already open");
            continue;
        };
        let connection = serve(socket, peer);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _counted = Counted::new(counted);
            tokio::select! {
                _ = cancel.cancelled() => {}
                end = connection => tracing::debug!(%peer, "{what} connection closed: {end}"),
            }
        });
    }
}
