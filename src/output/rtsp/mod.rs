//! The RTSP re-stream (work in progress): its sans-IO parts, tested on bytes. `message` reads
//! requests and interleaved frames and writes responses; `sdp` describes a camera. The server
//! that uses them (sessions, TCP and UDP delivery, auth) is not written yet.

pub mod message;
pub mod sdp;
