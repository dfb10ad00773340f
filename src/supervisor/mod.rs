//! Child processes and model workers (principle 4): every child is owned, stopped with SIGTERM →
//! grace → SIGKILL of its process group, always reaped, and dies with livelens.

pub mod process;
pub mod reaper;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use process::{kill_all_now, split_command, ChildProcess, ChildSpec, DEFAULT_GRACE};
pub use worker::{WorkerConfig, WorkerLease, WorkerView, Workers};

/// Grace period once shutdown has begun: livelens promises to exit within 2 s of SIGTERM, so
/// children get less time than the usual [`DEFAULT_GRACE`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// From now on, children are stopped with [`SHUTDOWN_GRACE`].
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::Relaxed);
}

/// The grace period between SIGTERM and SIGKILL for a stop that starts now.
pub fn stop_grace() -> Duration {
    if SHUTTING_DOWN.load(Ordering::Relaxed) {
        SHUTDOWN_GRACE
    } else {
        DEFAULT_GRACE
    }
}
