//! Outputs: the ways a viewer gets a camera's picture, one file or folder per output. The RTSP and
//! WebRTC servers also take publishers (`publish:` cameras), whose RTP `rtp_ingest` turns back
//! into frames.

pub mod fmp4;
pub mod frames;
pub mod hls;
pub mod mjpeg;
pub mod mse;
pub mod rtp;
pub mod rtp_ingest;
pub mod rtsp;
pub mod snapshot;
pub mod webrtc;
