//! Counted resources (DESIGN principle 5).
//!
//! Every long-lived thing livelens creates — a task, a thread, a viewer, a live stream, a socket,
//! a child process — holds a [`Counted`] guard for exactly as long as it exists. The guard increments
//! a gauge when it is created and decrements it when it is dropped, so the numbers at
//! `GET /api/resources` cannot drift from reality the way hand-kept bookkeeping does: a leak shows
//! up as a count that does not return to its baseline.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;

/// What a [`Counted`] guard counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A stream whose source is delivering frames.
    StreamLive,
    /// A tokio task or a dedicated thread spawned by livelens (not HTTP connection tasks).
    Task,
    /// A viewer attached to a stream, by output kind.
    Viewer(ViewerKind),
    PeerConnection,
    WebSocket,
    ChildProcess,
    /// What re-encodes a camera for its viewers: the audio → Opus transcoder for WebRTC, the
    /// MJPEG encoder (each at most one per camera).
    Transcoder,
    /// An accepted HTTP connection, until its socket closes (WebSockets included).
    HttpConnection,
    /// An accepted RTSP connection, until its socket closes.
    RtspConnection,
    /// An accepted RTMP connection, until its socket closes.
    RtmpConnection,
    /// A publisher feeding a `publish:` camera, by protocol, until it leaves.
    Publisher(PublisherKind),
    /// A playback body (`GET /api/playback/get`) streaming, until it ends or its client goes.
    PlaybackDownload,
}

/// The protocols a publisher can send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherKind {
    Rtsp,
    Whip,
    Rtmp,
}

impl PublisherKind {
    pub const ALL: [PublisherKind; 3] = [
        PublisherKind::Rtsp,
        PublisherKind::Whip,
        PublisherKind::Rtmp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PublisherKind::Rtsp => "rtsp",
            PublisherKind::Whip => "whip",
            PublisherKind::Rtmp => "rtmp",
        }
    }
}

/// The outputs a viewer can be attached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerKind {
    Mse,
    Webrtc,
    Hls,
    Mjpeg,
    Rtsp,
    Snapshot,
    Analysis,
    /// A camera's recorder.
    Recording,
    /// A transcoder's subscription: WebRTC audio → Opus, or MJPEG (each one per camera,
    /// whatever the number of its viewers).
    Transcoder,
}

impl ViewerKind {
    pub const ALL: [ViewerKind; 9] = [
        ViewerKind::Mse,
        ViewerKind::Webrtc,
        ViewerKind::Hls,
        ViewerKind::Mjpeg,
        ViewerKind::Rtsp,
        ViewerKind::Snapshot,
        ViewerKind::Analysis,
        ViewerKind::Recording,
        ViewerKind::Transcoder,
    ];

    /// A person watching through a subscription of their own (MSE, WebRTC, the RTSP
    /// re-stream); not the recorder, the analysers, nor the one muxer or transcoder that
    /// LL-HLS, MJPEG and WebRTC audio share among all of a camera's players.
    pub fn is_person(self) -> bool {
        matches!(
            self,
            ViewerKind::Mse | ViewerKind::Webrtc | ViewerKind::Rtsp
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ViewerKind::Mse => "mse",
            ViewerKind::Webrtc => "webrtc",
            ViewerKind::Hls => "hls",
            ViewerKind::Mjpeg => "mjpeg",
            ViewerKind::Rtsp => "rtsp",
            ViewerKind::Snapshot => "snapshot",
            ViewerKind::Analysis => "analysis",
            ViewerKind::Recording => "recording",
            ViewerKind::Transcoder => "transcoder",
        }
    }
}

static STREAMS_LIVE: AtomicI64 = AtomicI64::new(0);
static TASKS: AtomicI64 = AtomicI64::new(0);
static VIEWERS: [AtomicI64; ViewerKind::ALL.len()] =
    [const { AtomicI64::new(0) }; ViewerKind::ALL.len()];
static PEER_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
static WEBSOCKETS: AtomicI64 = AtomicI64::new(0);
static CHILD_PROCESSES: AtomicI64 = AtomicI64::new(0);
static TRANSCODERS: AtomicI64 = AtomicI64::new(0);
static HTTP_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
static RTSP_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
static RTMP_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
static PLAYBACK_DOWNLOADS: AtomicI64 = AtomicI64::new(0);
static PUBLISHERS: [AtomicI64; PublisherKind::ALL.len()] =
    [const { AtomicI64::new(0) }; PublisherKind::ALL.len()];

fn gauge(resource: Resource) -> &'static AtomicI64 {
    match resource {
        Resource::StreamLive => &STREAMS_LIVE,
        Resource::Task => &TASKS,
        Resource::Viewer(kind) => &VIEWERS[kind as usize],
        Resource::PeerConnection => &PEER_CONNECTIONS,
        Resource::WebSocket => &WEBSOCKETS,
        Resource::ChildProcess => &CHILD_PROCESSES,
        Resource::Transcoder => &TRANSCODERS,
        Resource::HttpConnection => &HTTP_CONNECTIONS,
        Resource::RtspConnection => &RTSP_CONNECTIONS,
        Resource::RtmpConnection => &RTMP_CONNECTIONS,
        Resource::Publisher(kind) => &PUBLISHERS[kind as usize],
        Resource::PlaybackDownload => &PLAYBACK_DOWNLOADS,
    }
}

/// RAII guard: the resource is counted while this value lives.
#[must_use = "the resource is only counted while the guard is alive"]
#[derive(Debug)]
pub struct Counted(Resource);

impl Counted {
    pub fn new(resource: Resource) -> Self {
        gauge(resource).fetch_add(1, Ordering::Relaxed);
        Counted(resource)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        gauge(self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Spawns a tokio task that is counted in `tasks` for as long as it runs. The caller owns the
/// returned handle and must await it on stop (principle 1).
pub fn spawn_task<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let guard = Counted::new(Resource::Task);
    tokio::spawn(async move {
        let _guard = guard;
        future.await
    })
}

/// Spawns a named OS thread that is counted in `tasks` for as long as it runs.
pub fn spawn_thread<F, T>(name: String, body: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let guard = Counted::new(Resource::Task);
    std::thread::Builder::new().name(name).spawn(move || {
        let _guard = guard;
        body()
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublisherCounts {
    pub rtsp: i64,
    pub whip: i64,
    pub rtmp: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ViewerCounts {
    pub mse: i64,
    pub webrtc: i64,
    pub hls: i64,
    pub mjpeg: i64,
    pub rtsp: i64,
    pub snapshot: i64,
    pub analysis: i64,
    pub recording: i64,
    pub transcoder: i64,
}

/// The body of `GET /api/resources`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub streams_live: i64,
    pub tasks: i64,
    pub viewers: ViewerCounts,
    pub peer_connections: i64,
    pub websockets: i64,
    pub child_processes: i64,
    pub transcoders: i64,
    pub http_connections: i64,
    pub rtsp_connections: i64,
    pub rtmp_connections: i64,
    pub publishers: PublisherCounts,
    pub playback_downloads: i64,
    pub open_fds: i64,
    pub rss_bytes: i64,
}

pub fn count(resource: Resource) -> i64 {
    gauge(resource).load(Ordering::Relaxed)
}

pub fn snapshot() -> Snapshot {
    let v = |k| count(Resource::Viewer(k));
    Snapshot {
        streams_live: count(Resource::StreamLive),
        tasks: count(Resource::Task),
        viewers: ViewerCounts {
            mse: v(ViewerKind::Mse),
            webrtc: v(ViewerKind::Webrtc),
            hls: v(ViewerKind::Hls),
            mjpeg: v(ViewerKind::Mjpeg),
            rtsp: v(ViewerKind::Rtsp),
            snapshot: v(ViewerKind::Snapshot),
            analysis: v(ViewerKind::Analysis),
            recording: v(ViewerKind::Recording),
            transcoder: v(ViewerKind::Transcoder),
        },
        peer_connections: count(Resource::PeerConnection),
        websockets: count(Resource::WebSocket),
        child_processes: count(Resource::ChildProcess),
        transcoders: count(Resource::Transcoder),
        http_connections: count(Resource::HttpConnection),
        rtsp_connections: count(Resource::RtspConnection),
        rtmp_connections: count(Resource::RtmpConnection),
        publishers: PublisherCounts {
            rtsp: count(Resource::Publisher(PublisherKind::Rtsp)),
            whip: count(Resource::Publisher(PublisherKind::Whip)),
            rtmp: count(Resource::Publisher(PublisherKind::Rtmp)),
        },
        playback_downloads: count(Resource::PlaybackDownload),
        open_fds: open_fds(),
        rss_bytes: rss_bytes(),
    }
}

/// Gives memory that was freed back to the system. glibc keeps freed heap in each thread's arena
/// for reuse, so after a burst (2,000 WebSockets with their buffers) RSS would stay at the peak
/// for good; `malloc_trim` releases the free pages of every arena.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations from this size up (1 MiB) get their own mapping, given back to the system when
/// freed. glibc's threshold starts at 128 KiB but rises to the size of each mapping freed (up to
/// 32 MiB), after which a publisher's 3 MiB pictures came from the threads' arenas and their
/// pages stayed there: 57 of the 88 MiB that one stalled MSE viewer cost (issue 28, hole 7).
/// Fixed at 1 MiB, only frames that big (and few other buffers) pay a map and unmap each.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Sets [`MMAP_THRESHOLD`]; once, at start.
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's own parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Open file descriptors of this process, read from `/proc/self/fd` (-1 where unavailable).
pub fn open_fds() -> i64 {
    match std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries; don't count it.
        Ok(dir) => dir.count() as i64 - 1,
        Err(_) => -1,
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm` (-1 where unavailable).
pub fn rss_bytes() -> i64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return -1;
    };
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64;
    if pages < 0 {
        -1
    } else {
        pages * page_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_while_alive() {
        let kind = Resource::Viewer(ViewerKind::Hls);
        let before = count(kind);
        let a = Counted::new(kind);
        let b = Counted::new(kind);
        assert_eq!(count(kind), before + 2);
        drop(a);
        assert_eq!(count(kind), before + 1);
        drop(b);
        assert_eq!(count(kind), before);
    }

    #[test]
    fn process_figures_are_readable() {
        assert!(open_fds() > 0);
        assert!(rss_bytes() > 0);
    }
}
