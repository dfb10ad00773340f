//! Demand counting for things that run only while someone uses them: on-demand cameras (their
//! viewers) and on-demand workers (the analysers using them).
//!
//! A [`Demand`] hands out [`DemandLease`]s; the owner of the on-demand resource waits for the
//! first lease ([`wait_wanted`](Demand::wait_wanted)) to start it, and for the leases to be gone
//! for an idle timeout ([`wait_idle`](Demand::wait_idle)) to stop it.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub struct Demand {
    count: watch::Sender<usize>,
}

impl Default for Demand {
    fn default() -> Self {
        Demand::new()
    }
}

/// Keeps its [`Demand`] wanted while it lives.
#[derive(Debug)]
pub struct DemandLease {
    count: watch::Sender<usize>,
}

impl Drop for DemandLease {
    fn drop(&mut self) {
        self.count.send_modify(|c| *c -= 1);
    }
}

impl Demand {
    pub fn new() -> Demand {
        Demand {
            count: watch::channel(0).0,
        }
    }

    pub fn lease(&self) -> DemandLease {
        self.count.send_modify(|c| *c += 1);
        DemandLease {
            count: self.count.clone(),
        }
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Returns once at least one lease exists.
    pub async fn wait_wanted(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|c| *c > 0).await;
    }

    /// Returns once no lease has existed for `idle` without interruption.
    pub async fn wait_idle(&self, idle: Duration) {
        let mut rx = self.count.subscribe();
        loop {
            let _ = rx.wait_for(|c| *c == 0).await;
            let expired = tokio::select! {
                _ = tokio::time::sleep(idle) => true,
                _ = rx.wait_for(|c| *c > 0) => false,
            };
            if expired && *rx.borrow() == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_means_no_lease_for_the_whole_timeout() {
        let demand = Demand::new();
        let lease = demand.lease();
        assert_eq!(demand.count(), 1);
        tokio::time::timeout(Duration::from_secs(1), demand.wait_wanted())
            .await
            .unwrap();
        let idle = Duration::from_millis(200);
        let start = tokio::time::Instant::now();
        drop(lease);
        // A viewer that comes and goes after 100 ms restarts the idle clock.
        let again = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let l = demand.lease();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(l);
        };
        tokio::join!(demand.wait_idle(idle), again);
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
    }
}
