//! Outputs: the ways a viewer gets a camera's picture, one file or folder per output. The RTSP and
//! WebRTC servers also take publishers (`publish:` cameras), whose RTP `rtp_ingest` turns back
//! into frames; the RTMP server (`rtmp`) only takes publishers.

pub mod accept;
pub mod fmp4;
pub mod frames;
pub mod hls;
pub mod mjpeg;
pub mod mse;
pub mod rtmp;
pub mod rtp;
pub mod rtp_ingest;
pub mod rtsp;
pub mod snapshot;
pub mod webrtc;

use std::sync::Arc;

use crate::hub::Stream;

/// The camera a publisher names (made for it when `[publish] auto_create` is on). The camera
/// registry is above the outputs, so the protocol servers get this closure at start.
pub type FindPublishTarget = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, Option<Arc<Stream>>> + Send + Sync,
>;
