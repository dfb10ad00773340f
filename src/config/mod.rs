//! The TOML configuration: loading, validation that lists every problem with its place, and
//! writing cameras back (comment-preserving, atomic) when they change through the API.

pub mod analysis;
pub mod places;
pub mod write_back;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::{check_camera_id, mask_credentials, parse_duration};
use crate::source::rtsp::RtspOptions;
use crate::source::SourceSpec;
use crate::supervisor::WorkerConfig;
pub use write_back::{replace_file, write_cameras};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEMO_SOURCE: &str = "testsrc://?size=1280x720&fps=25";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub camera: Vec<CameraConfig>,
    /// `[webrtc]`, `[storage]` and `[mqtt]` as written (kept for comparison and write-back);
    /// livelens reads them typed, from [`Config::typed`].
    #[serde(default)]
    pub webrtc: Option<toml::Table>,
    #[serde(default)]
    pub storage: Option<toml::Table>,
    #[serde(default)]
    pub mqtt: Option<toml::Table>,
    #[serde(default)]
    pub mjpeg: Option<toml::Table>,
    #[serde(default)]
    pub hls: Option<toml::Table>,
    #[serde(default)]
    pub mse: Option<toml::Table>,
    #[serde(default)]
    pub rtsp: Option<toml::Table>,
    #[serde(default)]
    pub publish: Option<toml::Table>,
    #[serde(default)]
    pub rtmp: Option<toml::Table>,
    #[serde(default)]
    pub recording: Option<toml::Table>,
    #[serde(default)]
    pub worker: Vec<WorkerConfig>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
    /// Every setting besides the cameras, parsed once by [`Config::parse`] (which refuses a
    /// config with any problem), so nothing reads text again later.
    #[serde(skip)]
    pub typed: Settings,
}

/// The typed settings of `[server]`, `[webrtc]`, `[storage]` and `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[server] listen`.
    pub listen: Option<SocketAddr>,
    /// `[server] header_timeout` (default 10 s).
    pub header_timeout: Duration,
    /// `[webrtc] listen`; by default chosen from the HTTP address ([`Config::webrtc_listen`]).
    pub webrtc_listen: Option<SocketAddr>,
    /// `[webrtc] candidates`: extra addresses to advertise.
    pub webrtc_candidates: Vec<IpAddr>,
    /// `[storage] path`: where events are stored; in memory when unset.
    pub storage_path: Option<PathBuf>,
    /// `[storage] keep_days` (default 7), as a duration.
    pub keep: Duration,
    /// `[mqtt] url`, when events go to a broker.
    pub mqtt: Option<MqttEndpoint>,
    /// `[mqtt] public_url`: where Home Assistant reaches livelens's HTTP server (for snapshot
    /// URLs); by default the address livelens listens on.
    pub mqtt_public_url: Option<String>,
    /// `[mjpeg]`: the pictures MJPEG viewers get.
    pub mjpeg: MjpegSettings,
    /// `[hls]`.
    pub hls: HlsSettings,
    /// `[mse]`: how MSE WebSocket viewers (livelens's and go2rtc's) are written to.
    pub mse: MseSettings,
    /// `[rtsp]`: the re-stream server.
    pub rtsp: RtspSettings,
    /// `[publish]`: cameras that push.
    pub publish: PublishSettings,
    /// `[rtmp]`: the RTMP publish server.
    pub rtmp: RtmpSettings,
    /// `[recording]`: where and how cameras with `record` are recorded.
    pub recording: RecordingSettings,
}

/// `[recording]`: `path` (default `recordings`, relative to the config file), `keep` (default
/// 7 days), `max_size` (default 50 GB; the oldest recordings go first), `segment` (default 1 h:
/// a new file at least this often), `part` (default 1 s: written and synced this often, so a
/// crash loses at most one part), `pre_roll`/`post_roll` (default 5 s / 10 s: an event's clip).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSettings {
    pub path: PathBuf,
    pub keep: Duration,
    pub max_size: u64,
    pub segment: Duration,
    pub part: Duration,
    pub pre_roll: Duration,
    pub post_roll: Duration,
}

impl Default for RecordingSettings {
    fn default() -> RecordingSettings {
        RecordingSettings {
            path: PathBuf::from("recordings"),
            keep: Duration::from_secs(7 * 86_400),
            max_size: 50_000_000_000,
            segment: Duration::from_secs(3600),
            part: Duration::from_secs(1),
            pre_roll: Duration::from_secs(5),
            post_roll: Duration::from_secs(10),
        }
    }
}

/// A camera's `record`: `true`/`false`, or a table that records and overrides `keep`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Record {
    On(bool),
    With(RecordOptions),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    /// How long this camera's recordings are kept, e.g. "30d" (default `[recording] keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
}

impl Record {
    pub fn is_on(&self) -> bool {
        !matches!(self, Record::On(false))
    }

    /// The camera's own `keep`, when it sets one (checked by [`check_camera`]).
    pub fn keep(&self) -> Option<Duration> {
        match self {
            Record::With(RecordOptions { keep: Some(k) }) => parse_long_duration(k).ok(),
            _ => None,
        }
    }
}

/// `[rtmp] enabled` (default true) and `listen` (default 127.0.0.1:1935).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtmpSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
}

pub const DEFAULT_RTMP_LISTEN: &str = "127.0.0.1:1935";

impl Default for RtmpSettings {
    fn default() -> RtmpSettings {
        RtmpSettings {
            enabled: true,
            listen: DEFAULT_RTMP_LISTEN.parse().unwrap(),
        }
    }
}

/// `[publish] timeout` (default 10 s: a publisher that sends no media this long is let go),
/// `takeover` (default false: a second publisher gets 409; true: it replaces the live one) and
/// `auto_create` (default false: publishing to an unknown camera id makes a `publish:` camera).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishSettings {
    pub timeout: Duration,
    pub takeover: bool,
    pub auto_create: bool,
}

impl Default for PublishSettings {
    fn default() -> PublishSettings {
        PublishSettings {
            timeout: Duration::from_secs(10),
            takeover: false,
            auto_create: false,
        }
    }
}

/// `[rtsp] enabled` (default true), `listen` (default 127.0.0.1:8554) and `users` (a table of
/// name = password; with any, every client must authenticate).
#[derive(Clone, PartialEq)]
pub struct RtspSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub users: Vec<(String, String)>,
    /// `session_timeout` (default 60 s): a client that sends nothing for this long is dropped.
    pub session_timeout: Duration,
}

impl fmt::Debug for RtspSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords are secrets: names only.
        let names: Vec<&str> = self.users.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RtspSettings")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("users", &names)
            .field("session_timeout", &self.session_timeout)
            .finish()
    }
}

pub const DEFAULT_RTSP_LISTEN: &str = "127.0.0.1:8554";

impl Default for RtspSettings {
    fn default() -> RtspSettings {
        RtspSettings {
            enabled: true,
            listen: DEFAULT_RTSP_LISTEN.parse().unwrap(),
            users: Vec::new(),
            session_timeout: Duration::from_secs(60),
        }
    }
}

/// `[hls] close_after` (default 60 s): how long a camera's HLS muxer runs after the last request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HlsSettings {
    pub close_after: Duration,
}

impl Default for HlsSettings {
    fn default() -> HlsSettings {
        HlsSettings {
            close_after: Duration::from_secs(60),
        }
    }
}

/// `[mse] batch` (default 0: each picture is written as it comes): how long a viewer's pictures
/// may wait to go out together. Each write to a viewer costs the kernel about as much as the
/// bytes it carries, so with hundreds of viewers `"80ms"` (two or three pictures a write at
/// 25 fps) costs about 40 % less CPU, for up to that much more latency.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MseSettings {
    pub batch: Duration,
}

/// `[mjpeg] fps` (default 5) and `width` (default 640; the height keeps the camera's aspect).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MjpegSettings {
    pub fps: f64,
    pub width: u32,
}

impl Default for MjpegSettings {
    fn default() -> MjpegSettings {
        MjpegSettings {
            fps: 5.0,
            width: 640,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: None,
            header_timeout: Duration::from_secs(10),
            webrtc_listen: None,
            webrtc_candidates: Vec::new(),
            storage_path: None,
            keep: Duration::from_secs(7 * 86_400),
            mqtt: None,
            mqtt_public_url: None,
            mjpeg: MjpegSettings::default(),
            hls: HlsSettings::default(),
            mse: MseSettings::default(),
            rtsp: RtspSettings::default(),
            publish: PublishSettings::default(),
            rtmp: RtmpSettings::default(),
            recording: RecordingSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ServerConfig {
    pub listen: Option<String>,
    pub token: Option<String>,
    /// Host names the server answers to besides IP addresses, `localhost` and this machine's
    /// name (DNS rebinding protection); `["*"]` accepts any, e.g. behind a reverse proxy.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://dash.example`) whose pages may do everything across origins: open
    /// WebSockets, change state (cameras, config, publishing) and read every answer (CORS).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Web origins (`https://player.example`) whose pages may only watch across origins: LL-HLS,
    /// WHEP (their own sessions), the MSE WebSockets, MJPEG, snapshots and recordings (CORS).
    #[serde(default)]
    pub player_origins: Vec<String>,
    /// Open HTTP connections at most (default 10,000, and never more than the open-file limit
    /// allows); more get 503.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Open HTTP connections from one client address at most (default 2,000); more get 503.
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// How long a client has to send a request's headers, and how long an idle connection is
    /// kept (default "10s").
    #[serde(default)]
    pub header_timeout: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SourcesConfig {
    #[serde(default)]
    pub allow_exec: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CameraConfig {
    pub id: String,
    pub source: String,
    #[serde(default)]
    pub on_demand: bool,
    /// On-demand cameras: how long the source keeps running after the last viewer (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// RTSP: "tcp" (default) or "udp".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// RTSP: bound on connecting, each request and silence, e.g. "10s" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// RTSP: the User-Agent header to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `publish:` cameras: a secret that lets a publisher send to this camera alone (Bearer for
    /// WHIP, the password or `?token=` for RTSP and RTMP), besides the API token. Never shown
    /// by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_key: Option<String>,
    /// Whether the camera is recorded (`[recording]`): `true`, or `{ keep = "30d" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// Analysis settings (motion, vlm, asr), read by the analysis capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<toml::Table>,
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, toml::Value>,
}

/// One thing wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A key path such as `camera[2].source` (empty for the file as a whole).
    pub place: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

fn problem(place: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        place: place.into(),
        message: message.into(),
    }
}

/// `[mqtt] url`: the broker's address and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    /// User name and password, when the URL has them.
    pub credentials: Option<(String, String)>,
}

/// Parses `mqtt://host:port` (port 1883 by default; `tcp://` too).
pub fn mqtt_endpoint(url: &str) -> Result<MqttEndpoint, String> {
    let u = url::Url::parse(url).map_err(|e| format!("[mqtt] url is not a URL: {e}"))?;
    if u.scheme() != "mqtt" && u.scheme() != "tcp" {
        return Err(format!(
            "[mqtt] url must be mqtt://host:port, not {}://",
            u.scheme()
        ));
    }
    let host = u.host_str().ok_or("[mqtt] url has no host")?.to_string();
    let credentials = (!u.username().is_empty()).then(|| {
        (
            u.username().to_string(),
            u.password().unwrap_or("").to_string(),
        )
    });
    Ok(MqttEndpoint {
        host,
        port: u.port().unwrap_or(1883),
        credentials,
    })
}

/// Builds the source of a camera from its URL and options, or lists what is wrong, each problem
/// placed at its key. `allow_exec` comes from `[sources]`.
pub fn source_spec(camera: &CameraConfig, allow_exec: bool) -> Result<SourceSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut spec = match SourceSpec::parse(&camera.source) {
        Ok(spec) => {
            if spec.is_exec() && !allow_exec {
                problems.push(problem(
                    "source",
                    "exec: sources run commands and are off; set [sources] allow_exec = true to use them",
                ));
            } else if let Err(e) = spec.check_supported() {
                problems.push(problem("source", e));
            }
            Some(spec)
        }
        Err(e) => {
            problems.push(problem("source", e));
            None
        }
    };
    let rtsp_options = match &mut spec {
        Some(SourceSpec::Rtsp { options, .. }) => Some(options),
        _ => None,
    };
    let rtsp_only = [
        ("transport", camera.transport.is_some()),
        ("timeout", camera.timeout.is_some()),
        ("user_agent", camera.user_agent.is_some()),
    ];
    match rtsp_options {
        Some(options) => {
            if let Some(t) = &camera.transport {
                match RtspOptions::parse_transport(t) {
                    Ok(t) => options.transport = t,
                    Err(e) => problems.push(problem("transport", e)),
                }
            }
            if let Some(t) = &camera.timeout {
                match parse_duration(t) {
                    Ok(d) => options.timeout = d,
                    Err(e) => problems.push(problem("timeout", e)),
                }
            }
            if let Some(agent) = &camera.user_agent {
                // It becomes a header line: no line breaks or other control characters.
                let ok = !agent.is_empty()
                    && agent.len() <= 256
                    && agent.bytes().all(|b| (0x20..0x7f).contains(&b));
                if ok {
                    options.user_agent = Some(agent.clone());
                } else {
                    problems.push(problem(
                        "user_agent",
                        "must be 1 to 256 printable ASCII characters (no line breaks)",
                    ));
                }
            }
        }
        None => {
            for (key, set) in rtsp_only {
                if set && spec.is_some() {
                    problems.push(problem(key, "only applies to rtsp:// sources"));
                }
            }
        }
    }
    match spec {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => Err(problems),
    }
}

/// Checks one camera on its own (not against the others): id, source and its options, and
/// options this build cannot honour.
pub fn check_camera(camera: &CameraConfig, allow_exec: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = check_camera_id(&camera.id) {
        problems.push(problem("id", e));
    }
    if let Err(source_problems) = source_spec(camera, allow_exec) {
        problems.extend(source_problems);
    }
    if let Some(t) = &camera.idle_timeout {
        if let Err(e) = parse_duration(t) {
            problems.push(problem("idle_timeout", e));
        }
    }
    if let Some(key) = &camera.publish_key {
        // The value is a secret: the messages never show it.
        if camera.source.trim() != "publish:" {
            problems.push(problem(
                "publish_key",
                "only a camera whose source is publish: takes publishers",
            ));
        } else if key.len() < 8 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push(problem(
                "publish_key",
                "expected at least 8 characters, without spaces",
            ));
        }
    }
    if let Some(Record::With(RecordOptions { keep: Some(k) })) = &camera.record {
        if let Err(e) = parse_long_duration(k) {
            problems.push(problem("record.keep", e));
        }
    }
    if let Some(analysis) = &camera.analysis {
        for (key, message) in self::analysis::check(analysis) {
            let place = if key.is_empty() {
                "analysis".to_string()
            } else {
                format!("analysis.{key}")
            };
            problems.push(problem(place, message));
        }
    }
    for key in camera.unknown.keys() {
        problems.push(problem(key.clone(), "unknown key"));
    }
    problems
}

/// `"50 GB"` → `(50.0, "GB")`; NaN when the number is not one.
fn number_and_unit(text: &str) -> (f64, &str) {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    (number.parse().unwrap_or(f64::NAN), unit.trim())
}

/// A duration that may be long (`7d`, `12h`, `90m`, `30s`), as retention and segments are.
pub fn parse_long_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = number_and_unit(text);
    let scale = match unit {
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    let secs = value * scale;
    if !(secs.is_finite() && secs > 0.0 && secs <= 100.0 * 365.0 * 86_400.0) {
        return Err(format!(
            "{text:?} is not a duration such as \"7d\", \"12h\", \"30m\" or \"10s\""
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size such as `50GB`, `500MB`, `2GiB` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (value, unit) = number_and_unit(text);
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    let bytes = value * scale;
    if !((1.0..1e18).contains(&bytes)) {
        return Err(format!(
            "{text:?} is not a size such as \"50GB\" or \"500MB\""
        ));
    }
    Ok(bytes as u64)
}

fn long_duration(text: Option<&str>, value: &toml::Value) -> Result<Duration, String> {
    text.ok_or_else(|| format!("{value} is not a duration such as \"7d\""))
        .and_then(parse_long_duration)
}

fn at_least(d: Duration, min: Duration) -> Result<Duration, String> {
    if d < min {
        return Err(format!("must be at least {min:?}"));
    }
    Ok(d)
}

/// A setting that must be `true` or `false`; else a problem at `place`.
fn boolean(place: &str, value: &toml::Value, problems: &mut Vec<Problem>) -> Option<bool> {
    let b = value.as_bool();
    if b.is_none() {
        problems.push(problem(place, "expected true or false"));
    }
    b
}

/// A batch longer than this would be a delay, not a batch.
const MAX_MSE_BATCH: Duration = Duration::from_secs(1);

/// A setting that must be a duration of at least a second, such as `example`; else a problem
/// at `place`.
fn seconds(
    place: &str,
    value: &toml::Value,
    example: &str,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let d = value
        .as_str()
        .and_then(|s| parse_duration(s).ok())
        .filter(|d| *d >= Duration::from_secs(1));
    if d.is_none() {
        problems.push(problem(
            place,
            format!("{value} is not a duration of at least 1s, e.g. \"{example}\""),
        ));
    }
    d
}

/// A setting that must be an `address:port`; else a problem at `place` showing `example`.
fn address(
    place: &str,
    value: &toml::Value,
    example: &str,
    problems: &mut Vec<Problem>,
) -> Option<SocketAddr> {
    let a = value.as_str().and_then(|s| s.parse::<SocketAddr>().ok());
    if a.is_none() {
        problems.push(problem(
            place,
            format!("{value} is not an address:port such as {example}"),
        ));
    }
    a
}

/// Where `livelens serve` without `--config` reads its cameras and saves those added or
/// changed in the UI or API: `$XDG_CONFIG_HOME/livelens/livelens.toml`, else
/// `$HOME/.config/livelens/livelens.toml`; none without either.
pub fn default_path() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".config"))
        })?;
    Some(base.join("livelens").join("livelens.toml"))
}

impl Config {
    /// Parses TOML text. A syntax or type error is one problem (parsing cannot go on past it);
    /// otherwise every semantic problem is listed.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| format!("line {}", places::line_of(text, s.start)))
                .unwrap_or_default();
            vec![problem(place, e.message().trim().to_string())]
        })?;
        let (typed, problems) = config.check();
        if problems.is_empty() {
            Ok(Config { typed, ..config })
        } else {
            Err(problems)
        }
    }

    pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![problem("", format!("cannot read {}: {e}", path.display()))])?;
        Config::parse(&text)
    }

    /// Every problem of the config, each with its place.
    pub fn validate(&self) -> Vec<Problem> {
        self.check().1
    }

    /// The typed settings, and every problem found on the way to them.
    fn check(&self) -> (Settings, Vec<Problem>) {
        let mut typed = Settings::default();
        let mut problems = Vec::new();
        for key in self.unknown.keys() {
            problems.push(problem(key.clone(), "unknown section or key"));
        }
        for key in self.server.unknown.keys() {
            problems.push(problem(format!("server.{key}"), "unknown key"));
        }
        for key in self.sources.unknown.keys() {
            problems.push(problem(format!("sources.{key}"), "unknown key"));
        }
        if let Some(listen) = &self.server.listen {
            match listen.parse::<SocketAddr>() {
                Ok(a) => typed.listen = Some(a),
                Err(_) => problems.push(problem(
                    "server.listen",
                    format!("{listen:?} is not an address:port such as 127.0.0.1:8080"),
                )),
            }
        }
        if let Some(webrtc) = &self.webrtc {
            for (key, value) in webrtc {
                match key.as_str() {
                    "listen" => match value.as_str().and_then(|s| s.parse::<SocketAddr>().ok()) {
                        Some(a) => typed.webrtc_listen = Some(a),
                        None => problems.push(problem(
                            "webrtc.listen",
                            format!("{value} is not an address:port such as 0.0.0.0:8555"),
                        )),
                    },
                    "candidates" => {
                        let list: Option<Vec<IpAddr>> = value.as_array().and_then(|a| {
                            a.iter()
                                .map(|v| v.as_str().and_then(|s| s.parse::<IpAddr>().ok()))
                                .collect()
                        });
                        match list {
                            Some(list) => typed.webrtc_candidates = list,
                            None => problems.push(problem(
                                "webrtc.candidates",
                                "expected a list of IP addresses, e.g. [\"192.168.1.10\"]",
                            )),
                        }
                    }
                    _ => problems.push(problem(format!("webrtc.{key}"), "unknown key")),
                }
            }
        }
        if let Some(storage) = &self.storage {
            for (key, value) in storage {
                let ok = match key.as_str() {
                    "path" => match value.as_str().filter(|s| !s.is_empty()) {
                        Some(p) => {
                            typed.storage_path = Some(PathBuf::from(p));
                            true
                        }
                        None => false,
                    },
                    "keep_days" => match value.as_integer().filter(|d| (1..=36_500).contains(d)) {
                        Some(d) => {
                            typed.keep = Duration::from_secs(d as u64 * 86_400);
                            true
                        }
                        None => false,
                    },
                    _ => {
                        problems.push(problem(format!("storage.{key}"), "unknown key"));
                        continue;
                    }
                };
                if !ok {
                    let expected = if key == "path" {
                        "a file path"
                    } else {
                        "a whole number of days from 1 to 36500"
                    };
                    problems.push(problem(
                        format!("storage.{key}"),
                        format!("{value} is not {expected}"),
                    ));
                }
            }
        }
        if let Some(mqtt) = &self.mqtt {
            for (key, value) in mqtt {
                if key == "public_url" {
                    match value.as_str().filter(|u| {
                        url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                    }) {
                        Some(u) => {
                            typed.mqtt_public_url = Some(u.trim_end_matches('/').to_string())
                        }
                        None => problems.push(problem(
                            "mqtt.public_url",
                            format!("{value} is not a URL such as \"http://192.168.1.5:8080\""),
                        )),
                    }
                } else if key != "url" {
                    problems.push(problem(format!("mqtt.{key}"), "unknown key"));
                } else {
                    match value
                        .as_str()
                        .ok_or_else(|| "must be a string".to_string())
                        .and_then(mqtt_endpoint)
                    {
                        Ok(endpoint) => typed.mqtt = Some(endpoint),
                        Err(e) => problems.push(problem("mqtt.url", e)),
                    }
                }
            }
        }
        for (key, value) in self.mjpeg.iter().flatten() {
            match key.as_str() {
                "fps" => match value
                    .as_float()
                    .or(value.as_integer().map(|i| i as f64))
                    .filter(|f| (0.1..=30.0).contains(f))
                {
                    Some(f) => typed.mjpeg.fps = f,
                    None => problems.push(problem(
                        "mjpeg.fps",
                        format!("{value} is not a rate from 0.1 to 30 pictures a second"),
                    )),
                },
                "width" => match value.as_integer().filter(|w| (64..=3840).contains(w)) {
                    Some(w) => typed.mjpeg.width = w as u32,
                    None => problems.push(problem(
                        "mjpeg.width",
                        format!("{value} is not a width from 64 to 3840 pixels"),
                    )),
                },
                _ => problems.push(problem(format!("mjpeg.{key}"), "unknown key")),
            }
        }
        for (key, value) in self.hls.iter().flatten() {
            match key.as_str() {
                "close_after" => {
                    if let Some(d) = seconds("hls.close_after", value, "60s", &mut problems) {
                        typed.hls.close_after = d;
                    }
                }
                _ => problems.push(problem(format!("hls.{key}"), "unknown key")),
            }
        }
        for (key, value) in self.mse.iter().flatten() {
            match key.as_str() {
                "batch" => {
                    let d = value
                        .as_str()
                        .and_then(|s| match s.trim() {
                            "0" | "0s" | "0ms" => Some(Duration::ZERO),
                            s => parse_duration(s).ok(),
                        })
                        .filter(|d| *d <= MAX_MSE_BATCH);
                    match d {
                        Some(d) => typed.mse.batch = d,
                        None => problems.push(problem(
                            "mse.batch",
                            format!(
                                "{value} is not 0 or a duration from 50ms to 1s, e.g. \"80ms\""
                            ),
                        )),
                    }
                }
                _ => problems.push(problem(format!("mse.{key}"), "unknown key")),
            }
        }
        for (key, value) in self.rtsp.iter().flatten() {
            match key.as_str() {
                "enabled" => {
                    if let Some(b) = boolean("rtsp.enabled", value, &mut problems) {
                        typed.rtsp.enabled = b;
                    }
                }
                "listen" => {
                    if let Some(a) = address("rtsp.listen", value, "127.0.0.1:8554", &mut problems)
                    {
                        typed.rtsp.listen = a;
                    }
                }
                "session_timeout" => {
                    if let Some(d) = seconds("rtsp.session_timeout", value, "60s", &mut problems) {
                        typed.rtsp.session_timeout = d;
                    }
                }
                "users" => match value.as_table() {
                    Some(table) => {
                        for (name, password) in table {
                            match password.as_str().filter(|p| !p.is_empty()) {
                                Some(p) if !name.is_empty() && !name.contains(':') => {
                                    typed.rtsp.users.push((name.clone(), p.to_string()))
                                }
                                // The value is a password: the message never shows it.
                                _ => problems.push(problem(
                                    format!("rtsp.users.{name}"),
                                    "expected a non-empty password string (and a name without ':')",
                                )),
                            }
                        }
                    }
                    None => problems.push(problem(
                        "rtsp.users",
                        "expected a table of name = \"password\"",
                    )),
                },
                _ => problems.push(problem(format!("rtsp.{key}"), "unknown key")),
            }
        }
        for (key, value) in self.rtmp.iter().flatten() {
            match key.as_str() {
                "enabled" => {
                    if let Some(b) = boolean("rtmp.enabled", value, &mut problems) {
                        typed.rtmp.enabled = b;
                    }
                }
                "listen" => {
                    if let Some(a) = address("rtmp.listen", value, "127.0.0.1:1935", &mut problems)
                    {
                        typed.rtmp.listen = a;
                    }
                }
                _ => problems.push(problem(format!("rtmp.{key}"), "unknown key")),
            }
        }
        for (key, value) in self.recording.iter().flatten() {
            let place = format!("recording.{key}");
            let text = value.as_str();
            let r = &mut typed.recording;
            let ok = match key.as_str() {
                "path" => text
                    .filter(|p| !p.is_empty())
                    .map(|p| r.path = PathBuf::from(p))
                    .ok_or_else(|| format!("{value} is not a folder path")),
                "keep" => long_duration(text, value).map(|d| r.keep = d),
                "max_size" => text
                    .ok_or_else(|| format!("{value} is not a size"))
                    .and_then(parse_size)
                    .map(|n| r.max_size = n),
                "segment" => long_duration(text, value)
                    .and_then(|d| at_least(d, Duration::from_secs(1)))
                    .map(|d| r.segment = d),
                "part" => text
                    .ok_or_else(|| format!("{value} is not a duration"))
                    .and_then(parse_duration)
                    .and_then(|d| at_least(d, Duration::from_millis(100)))
                    .map(|d| r.part = d),
                "pre_roll" | "post_roll" => text
                    .ok_or_else(|| format!("{value} is not a duration"))
                    .and_then(parse_duration)
                    .map(|d| {
                        if key == "pre_roll" {
                            r.pre_roll = d
                        } else {
                            r.post_roll = d
                        }
                    }),
                _ => Err("unknown key".to_string()),
            };
            if let Err(message) = ok {
                problems.push(problem(place, message));
            }
        }
        if typed.recording.part > typed.recording.segment {
            problems.push(problem(
                "recording.part",
                "must not be longer than recording.segment",
            ));
        }
        for (key, value) in self.publish.iter().flatten() {
            match key.as_str() {
                "timeout" => {
                    if let Some(d) = seconds("publish.timeout", value, "10s", &mut problems) {
                        typed.publish.timeout = d;
                    }
                }
                "takeover" => {
                    if let Some(b) = boolean("publish.takeover", value, &mut problems) {
                        typed.publish.takeover = b;
                    }
                }
                "auto_create" => {
                    if let Some(b) = boolean("publish.auto_create", value, &mut problems) {
                        typed.publish.auto_create = b;
                    }
                }
                _ => problems.push(problem(format!("publish.{key}"), "unknown key")),
            }
        }
        for (key, origins) in [
            ("allowed_origins", &self.server.allowed_origins),
            ("player_origins", &self.server.player_origins),
        ] {
            for (i, origin) in origins.iter().enumerate() {
                // A trailing slash is forgiven (browsers never send one); a path is not.
                let ok = origin == "*"
                    || ["http://", "https://"].iter().any(|p| {
                        origin
                            .trim_end_matches('/')
                            .strip_prefix(p)
                            .is_some_and(|h| !h.is_empty() && !h.contains('/'))
                    });
                if !ok {
                    problems.push(problem(
                        format!("server.{key}[{i}]"),
                        format!("{origin:?} is not an origin such as \"https://dash.example\""),
                    ));
                }
            }
        }
        for (key, value) in [
            ("max_connections", self.server.max_connections),
            ("max_connections_per_ip", self.server.max_connections_per_ip),
        ] {
            if value == Some(0) {
                problems.push(problem(format!("server.{key}"), "must be at least 1"));
            }
        }
        if let Some(text) = &self.server.header_timeout {
            match parse_duration(text) {
                Ok(d) => typed.header_timeout = d,
                Err(e) => problems.push(problem("server.header_timeout", e)),
            }
        }
        if self.server.token.as_deref() == Some("") {
            problems.push(problem(
                "server.token",
                "is empty; remove it or set a secret",
            ));
        }
        let mut names = BTreeMap::new();
        for (i, worker) in self.worker.iter().enumerate() {
            for (key, message) in worker.problems() {
                problems.push(problem(format!("worker[{i}].{key}"), message));
            }
            if let Some(first) = names.insert(worker.name.clone(), i) {
                problems.push(problem(
                    format!("worker[{i}].name"),
                    format!(
                        "duplicate worker name {:?} (also worker[{first}])",
                        worker.name
                    ),
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for (i, camera) in self.camera.iter().enumerate() {
            let place = format!("camera[{i}]");
            for p in check_camera(camera, self.sources.allow_exec) {
                problems.push(problem(format!("{place}.{}", p.place), p.message));
            }
            if let Some(first) = seen.insert(camera.id.clone(), i) {
                problems.push(problem(
                    format!("{place}.id"),
                    format!("duplicate camera id {:?} (also camera[{first}])", camera.id),
                ));
            }
        }
        (typed, problems)
    }

    /// `[webrtc] listen`; by default port 8555 in the HTTP server's scope: on its address when
    /// that is loopback-only, on every interface otherwise.
    pub fn webrtc_listen(&self, http: SocketAddr) -> SocketAddr {
        self.typed
            .webrtc_listen
            .unwrap_or(if http.ip().is_loopback() {
                SocketAddr::new(http.ip(), 8555)
            } else {
                SocketAddr::from(([0, 0, 0, 0], 8555))
            })
    }

    /// The sections of `new` that differ from this running config and only take effect after a
    /// restart (everything but the cameras), e.g. `["server", "webrtc"]`.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.server != new.server {
            out.push("server");
        }
        if self.sources != new.sources {
            out.push("sources");
        }
        if self.webrtc != new.webrtc {
            out.push("webrtc");
        }
        if self.storage != new.storage {
            out.push("storage");
        }
        if self.mqtt != new.mqtt {
            out.push("mqtt");
        }
        if self.mjpeg != new.mjpeg {
            out.push("mjpeg");
        }
        if self.hls != new.hls {
            out.push("hls");
        }
        if self.mse != new.mse {
            out.push("mse");
        }
        if self.rtsp != new.rtsp {
            out.push("rtsp");
        }
        if self.publish != new.publish {
            out.push("publish");
        }
        if self.rtmp != new.rtmp {
            out.push("rtmp");
        }
        if self.recording != new.recording {
            out.push("recording");
        }
        if self.worker != new.worker {
            out.push("worker");
        }
        out
    }

    /// The cameras to serve: the configured ones, or the demo camera when none is configured.
    pub fn cameras_or_demo(&self) -> Vec<CameraConfig> {
        if self.camera.is_empty() {
            vec![CameraConfig::with_source("demo", DEMO_SOURCE)]
        } else {
            self.camera.clone()
        }
    }
}

impl CameraConfig {
    /// A camera with only an id and a source; every other setting at its default.
    pub fn with_source(id: &str, source: &str) -> CameraConfig {
        CameraConfig {
            id: id.into(),
            source: source.into(),
            on_demand: false,
            idle_timeout: None,
            transport: None,
            timeout: None,
            user_agent: None,
            publish_key: None,
            record: None,
            analysis: None,
            unknown: BTreeMap::new(),
        }
    }

    pub fn masked_source(&self) -> String {
        mask_credentials(&self.source)
    }
}

/// What the API shows in place of a secret.
pub const MASKED: &str = "***";

/// Keys whose values are secrets wherever they appear in a camera's settings.
pub fn is_secret_key(key: &str) -> bool {
    matches!(key, "api_key" | "password" | "token")
}

/// Keys that name where a table's secret is sent (a model's `endpoint`).
const DESTINATION_KEYS: [&str; 2] = ["endpoint", "url"];

/// Puts back every secret that a client sent as [`MASKED`] (it read the settings, changed
/// something else, and sent them back): the value at the same place in `old`, or nothing if
/// there was none. One rule for every secret, at any depth: a saved secret goes only where it
/// was saved to go, so a masked secret beside a changed `endpoint` is a problem (the user must
/// type the key again), never the saved key sent to a new server. `place` names `new`
/// (`analysis`) in the problems.
pub fn restore_masked_secrets(
    new: &mut toml::Table,
    old: Option<&toml::Table>,
    place: &str,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let moved = DESTINATION_KEYS
        .iter()
        .any(|k| new.get(*k) != old.and_then(|o| o.get(*k)));
    let keys: Vec<String> = new.keys().cloned().collect();
    for key in keys {
        let old_value = old.and_then(|o| o.get(&key));
        let here = if place.is_empty() {
            key.clone()
        } else {
            format!("{place}.{key}")
        };
        match new.get_mut(&key) {
            Some(toml::Value::Table(inner)) => {
                if let Err(mut p) =
                    restore_masked_secrets(inner, old_value.and_then(toml::Value::as_table), &here)
                {
                    problems.append(&mut p);
                }
            }
            Some(toml::Value::String(s)) if s == MASKED && is_secret_key(&key) => {
                match old_value {
                    Some(_) if moved => problems.push(problem(
                        here,
                        "enter the key again: the saved one is only sent to the endpoint it was saved with",
                    )),
                    Some(v) => {
                        new.insert(key, v.clone());
                    }
                    None => {
                        new.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_serves_the_demo() {
        let c = Config::parse("").unwrap();
        let cams = c.cameras_or_demo();
        assert_eq!(cams.len(), 1);
        assert_eq!(cams[0].id, "demo");
        assert!(cams[0].source.starts_with("testsrc://"));
    }

    #[test]
    fn the_design_example_loads() {
        let text = r#"
            [server]
            listen = "127.0.0.1:8080"
            token = "secret"
            [sources]
            allow_exec = false
            [webrtc]
            listen = "0.0.0.0:8555"
            candidates = []
            [storage]
            path = "livelens.db"
            keep_days = 7
            [mqtt]
            url = "mqtt://127.0.0.1:1883"
            [[camera]]
            id = "front"
            source = "testsrc://?size=640x360"
            on_demand = false
            [camera.analysis.vlm]
            endpoint = "http://127.0.0.1:11434/v1"
            model = "llava"
            [[worker]]
            name = "whisper"
            command = ["faster-whisper-server", "--port", "{port}"]
        "#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.camera[0].id, "front");
        assert!(c.camera[0].analysis.is_some());
    }

    #[test]
    fn every_problem_is_listed_with_its_place() {
        let text = r#"
            colour = "red"
            [server]
            listen = "everywhere"
            [[camera]]
            id = "Front Door"
            source = "http://x"
            [[camera]]
            id = "b"
            source = "testsrc://?fps=0"
            zoom = 2
            [[camera]]
            id = "b"
            source = "exec:ffmpeg -i x -f mpegts -"
        "#;
        let problems = Config::parse(text).unwrap_err();
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let expect = [
            "colour: unknown section or key",
            "server.listen: \"everywhere\" is not an address:port",
            "camera[0].id: \"Front Door\" is not a valid camera id",
            "camera[0].source: unknown source scheme \"http\"",
            "camera[1].source: testsrc parameter fps=\"0\"",
            "camera[1].zoom: unknown key",
            "camera[2].source: exec: sources run commands and are off",
            "camera[2].id: duplicate camera id \"b\" (also camera[1])",
        ];
        for e in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(e)),
                "missing {e:?} in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
    }

    #[test]
    fn recording_settings_are_typed_and_their_problems_named() {
        let config = Config::parse(
            "[recording]\npath = \"/srv/rec\"\nkeep = \"30d\"\nmax_size = \"2GiB\"\nsegment = \"10m\"\npart = \"500ms\"\n\
             [[camera]]\nid = \"a\"\nsource = \"testsrc://\"\nrecord = { keep = \"12h\" }\n",
        )
        .unwrap();
        let r = &config.typed.recording;
        assert_eq!(r.path, PathBuf::from("/srv/rec"));
        assert_eq!(r.keep, Duration::from_secs(30 * 86_400));
        assert_eq!(r.max_size, 2 * 1024 * 1024 * 1024);
        assert_eq!(
            (r.segment, r.part),
            (Duration::from_secs(600), Duration::from_millis(500))
        );
        assert_eq!(
            config.camera[0].record.as_ref().unwrap().keep(),
            Some(Duration::from_secs(43_200))
        );
        let problems = Config::parse(
            "[recording]\nkeep = \"forever\"\nmax_size = \"lots\"\nsegment = \"1s\"\npart = \"2s\"\nzoom = 1\n\
             [[camera]]\nid = \"a\"\nsource = \"testsrc://\"\nrecord = { keep = \"-1d\" }\n",
        )
        .unwrap_err();
        let places: Vec<&str> = problems.iter().map(|p| p.place.as_str()).collect();
        assert_eq!(
            places,
            [
                "recording.keep",
                "recording.max_size",
                "recording.zoom",
                "recording.part",
                "camera[0].record.keep"
            ],
            "{problems:#?}"
        );
        assert_eq!(parse_size("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert!(parse_size("0").is_err() && parse_size("1e30").is_err());
        assert!(parse_long_duration("7d").is_ok() && parse_long_duration("nan").is_err());
    }

    #[test]
    fn the_public_url_for_home_assistant_is_a_url() {
        let c = Config::parse(
            "[mqtt]\nurl = \"mqtt://127.0.0.1\"\npublic_url = \"http://nvr.lan:8080/\"\n",
        )
        .unwrap();
        assert_eq!(
            c.typed.mqtt_public_url.as_deref(),
            Some("http://nvr.lan:8080")
        );
        let problems = Config::parse("[mqtt]\npublic_url = \"nvr.lan\"\n").unwrap_err();
        assert_eq!(problems[0].place, "mqtt.public_url");
    }

    #[test]
    fn mse_batch_is_zero_or_a_short_duration() {
        assert_eq!(Config::parse("").unwrap().typed.mse.batch, Duration::ZERO);
        let batch = |v: &str| Config::parse(&format!("[mse]\nbatch = \"{v}\"\n"));
        assert_eq!(
            batch("80ms").unwrap().typed.mse.batch,
            Duration::from_millis(80)
        );
        assert_eq!(batch("0").unwrap().typed.mse.batch, Duration::ZERO);
        for bad in ["2s", "10ms", "soon"] {
            let problems = batch(bad).unwrap_err();
            assert_eq!(problems[0].place, "mse.batch", "{bad}");
        }
        let problems = Config::parse("[mse]\nbach = \"80ms\"\n").unwrap_err();
        assert_eq!(problems[0].place, "mse.bach");
    }

    #[test]
    fn origin_lists_take_origins_only() {
        let c = Config::parse(
            "[server]\nallowed_origins = [\"https://dash.example\"]\n\
             player_origins = [\"http://player.example:8080/\", \"*\"]\n",
        )
        .unwrap();
        assert_eq!(c.server.allowed_origins, ["https://dash.example"]);
        assert_eq!(c.server.player_origins.len(), 2);
        for (key, bad) in [
            ("player_origins", "player.example"),
            ("player_origins", "https://player.example/app"),
            ("allowed_origins", "ftp://dash.example"),
        ] {
            let problems =
                Config::parse(&format!("[server]\n{key} = [\"ok.example\", \"{bad}\"]\n"))
                    .unwrap_err();
            let places: Vec<&str> = problems.iter().map(|p| p.place.as_str()).collect();
            assert!(
                places.contains(&format!("server.{key}[1]").as_str()),
                "{places:?}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let problems = Config::parse("[server]\nlisten = \n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].place, "line 2");
        let problems = Config::parse("[[camera]]\nid = 5\nsource = \"testsrc://\"").unwrap_err();
        assert!(problems[0].place.starts_with("line 2"), "{:?}", problems);
    }

    #[test]
    fn analysis_is_written_under_its_own_camera() {
        let dir = std::env::temp_dir().join(format!("livelens-wb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let mut cameras: Vec<CameraConfig> = (0..2)
            .map(|i| toml::from_str(&format!("id = \"c{i}\"\nsource = \"testsrc://\"")).unwrap())
            .collect();
        cameras[0].analysis = Some(
            toml::from_str(
                "[motion]\nfps = 3\n[vlm]\nendpoint = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"",
            )
            .unwrap(),
        );
        write_cameras(&path, &cameras).unwrap();
        write_cameras(&path, &cameras).unwrap(); // twice: the second write starts from the first
        let text = std::fs::read_to_string(&path).unwrap();
        let back = Config::parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"));
        assert_eq!(back.camera[0].analysis, cameras[0].analysis, "{text}");
        assert_eq!(back.camera[1].analysis, None, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn masked_secrets_are_restored_at_any_depth_and_nothing_else() {
        let old: toml::Table = toml::from_str(
            "[vlm]\napi_key = \"sk-1\"\n[asr]\napi_key = \"sk-2\"\n[x.y]\npassword = \"p\"\n",
        )
        .unwrap();
        let mut new: toml::Table = toml::from_str(
            "[vlm]\napi_key = \"***\"\nmodel = \"***\"\n[asr]\napi_key = \"***\"\n\
             [x.y]\npassword = \"***\"\n[z]\ntoken = \"***\"\n",
        )
        .unwrap();
        restore_masked_secrets(&mut new, Some(&old), "analysis").unwrap();
        assert_eq!(new["vlm"]["api_key"].as_str(), Some("sk-1"));
        assert_eq!(new["vlm"]["model"].as_str(), Some("***"), "not a secret");
        assert_eq!(new["asr"]["api_key"].as_str(), Some("sk-2"));
        assert_eq!(new["x"]["y"]["password"].as_str(), Some("p"));
        assert!(new["z"].get("token").is_none(), "no old secret: none kept");
    }

    #[test]
    fn write_back_keeps_comments_and_other_sections() {
        let dir = std::env::temp_dir().join(format!("livelens-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("livelens.toml");
        std::fs::write(
            &path,
            "# my cameras\n[server]\nlisten = \"127.0.0.1:9000\"\n\n[[camera]]\n# the porch\nid = \"porch\"\nsource = \"testsrc://\"\n",
        )
        .unwrap();
        let cams = vec![
            CameraConfig {
                id: "porch".into(),
                source: "testsrc://?fps=10".into(),
                on_demand: false,
                idle_timeout: None,
                transport: None,
                timeout: None,
                user_agent: None,
                publish_key: None,
                record: None,
                analysis: None,
                unknown: BTreeMap::new(),
            },
            CameraConfig {
                id: "yard".into(),
                source: "testsrc://?motion=0".into(),
                on_demand: false,
                idle_timeout: None,
                transport: None,
                timeout: None,
                user_agent: None,
                publish_key: None,
                record: None,
                analysis: None,
                unknown: BTreeMap::new(),
            },
        ];
        write_cameras(&path, &cams).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my cameras") && text.contains("# the porch"),
            "{text}"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.server.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.camera, cams);
        write_cameras(&path, &[]).unwrap();
        assert!(Config::load(&path).unwrap().camera.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
