//! The RTSP re-stream: `rtsp://HOST:8554/{camera}` for VLC, NVRs, Home Assistant and FFmpeg.
//!
//! The protocol is sans-IO and tested on bytes: `message` reads requests and interleaved frames
//! and writes responses, `sdp` describes a camera, `session` is one connection's state machine
//! (RFC 2326), `auth` checks Basic and Digest credentials. `server` is the IO around them: the
//! listener, a task per connection, the UDP port pair. The RTP payloads are the camera's, made
//! once per frame and shared with WebRTC (`output::rtp`).

pub mod auth;
pub mod message;
pub mod sdp;
mod server;
pub mod session;

pub use server::{FindPublishTarget, FindStream, RtspServer, RtspSettings};
