//! RTMP publishing: `rtmp://HOST:1935/live/{camera}` for FFmpeg, OBS and the encoders that
//! only speak RTMP. Publish only (livelens serves viewers over its other outputs).
//!
//! rml_rtmp does the handshake and the session (chunking, commands) sans-IO; `chunks` reads the
//! chunk headers ahead of it and bounds what a connection may make livelens hold; `flv` turns
//! the FLV tag bodies it hands over into the camera's frames; both sans-IO and tested on bytes;
//! `server` is the IO around them.

mod chunks;
pub mod flv;
mod server;

pub use server::{RtmpServer, RtmpSettings};
