//! One RTSP connection's protocol state (RFC 2326), sans-IO: a request and what the server found
//! for the camera it names in, the response and what to do next out.
//!
//! A session lives on the connection that made it and ends with it: every client here (FFmpeg,
//! GStreamer, VLC, NVRs) keeps its connection open and sends keep-alives on it, and tying the
//! two means a client that goes away frees its viewer with its socket, whatever the transport.

use crate::media::TrackKind;

use super::message::{parse_transport, Method, Request, Response, Transport};
use super::sdp::{AUDIO_CONTROL, VIDEO_CONTROL};
use crate::output::rtp_ingest::{parse_announce, Announced};

/// The methods a client may use here: reading (DESCRIBE … PLAY) and publishing to a `publish:`
/// camera (ANNOUNCE … RECORD).
pub const PUBLIC: &str =
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, PAUSE, TEARDOWN, GET_PARAMETER";

/// What a request URL names: a camera, and a track of it for SETUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub camera: String,
    /// The re-stream's track this names (`trackID=0|1`).
    pub track: Option<TrackKind>,
    /// The path's second part as written (a publisher's own `a=control`, e.g. `streamid=0`).
    pub control: Option<String>,
}

/// Reads `rtsp://host[:port]/{camera}[/trackID=N][?…]`. `None` for anything else (`*`, another
/// scheme, an empty or extra path).
pub fn target(uri: &str) -> Option<Target> {
    let rest = uri
        .strip_prefix("rtsp://")
        .or_else(|| uri.strip_prefix("RTSP://"))?;
    let path = &rest[rest.find('/')?..];
    let path = path.split('#').next().unwrap_or_default();
    // FFmpeg appends a track's control after the query it was given (`/door?token=x/streamid=0`).
    let (path, control_after_query) = match path.split_once('?') {
        Some((p, query)) => (p, query.rsplit_once('/').map(|(_, c)| c)),
        None => (path, None),
    };
    let mut parts = path
        .split('/')
        .chain(control_after_query)
        .filter(|p| !p.is_empty());
    let camera = parts.next()?.to_string();
    let control = parts.next().map(str::to_string);
    let track = match control.as_deref() {
        Some(VIDEO_CONTROL) => Some(TrackKind::Video),
        Some(AUDIO_CONTROL) => Some(TrackKind::Audio),
        _ => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Target {
        camera,
        track,
        control,
    })
}

/// What the server found for the camera a DESCRIBE or SETUP names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The camera, its session description and whether that has an audio track.
    Found {
        sdp: String,
        audio: bool,
    },
    NotFound,
    /// The camera exists but cannot be described now (not live, a codec RTP cannot carry).
    Unavailable(String),
    /// ANNOUNCE: the camera took this connection as its publisher.
    Publishable,
    /// ANNOUNCE: the camera refused (405: not `publish:`; 409: another publisher is live);
    /// a publisher's SETUP: its UDP client port is another publisher's (461).
    Refused {
        status: u16,
        why: String,
    },
}

/// A track as one client set it up: how it goes, and its RTP stream's random starting points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub track: TrackKind,
    pub transport: Transport,
    pub ssrc: u32,
    pub sequence: u16,
    pub time_offset: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub camera: String,
    pub tracks: Vec<Setup>,
    pub playing: bool,
    /// A publisher's session (ANNOUNCE … RECORD) rather than a reader's.
    pub record: bool,
}

/// What the server does after sending the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Start (or resume) sending the session's tracks.
    Play,
    /// Stop sending; the session stays.
    Pause,
    /// Stop sending; the session is over (the connection stays open).
    Teardown,
    /// Keep the publication the server attached for this ANNOUNCE.
    Announce,
    /// Take the publisher's media from now on.
    Record,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub response: Response,
    pub action: Action,
}

/// A connection's state: the session it may create and the facts it needs to answer.
#[derive(Debug)]
pub struct Conn {
    session_id: String,
    random: u128,
    /// The server's RTP and RTCP ports, when it offers UDP.
    udp_ports: Option<(u16, u16)>,
    timeout_secs: u64,
    session: Option<Session>,
    /// What the publisher announced, and for which camera.
    announced: Option<(String, Announced)>,
}

impl Conn {
    /// `session_id` and `random` come from a good random source: nobody may guess either.
    pub fn new(
        session_id: String,
        random: u128,
        udp_ports: Option<(u16, u16)>,
        timeout_secs: u64,
    ) -> Conn {
        Conn {
            session_id,
            random,
            udp_ports,
            timeout_secs,
            session: None,
            announced: None,
        }
    }

    /// What the publisher on this connection announced.
    pub fn announced(&self) -> Option<&Announced> {
        self.announced.as_ref().map(|(_, a)| a)
    }

    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The server could not start what PLAY or RECORD asked for (no subscription; a UDP
    /// client port another publisher registered first): the session is not playing.
    pub fn play_failed(&mut self) {
        if let Some(s) = &mut self.session {
            s.playing = false;
        }
    }

    /// Answers `request`; `lookup` is what the server found for the camera a DESCRIBE or SETUP
    /// names (anything for other methods).
    pub fn handle(&mut self, request: &Request, lookup: Lookup) -> Reply {
        let cseq = request.cseq();
        let reply = |response| Reply {
            response,
            action: Action::None,
        };
        let Some(cseq) = cseq else {
            return reply(error(400, None, "the request has no CSeq"));
        };
        let cseq = Some(cseq);
        // A session id that is not this connection's: the client is confused or guessing.
        if let Some(given) = request.header("Session") {
            let given = given.split(';').next().unwrap_or_default().trim();
            if self.session.as_ref().is_none_or(|s| s.id != given) {
                return reply(error(454, cseq, "no such session on this connection"));
            }
        }
        match &request.method {
            Method::Options => reply(Response::new(200, cseq).header("Public", PUBLIC)),
            Method::Describe => {
                if target(&request.uri).is_none() {
                    return reply(error(404, cseq, "expected rtsp://HOST:PORT/{camera}"));
                }
                match lookup {
                    Lookup::Found { sdp, .. } => {
                        let base = request.uri.split('?').next().unwrap_or_default();
                        let base = format!("{}/", base.trim_end_matches('/'));
                        reply(
                            Response::new(200, cseq)
                                .header("Content-Base", base)
                                .body("application/sdp", sdp.into_bytes()),
                        )
                    }
                    Lookup::Unavailable(why) => reply(error(503, cseq, &why)),
                    _ => reply(error(404, cseq, "no such camera")),
                }
            }
            Method::Setup => reply(self.setup(request, cseq, lookup)),
            Method::Play => {
                let Some(session) = self.session.as_mut().filter(|s| !s.record) else {
                    return reply(error(455, cseq, "SETUP a track before PLAY"));
                };
                if request.header("Session").is_none() {
                    return reply(error(454, cseq, "PLAY needs the Session header"));
                }
                session.playing = true;
                let tracks: Vec<_> = session
                    .tracks
                    .iter()
                    .map(|t| (t.track, t.sequence, None))
                    .collect();
                Reply {
                    response: Response::new(200, cseq)
                        .header("Session", self.session_header())
                        .header("Range", "npt=0.000-")
                        .header("RTP-Info", rtp_info(&request.uri, &tracks)),
                    action: Action::Play,
                }
            }
            Method::Pause => {
                let Some(session) = self.session.as_mut() else {
                    return reply(error(455, cseq, "no session to pause"));
                };
                session.playing = false;
                Reply {
                    response: Response::new(200, cseq).header("Session", self.session_header()),
                    action: Action::Pause,
                }
            }
            Method::Teardown => {
                let had_announce = self.announced.take().is_some();
                if self.session.take().is_none() && !had_announce {
                    return reply(error(454, cseq, "no session to tear down"));
                }
                Reply {
                    response: Response::new(200, cseq),
                    action: Action::Teardown,
                }
            }
            // Keep-alives: the connection's activity is what keeps its session.
            Method::GetParameter | Method::SetParameter => {
                let mut r = Response::new(200, cseq);
                if self.session.is_some() {
                    r = r.header("Session", self.session_header());
                }
                reply(r)
            }
            Method::Announce => {
                if self.session.is_some() || self.announced.is_some() {
                    return reply(error(455, cseq, "this connection already has a session"));
                }
                let Some(target) = target(&request.uri).filter(|t| t.control.is_none()) else {
                    return reply(error(404, cseq, "expected rtsp://HOST:PORT/{camera}"));
                };
                match lookup {
                    Lookup::Publishable => {}
                    Lookup::Refused { status, why } => return reply(error(status, cseq, &why)),
                    Lookup::NotFound => return reply(error(404, cseq, "no such camera")),
                    Lookup::Unavailable(why) => return reply(error(503, cseq, &why)),
                    Lookup::Found { .. } => {
                        return reply(error(405, cseq, "this camera takes no publisher"))
                    }
                }
                let sdp = String::from_utf8_lossy(&request.body);
                match parse_announce(&sdp) {
                    Ok(announced) => {
                        self.announced = Some((target.camera, announced));
                        Reply {
                            response: Response::new(200, cseq),
                            action: Action::Announce,
                        }
                    }
                    Err(why) => reply(error(400, cseq, &why)),
                }
            }
            Method::Record => {
                let Some(session) = self.session.as_mut().filter(|s| s.record) else {
                    return reply(error(455, cseq, "ANNOUNCE and SETUP before RECORD"));
                };
                session.playing = true;
                Reply {
                    response: Response::new(200, cseq).header("Session", self.session_header()),
                    action: Action::Record,
                }
            }
            Method::Other(_) => reply(error(501, cseq, "unknown method")),
        }
    }

    fn setup(&mut self, request: &Request, cseq: Option<u32>, lookup: Lookup) -> Response {
        let Some(target) = target(&request.uri) else {
            return error(404, cseq, "expected rtsp://HOST:PORT/{camera}/trackID=N");
        };
        if let Some((camera, announced)) = &self.announced {
            let (camera, announced) = (camera.clone(), announced.clone());
            return self.setup_record(request, cseq, &target, camera, announced, lookup);
        }
        if target.control.is_some() && target.track.is_none() {
            return error(
                404,
                cseq,
                "no such track (trackID=0 is the video, 1 the audio)",
            );
        }
        if self.session.as_ref().is_some_and(|s| s.playing) {
            return error(455, cseq, "a playing session cannot change its tracks");
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.camera != target.camera)
        {
            return error(459, cseq, "a session plays one camera");
        }
        let audio = match lookup {
            Lookup::Found { audio, .. } => audio,
            Lookup::Unavailable(why) => return error(503, cseq, &why),
            _ => return error(404, cseq, "no such camera"),
        };
        let track = target.track.unwrap_or(TrackKind::Video);
        if track == TrackKind::Audio && !audio {
            return error(404, cseq, "this camera has no audio track");
        }
        let transport = match self.transport(request, cseq, track) {
            Ok(t) => t,
            Err(response) => return response,
        };
        let transport_header = match (transport, self.udp_ports) {
            (Transport::Tcp { rtp, rtcp }, _) => {
                format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp}")
            }
            (Transport::Udp { rtp, rtcp }, Some((srtp, srtcp))) => {
                format!("RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={srtp}-{srtcp}")
            }
            (Transport::Udp { .. }, None) => {
                return error(461, cseq, "this server offers RTP over TCP only")
            }
        };
        let shift = if track == TrackKind::Video { 0 } else { 64 };
        let bits = (self.random >> shift) as u64;
        let setup = Setup {
            track,
            transport,
            ssrc: bits as u32,
            sequence: (bits >> 32) as u16,
            // The offsets differ per track only by chance: RTP time is per stream.
            time_offset: ((bits >> 48) as u32) << 8,
        };
        let session = self.session.get_or_insert_with(|| Session {
            id: self.session_id.clone(),
            camera: target.camera.clone(),
            tracks: Vec::new(),
            playing: false,
            record: false,
        });
        session.tracks.retain(|t| t.track != track);
        session.tracks.push(setup);
        Response::new(200, cseq)
            .header(
                "Transport",
                format!("{transport_header};ssrc={:08X}", setup.ssrc),
            )
            .header("Session", self.session_header())
    }

    /// SETUP of an announced track: the publisher sends, over its RTSP connection.
    fn setup_record(
        &mut self,
        request: &Request,
        cseq: Option<u32>,
        target: &Target,
        camera: String,
        announced: Announced,
        lookup: Lookup,
    ) -> Response {
        // The server found the client port to be another publisher's.
        if let Lookup::Refused { status, why } = lookup {
            return error(status, cseq, &why);
        }
        if target.camera != camera {
            return error(459, cseq, "a session publishes one camera");
        }
        if self.session.as_ref().is_some_and(|s| s.playing) {
            return error(455, cseq, "a recording session cannot change its tracks");
        }
        let Some(track) = target.control.as_deref().and_then(|c| announced.track(c)) else {
            return error(404, cseq, "no announced track has this control URL");
        };
        let transport = match self.transport(request, cseq, track) {
            Ok(t) => t,
            Err(response) => return response,
        };
        let reply_transport = match (transport, self.udp_ports) {
            (Transport::Tcp { rtp, rtcp }, _) => {
                format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};mode=record")
            }
            (Transport::Udp { rtp, rtcp }, Some((srtp, srtcp))) => {
                let clash = self.session.iter().flat_map(|s| &s.tracks).any(|t| {
                    t.track != track
                        && matches!(t.transport, Transport::Udp { rtp: a, .. } if a == rtp)
                });
                if clash {
                    return error(461, cseq, "client ports already in use");
                }
                format!(
                    "RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={srtp}-{srtcp};mode=record"
                )
            }
            (Transport::Udp { .. }, None) => {
                return error(461, cseq, "publish over TCP (ffmpeg: -rtsp_transport tcp)")
            }
        };
        let session = self.session.get_or_insert_with(|| Session {
            id: self.session_id.clone(),
            camera,
            tracks: Vec::new(),
            playing: false,
            record: true,
        });
        session.tracks.retain(|t| t.track != track);
        session.tracks.push(Setup {
            track,
            transport,
            ssrc: 0,
            sequence: 0,
            time_offset: 0,
        });
        Response::new(200, cseq)
            .header("Transport", reply_transport)
            .header("Session", self.session_header())
    }

    /// The `Transport:` a SETUP of `track` asks for (reading or publishing alike): 461 when
    /// there is none this server does, or its interleaved channels are another track's.
    fn transport(
        &self,
        request: &Request,
        cseq: Option<u32>,
        track: TrackKind,
    ) -> Result<Transport, Response> {
        let transport = match request.header("Transport").map(parse_transport) {
            Some(Ok(t)) => t,
            Some(Err(why)) => return Err(error(461, cseq, &why)),
            None => return Err(error(461, cseq, "SETUP needs a Transport header")),
        };
        if let Transport::Tcp { rtp, rtcp } = transport {
            let clash = self.session.iter().flat_map(|s| &s.tracks).any(|t| {
                t.track != track
                    && matches!(t.transport, Transport::Tcp { rtp: a, rtcp: b }
                        if [a, b].iter().any(|c| *c == rtp || *c == rtcp))
            });
            if clash || rtp == rtcp {
                return Err(error(461, cseq, "interleaved channels already in use"));
            }
        }
        Ok(transport)
    }

    fn session_header(&self) -> String {
        format!("{};timeout={}", self.session_id, self.timeout_secs)
    }
}

/// `RTP-Info` (RFC 2326 §12.33) for a PLAY of `uri`: each track's first sequence number and,
/// when known, the RTP time of the play's start. Those times all name one instant, which is
/// how a client aligns the tracks before the first sender report.
pub fn rtp_info(uri: &str, tracks: &[(TrackKind, u16, Option<u32>)]) -> String {
    let base = uri.split('?').next().unwrap_or_default();
    let base = base.trim_end_matches('/');
    let info: Vec<String> = tracks
        .iter()
        .map(|(track, seq, time)| {
            let mut t = format!("url={base}/{};seq={seq}", control(*track));
            if let Some(time) = time {
                t.push_str(&format!(";rtptime={time}"));
            }
            t
        })
        .collect();
    info.join(",")
}

fn control(track: TrackKind) -> &'static str {
    match track {
        TrackKind::Video => VIDEO_CONTROL,
        TrackKind::Audio => AUDIO_CONTROL,
    }
}

/// An error response whose body says why in plain text.
pub fn error(status: u16, cseq: Option<u32>, why: &str) -> Response {
    Response::new(status, cseq).body("text/plain", format!("{why}\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::rtsp::message::{parse, Incoming};

    const URL: &str = "rtsp://127.0.0.1:8554/door";

    fn request(text: &str) -> Request {
        let text = text.replace('\n', "\r\n") + "\r\n";
        match parse(text.as_bytes()).unwrap().unwrap().0 {
            Incoming::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn found() -> Lookup {
        Lookup::Found {
            sdp: "v=0\r\n".into(),
            audio: true,
        }
    }

    fn text(r: &Reply) -> String {
        String::from_utf8(r.response.to_bytes()).unwrap()
    }

    fn conn(udp: bool) -> Conn {
        Conn::new(
            "a1b2c3".into(),
            0x0102_0304_0506_0708_1112_1314_1516_1718,
            udp.then_some((40_000, 40_001)),
            60,
        )
    }

    #[test]
    fn targets_name_a_camera_and_a_track() {
        let t = |u: &str| target(u);
        assert_eq!(
            t("rtsp://h:8554/door"),
            Some(Target {
                camera: "door".into(),
                track: None,
                control: None,
            })
        );
        assert_eq!(t("rtsp://h/door/").unwrap().track, None);
        assert_eq!(
            t("rtsp://h/door/trackID=0?x=1").unwrap().track,
            Some(TrackKind::Video)
        );
        assert_eq!(
            t("rtsp://u:p@h/door/trackID=1").unwrap().track,
            Some(TrackKind::Audio)
        );
        assert_eq!(
            t("rtsp://h/door/streamid=0").unwrap().control.as_deref(),
            Some("streamid=0")
        );
        let after_query = t("rtsp://h/door?token=x/streamid=1").unwrap();
        assert_eq!(
            (after_query.camera.as_str(), after_query.control.as_deref()),
            ("door", Some("streamid=1"))
        );
        assert_eq!(t("rtsp://h/door?token=x").unwrap().control, None);
        for bad in [
            "*",
            "http://h/door",
            "rtsp://h",
            "rtsp://h/",
            "rtsp://h/a/trackID=0/b",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_whole_tcp_session_as_ffmpeg_runs_it() {
        let mut c = conn(false);
        let r = c.handle(
            &request("OPTIONS rtsp://127.0.0.1:8554/door RTSP/1.0\nCSeq: 1\n"),
            Lookup::NotFound,
        );
        assert!(text(&r).contains(&format!("Public: {PUBLIC}\r\n")));
        let r = c.handle(
            &request(&format!(
                "DESCRIBE {URL} RTSP/1.0\nCSeq: 2\nAccept: application/sdp\n"
            )),
            found(),
        );
        let t = text(&r);
        assert!(t.starts_with("RTSP/1.0 200 OK\r\nCSeq: 2\r\n"), "{t}");
        assert!(t.contains(&format!("Content-Base: {URL}/\r\n")), "{t}");
        assert!(
            t.contains("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"),
            "{t}"
        );
        let r = c.handle(
            &request(&format!("SETUP {URL}/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\n")),
            found(),
        );
        let t = text(&r);
        assert!(
            t.contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=15161718\r\n"),
            "{t}"
        );
        assert!(t.contains("Session: a1b2c3;timeout=60\r\n"), "{t}");
        let r = c.handle(
            &request(&format!("SETUP {URL}/trackID=1 RTSP/1.0\nCSeq: 4\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\nSession: a1b2c3\n")),
            found(),
        );
        assert!(text(&r).contains("ssrc=05060708"), "{}", text(&r));
        let r = c.handle(
            &request(&format!(
                "PLAY {URL}/ RTSP/1.0\nCSeq: 5\nSession: a1b2c3\nRange: npt=0.000-\n"
            )),
            Lookup::NotFound,
        );
        assert_eq!(r.action, Action::Play);
        let t = text(&r);
        assert!(
            t.contains(&format!(
                "RTP-Info: url={URL}/trackID=0;seq={},url={URL}/trackID=1;seq={}\r\n",
                0x1314, 0x0304
            )),
            "{t}"
        );
        let s = c.session().unwrap();
        assert!(s.playing);
        assert_eq!(s.tracks.len(), 2);
        let r = c.handle(
            &request(&format!(
                "GET_PARAMETER {URL}/ RTSP/1.0\nCSeq: 6\nSession: a1b2c3\n"
            )),
            Lookup::NotFound,
        );
        assert_eq!(r.response.status, 200);
        let r = c.handle(
            &request(&format!(
                "TEARDOWN {URL}/ RTSP/1.0\nCSeq: 7\nSession: a1b2c3\n"
            )),
            Lookup::NotFound,
        );
        assert_eq!((r.response.status, r.action), (200, Action::Teardown));
        assert!(c.session().is_none());
    }

    #[test]
    fn udp_setup_names_the_server_ports_and_never_another_destination() {
        let mut c = conn(true);
        let r = c.handle(
            &request(&format!(
                "SETUP {URL}/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP;unicast;client_port=5000-5001;destination=10.9.9.9\n"
            )),
            found(),
        );
        let t = text(&r);
        assert!(
            t.contains(
                "Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=40000-40001;ssrc="
            ),
            "{t}"
        );
        assert!(!t.contains("10.9.9.9"));
        assert_eq!(
            c.session().unwrap().tracks[0].transport,
            Transport::Udp {
                rtp: 5000,
                rtcp: 5001
            }
        );
        // Without UDP ports the server says it only does TCP.
        let mut tcp_only = conn(false);
        let r = tcp_only.handle(
            &request(&format!("SETUP {URL}/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP;unicast;client_port=5000-5001\n")),
            found(),
        );
        assert_eq!(r.response.status, 461);
    }

    #[test]
    fn a_publisher_announces_sets_up_over_tcp_or_udp_and_records() {
        let sdp =
            "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n\
                   m=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:streamid=1\r\n";
        let mut c = conn(true);
        let wire = format!(
            "ANNOUNCE {URL} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let announce = match parse(wire.as_bytes()).unwrap().unwrap().0 {
            Incoming::Request(r) => r,
            other => panic!("{other:?}"),
        };
        let r = c.handle(&announce, Lookup::Publishable);
        assert_eq!((r.response.status, r.action), (200, Action::Announce));
        let r = c.handle(
            &request(&format!("SETUP {URL}/streamid=0 RTSP/1.0\nCSeq: 2\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\n")),
            Lookup::Publishable,
        );
        assert!(
            text(&r).contains("Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"),
            "{}",
            text(&r)
        );
        let r = c.handle(
            &request(&format!("SETUP {URL}/streamid=1 RTSP/1.0\nCSeq: 3\nSession: a1b2c3\nTransport: RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record\n")),
            Lookup::Publishable,
        );
        assert!(
            text(&r).contains("Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=40000-40001;mode=record\r\n"),
            "{}",
            text(&r)
        );
        // The server found this client port to be another publisher's: 461, nothing set up.
        let r = c.handle(
            &request(&format!("SETUP {URL}/streamid=1 RTSP/1.0\nCSeq: 3\nSession: a1b2c3\nTransport: RTP/AVP/UDP;unicast;client_port=6000-6001;mode=record\n")),
            Lookup::Refused {
                status: 461,
                why: "client port 6000 is another publisher's".into(),
            },
        );
        assert_eq!(r.response.status, 461, "{}", text(&r));
        assert!(text(&r).contains("another publisher's"));
        assert!(c.session().unwrap().tracks.iter().all(|t| t.transport
            != Transport::Udp {
                rtp: 6000,
                rtcp: 6001
            }));
        let r = c.handle(&request(&format!("SETUP {URL}/streamid=7 RTSP/1.0\nCSeq: 4\nSession: a1b2c3\nTransport: RTP/AVP/TCP;interleaved=4-5\n")), Lookup::Publishable);
        assert_eq!(r.response.status, 404, "not an announced track");
        let r = c.handle(
            &request(&format!("PLAY {URL} RTSP/1.0\nCSeq: 5\nSession: a1b2c3\n")),
            Lookup::NotFound,
        );
        assert_eq!(
            r.response.status, 455,
            "a publisher's session does not PLAY"
        );
        let r = c.handle(
            &request(&format!(
                "RECORD {URL} RTSP/1.0\nCSeq: 6\nSession: a1b2c3\n"
            )),
            Lookup::NotFound,
        );
        assert_eq!((r.response.status, r.action), (200, Action::Record));
        let s = c.session().unwrap();
        assert!(s.record && s.playing && s.tracks.len() == 2);
    }

    #[test]
    fn requests_out_of_place_get_the_rfc_statuses() {
        let mut c = conn(false);
        let status = |c: &mut Conn, text: &str, lookup: Lookup| {
            c.handle(&request(text), lookup).response.status
        };
        assert_eq!(
            status(&mut c, &format!("DESCRIBE {URL} RTSP/1.0\n"), found()),
            400,
            "no CSeq"
        );
        assert_eq!(
            status(&mut c, &format!("PLAY {URL} RTSP/1.0\nCSeq: 1\n"), found()),
            455
        );
        assert_eq!(
            status(
                &mut c,
                &format!("PLAY {URL} RTSP/1.0\nCSeq: 1\nSession: guess\n"),
                found()
            ),
            454
        );
        assert_eq!(
            status(
                &mut c,
                &format!("DESCRIBE {URL} RTSP/1.0\nCSeq: 1\n"),
                Lookup::NotFound
            ),
            404
        );
        assert_eq!(
            status(
                &mut c,
                &format!("DESCRIBE {URL} RTSP/1.0\nCSeq: 1\n"),
                Lookup::Unavailable("not live".into())
            ),
            503
        );
        assert_eq!(
            status(&mut c, "DESCRIBE * RTSP/1.0\nCSeq: 1\n", found()),
            404
        );
        assert_eq!(
            status(
                &mut c,
                &format!("SETUP {URL}/trackID=0 RTSP/1.0\nCSeq: 1\n"),
                found()
            ),
            461
        );
        assert_eq!(
            status(&mut c, &format!("SETUP {URL}/trackID=1 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;interleaved=0-1\n"), Lookup::Found { sdp: String::new(), audio: false }),
            404,
            "no audio track"
        );
        assert_eq!(
            status(
                &mut c,
                &format!("ANNOUNCE {URL} RTSP/1.0\nCSeq: 1\n"),
                found()
            ),
            405
        );
        assert_eq!(
            status(&mut c, &format!("FLY {URL} RTSP/1.0\nCSeq: 1\n"), found()),
            501
        );
        assert_eq!(
            status(
                &mut c,
                &format!("TEARDOWN {URL} RTSP/1.0\nCSeq: 1\n"),
                found()
            ),
            454
        );
        // One camera per session, and channels that do not clash.
        let tcp = |ch: &str| format!("Transport: RTP/AVP/TCP;interleaved={ch}\n");
        assert_eq!(
            status(
                &mut c,
                &format!("SETUP {URL}/trackID=0 RTSP/1.0\nCSeq: 2\n{}", tcp("0-1")),
                found()
            ),
            200
        );
        assert_eq!(
            status(
                &mut c,
                &format!(
                    "SETUP rtsp://h/other/trackID=0 RTSP/1.0\nCSeq: 3\nSession: a1b2c3\n{}",
                    tcp("2-3")
                ),
                found()
            ),
            459
        );
        assert_eq!(
            status(
                &mut c,
                &format!(
                    "SETUP {URL}/trackID=1 RTSP/1.0\nCSeq: 4\nSession: a1b2c3\n{}",
                    tcp("1-2")
                ),
                found()
            ),
            461
        );
        assert_eq!(
            status(
                &mut c,
                &format!("PLAY {URL} RTSP/1.0\nCSeq: 5\nSession: a1b2c3\n"),
                found()
            ),
            200
        );
        assert_eq!(
            status(
                &mut c,
                &format!(
                    "SETUP {URL}/trackID=1 RTSP/1.0\nCSeq: 6\nSession: a1b2c3\n{}",
                    tcp("2-3")
                ),
                found()
            ),
            455,
            "tracks are fixed while playing"
        );
        let r = c.handle(
            &request(&format!("PAUSE {URL} RTSP/1.0\nCSeq: 7\nSession: a1b2c3\n")),
            found(),
        );
        assert_eq!((r.response.status, r.action), (200, Action::Pause));
        assert!(!c.session().unwrap().playing);
    }
}
