//! The hub: one [`Stream`] per camera — its source task, its state, its GOP cache and the
//! fan-out of its frames to every viewer. Starting and stopping a stream is serialised by the
//! stream itself; which cameras exist, and what changes them, is decided above (`cameras`).

pub mod fanout;
pub mod packet;
pub mod state;
pub mod stats;
pub mod stream;
pub mod timeline;

pub use fanout::{Subscription, ViewerEnd};
pub use packet::{Packaged, Packet, RtpPayloads};
pub use state::{State, StateName};
pub use stream::{Stream, StreamView};
