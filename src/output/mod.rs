//! Outputs: the ways a viewer gets a camera's picture. One file or folder per output.

pub mod fmp4;
pub mod frames;
pub mod hls;
pub mod mjpeg;
pub mod mse;
pub mod rtp;
pub mod rtsp;
pub mod snapshot;
pub mod webrtc;
