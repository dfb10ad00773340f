//! What the RTSP and RTMP servers share: the accept loop (a connection limit and one per client
//! address, more are closed at once with a warning; a task per connection counted as `counted` and tracked for shutdown,
//! each ended when the server is cancelled, its reason for ending in the debug log), and the
//! running tasks, stopped together.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// Connections open per client address, each held by an [`AddressSlot`]: one address filling
/// every slot of a server would refuse everyone else.
#[derive(Clone)]
pub struct AddressSlots {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its address's count, given back when dropped.
pub struct AddressSlot {
    address: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddressSlots {
    pub fn new(limit: usize) -> AddressSlots {
        AddressSlots {
            limit,
            open: Arc::default(),
        }
    }

    /// A place for a connection from `address`, unless it has `limit` open already.
    pub fn take(&self, address: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client on an IPv6 socket is the same client as on an IPv4 one.
        let address = address.to_canonical();
        let mut open = self.open.lock().unwrap();
        let n = open.entry(address).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            address,
            open: self.open.clone(),
        })
    }

    /// Addresses with a connection open (the map never holds more).
    pub fn addresses(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Accepts until `cancel`; `serve` makes each connection's future, whose output says why it
/// ended. At most `limit` connections are open, `per_address` of them from one address.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop<F, Fut, End>(
    what: &'static str,
    listener: TcpListener,
    limit: usize,
    per_address: usize,
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
    let addresses = AddressSlots::new(per_address);
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
        let Some(address_slot) = addresses.take(peer.ip()) else {
            tracing::warn!(%peer, "{what} connection refused: {per_address} already open from its address");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{what} connection refused: {limit} already open");
            continue;
        };
        let connection = serve(socket, peer);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _slot = (slot, address_slot);
            let _counted = Counted::new(counted);
            tokio::select! {
                _ = cancel.cancelled() => {}
                end = connection => tracing::debug!(%peer, "{what} connection closed: {end}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_limit_and_gets_its_places_back() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none());
        // The same client seen through an IPv6 socket.
        assert!(slots.take("::ffff:127.0.0.1".parse().unwrap()).is_none());
        let other = slots.take(b).unwrap();
        drop(first);
        let _third = slots.take(a).unwrap();
        drop(other);
        assert_eq!(slots.addresses(), 1);
    }
}
