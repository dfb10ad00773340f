//! CORS, opt-in per origin: `[server] player_origins` may watch from another origin (LL-HLS with
//! hls.js, WHEP, the MSE WebSocket), `allowed_origins` may also control; any other origin gets
//! no CORS header, and neither it nor a watching-only origin can change state.
//!
//! The pages are real: each origin is a tiny static HTTP server on its own 127.0.0.1 port, and
//! headless Chromium plays from it with npm's hls.js and its own WebRTC stack.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::browser::Browser;
use common::Server;
use reqwest::blocking::Response;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Starts a livelens whose `[server]` lists `player` and `control` origins, with a small
/// camera `cam`.
/// Each test has its own config file: livelens saves API changes back to it and reloads it when
/// it changes, so two servers on one file would see each other's cameras.
fn server(name: &str, player: &str, control: &str) -> Server {
    let config = format!(
        "[server]\nplayer_origins = [\"{player}\"]\nallowed_origins = [\"{control}\"]\n\n\
         [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n"
    );
    let path = common::write_config(name, &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(10));
    server
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// All values of a header that may repeat (`Vary`), joined.
fn all(r: &Response, name: &str) -> String {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

fn preflight(server: &Server, path: &str, origin: &str, method: &str) -> Response {
    server
        .http
        .request(Method::OPTIONS, server.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .unwrap()
}

fn assert_no_cors(r: &Response, what: &str) {
    for (name, _) in r.headers() {
        assert!(
            !name.as_str().starts_with("access-control-"),
            "{what}: {name} given to an origin that may not have it"
        );
    }
}

#[test]
fn preflights_and_answers_carry_cors_only_for_the_origins_listed() {
    let (player, control, evil) = ("http://player.test", "http://dash.test", "http://evil.test");
    let server = server("cors-headers", player, control);
    let http = &server.http;

    // A player origin's preflights for WHEP (POST, then PATCH/DELETE of its session) and for
    // LL-HLS (a route with no OPTIONS handler of its own) are answered in full.
    for (path, method) in [
        ("/api/cameras/cam/whep", "POST"),
        ("/api/cameras/cam/whep/0123abcd", "PATCH"),
        ("/api/cameras/cam/whep/0123abcd", "DELETE"),
        ("/api/cameras/cam/hls/stream.m3u8", "GET"),
    ] {
        let r = preflight(&server, path, player, method);
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path} {method}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(player));
        let methods = header(&r, "access-control-allow-methods").unwrap();
        assert!(methods.contains(method), "{methods}");
        let headers = header(&r, "access-control-allow-headers").unwrap();
        for h in ["Authorization", "Content-Type", "If-Match"] {
            assert!(headers.contains(h), "{headers}");
        }
        assert!(
            all(&r, "vary").contains("Origin"),
            "{path}: no Vary: Origin"
        );
        assert!(header(&r, "access-control-allow-credentials").is_none());
    }
    // Control routes: a player origin's preflight is refused, a control origin's answered.
    for (path, method) in [
        ("/api/cameras", "POST"),
        ("/api/cameras/cam", "PATCH"),
        ("/api/cameras/cam", "DELETE"),
        ("/api/cameras/cam/whip", "POST"),
    ] {
        let r = preflight(&server, path, player, method);
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path} {method}");
        assert_no_cors(&r, path);
        assert!(r.text().unwrap().contains("allowed_origins"));
        let r = preflight(&server, path, control, method);
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path} {method}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(control));
    }
    // An origin in no list is refused everywhere, with no CORS header.
    for path in [
        "/api/cameras/cam/whep",
        "/api/cameras",
        "/api/cameras/cam/hls/index.m3u8",
    ] {
        let r = preflight(&server, path, evil, "POST");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert_no_cors(&r, path);
        assert!(r.text().unwrap().contains("player_origins"));
    }
    // WHEP's own OPTIONS (not a preflight) is unchanged.
    let r = http
        .request(Method::OPTIONS, server.url("/api/cameras/cam/whep"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "accept-post"), Some("application/sdp"));

    // Answers: the playlist reaches everyone (a GET changes nothing), but only listed origins
    // may read it; the session's Location is exposed to them.
    let get = |path: &str, origin: &str| {
        http.get(server.url(path))
            .header("origin", origin)
            .send()
            .unwrap()
    };
    for origin in [player, control] {
        let r = get("/api/cameras/cam/hls/index.m3u8", origin);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "access-control-allow-origin"), Some(origin));
        let exposed = header(&r, "access-control-expose-headers").unwrap();
        for h in ["Location", "Link", "ETag"] {
            assert!(exposed.contains(h), "{exposed}");
        }
        assert!(all(&r, "vary").contains("Origin"));
        assert!(r.text().unwrap().starts_with("#EXTM3U"));
    }
    let r = get("/api/cameras/cam/hls/index.m3u8", evil);
    assert_eq!(r.status(), StatusCode::OK);
    assert_no_cors(&r, "playlist to a foreign origin");
    // The camera list is the control origin's to read, not the player's.
    let r = get("/api/cameras", player);
    assert_no_cors(&r, "camera list to a player origin");
    let r = get("/api/cameras", control);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(control));

    // A WHEP offer from a player origin reaches the handler (a bad offer: 400 the page can read);
    // from a foreign origin it is refused before it.
    let offer = |origin: &str| {
        http.post(server.url("/api/cameras/cam/whep"))
            .header("origin", origin)
            .header("content-type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .unwrap()
    };
    let r = offer(player);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(player));
    let r = offer(evil);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_no_cors(&r, "WHEP offer from a foreign origin");

    // State changes a form could send without a preflight: refused for the player origin and a
    // foreign one, taken from the control origin.
    let planted = json!({"id": "planted", "source": "testsrc://?size=160x120"});
    for origin in [player, evil] {
        let attempts = [
            http.post(server.url("/api/cameras")).json(&planted),
            http.patch(server.url("/api/cameras/cam"))
                .json(&json!({"source": "testsrc://?size=160x120"})),
            http.post(server.url("/api/cameras/cam/stop")),
            http.delete(server.url("/api/cameras/cam")),
            http.post(server.url("/api/cameras/cam/whip"))
                .header("content-type", "application/sdp")
                .body("v=0\r\n"),
        ];
        for attempt in attempts {
            let r = attempt.header("origin", origin).send().unwrap();
            let url = r.url().to_string();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin} {url}");
            assert_no_cors(&r, &url);
        }
    }
    assert_eq!(
        server.get("/api/cameras/planted").status(),
        StatusCode::NOT_FOUND
    );
    let cam = server.get_json("/api/cameras/cam");
    assert_eq!(cam["source"], "testsrc://?size=640x360&fps=25");
    assert_eq!(server.camera_state("cam"), "live");
    let r = http
        .post(server.url("/api/cameras"))
        .header("origin", control)
        .json(&planted)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(control));

    // WebSockets have no CORS: the upgrade itself is checked. A player origin may watch over
    // MSE; a foreign one may not.
    let host = server.base.trim_start_matches("http://").to_string();
    assert_eq!(upgrade(&host, "/api/cameras/cam/mse", player), 101);
    assert_eq!(upgrade(&host, "/api/ws?src=cam", player), 101);
    assert_eq!(upgrade(&host, "/api/cameras/cam/mse", evil), 403);
}

/// The status of a WebSocket upgrade sent with `origin`.
fn upgrade(host: &str, path: &str, origin: &str) -> u16 {
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line[9..12].parse().unwrap()
}

/// A web site on its own 127.0.0.1 port (its own origin): `/` is an empty page that loads
/// `/hls.js` (npm's hls.js). Serves until the test ends.
fn site() -> String {
    let hls_js = common::tools::hls_js();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split(' ').nth(1).unwrap_or("/");
            let (kind, body) = if path == "/hls.js" {
                ("text/javascript", hls_js.as_str())
            } else {
                (
                    "text/html",
                    "<!doctype html><html><head><script src=\"/hls.js\"></script></head><body></body></html>",
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    origin
}

/// Page helpers: hls.js playing a URL, a WHEP client, and control calls; each notes what it
/// got in `window.t`.
const PAGE: &str = "
  window.t = {hlsFrames: 0, hlsFatal: null, whepFrames: 0};
  window.playHls = (url) => {
    const v = document.createElement('video');
    v.muted = true; v.autoplay = true; document.body.append(v);
    const hls = new Hls({lowLatencyMode: true});
    hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.t.hlsFatal = d.type + '/' + d.details; });
    hls.loadSource(url);
    hls.attachMedia(v);
    v.play().catch(() => {});
    const count = () => { window.t.hlsFrames++; v.requestVideoFrameCallback(count); };
    v.requestVideoFrameCallback(count);
    window.hls = hls;
  };
  // WHEP against another origin: the session URL is relative to the endpoint.
  window.whep = async (endpoint) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    let r;
    try {
      r = await fetch(endpoint, {method: 'POST', headers: {'content-type': 'application/sdp'}, body: offer.sdp});
    } catch (e) { pc.close(); return {blocked: String(e)}; }
    const location = r.headers.get('location');
    if (r.status !== 201) { pc.close(); return {status: r.status}; }
    await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
    window.t.pc = pc;
    window.t.session = location && new URL(location, endpoint).href;
    return {status: r.status, location};
  };
  window.whepFrames = async () => {
    let n = 0;
    (await window.t.pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded || 0; });
    return n;
  };
  // A call that needs a preflight: its status, or 'blocked' when the browser refused it.
  window.call = async (url, init) => {
    try { const r = await fetch(url, init); return r.status; } catch (e) { return 'blocked'; }
  };
  // A call a cross-site form could make (no preflight): the page never sees the answer, so
  // only the server can refuse it.
  window.blind = async (url, method) => {
    await fetch(url, {method, mode: 'no-cors'}).catch(() => {});
    return 'sent';
  };";

/// The page at `site` plays camera `cam` of `base` with hls.js and over WHEP, and ends its
/// WHEP session with a cross-origin DELETE.
async fn plays(browser: &Browser, server: &Server, site: &str) {
    browser.goto(&format!("{site}/")).await;
    browser.run(PAGE).await;
    let base = &server.base;
    browser
        .run(&format!(
            "window.playHls('{base}/api/cameras/cam/hls/index.m3u8');"
        ))
        .await;
    let whep = browser
        .run(&format!(
            "return await window.whep('{base}/api/cameras/cam/whep');"
        ))
        .await;
    assert_eq!(whep["status"], 201, "{site}: WHEP {whep}");
    assert!(
        whep["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/api/cameras/cam/whep/")),
        "{site}: the page cannot read Location: {whep}"
    );
    browser
        .until(
            Duration::from_secs(15),
            "25 frames over WHEP",
            "return (await window.whepFrames()) >= 25;",
        )
        .await;
    browser
        .until(
            Duration::from_secs(25),
            "25 frames from hls.js",
            "if (window.t.hlsFatal) throw new Error('hls.js: ' + window.t.hlsFatal); \
             return window.t.hlsFrames >= 25;",
        )
        .await;
    let status = browser
        .run("const s = await window.call(window.t.session, {method: 'DELETE'}); window.t.pc.close(); return s;")
        .await;
    assert_eq!(status, 200, "{site}: WHEP DELETE");
    server
        .resources_until(Duration::from_secs(2), "the WHEP peer to be gone", |r| {
            r["peer_connections"] == 0
        })
        .await;
    browser.run("window.hls.destroy();").await;
}

/// What the page at `site` got from control calls, preflighted and blind.
async fn tries_control(browser: &Browser, base: &str) -> Value {
    browser
        .run(&format!(
            "return {{
               create: await window.call('{base}/api/cameras', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{id: 'planted', source: 'testsrc://?size=160x120'}})}}),
               remove: await window.call('{base}/api/cameras/cam', {{method: 'DELETE'}}),
               stop: await window.blind('{base}/api/cameras/cam/stop', 'POST'),
               remove_blind: await window.blind('{base}/api/cameras/cam', 'DELETE'),
             }};"
        ))
        .await
}

#[test]
fn listed_origins_play_ll_hls_and_whep_across_origins_and_others_cannot() {
    let _serial = common::browser::serial();
    let (player_site, control_site, stranger_site) = (site(), site(), site());
    let server = server("cors-browser", &player_site, &control_site);
    let base = server.base.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;

        // The player origin plays both ways, and cannot control.
        plays(&browser, &server, &player_site).await;
        let tried = tries_control(&browser, &base).await;
        assert_eq!(tried["create"], "blocked", "{tried}");
        assert_eq!(tried["remove"], "blocked", "{tried}");

        // An origin in no list: hls.js cannot read the playlist, the WHEP offer never gets an
        // answer the page can read, and no peer is made.
        browser.goto(&format!("{stranger_site}/")).await;
        browser.run(PAGE).await;
        browser
            .run(&format!("window.playHls('{base}/api/cameras/cam/hls/index.m3u8');"))
            .await;
        let whep = browser
            .run(&format!("return await window.whep('{base}/api/cameras/cam/whep');"))
            .await;
        assert!(whep["blocked"].is_string(), "a foreign page got {whep}");
        browser
            .until(
                Duration::from_secs(20),
                "hls.js to give up on the foreign origin",
                "return window.t.hlsFatal !== null;",
            )
            .await;
        let t = browser.run("return window.t;").await;
        assert_eq!(t["hlsFrames"], 0, "{t}");
        assert!(
            t["hlsFatal"].as_str().unwrap().starts_with("networkError"),
            "{t}"
        );
        let tried = tries_control(&browser, &base).await;
        assert_eq!(tried["create"], "blocked", "{tried}");
        assert_eq!(tried["remove"], "blocked", "{tried}");
        assert_eq!(server.resources_async().await["peer_connections"], 0);

        // The control origin plays too, and its control calls are answered.
        plays(&browser, &server, &control_site).await;
        let status = browser
            .run(&format!(
                "return await window.call('{base}/api/cameras', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{id: 'added', source: 'testsrc://?size=160x120'}})}});"
            ))
            .await;
        assert_eq!(status, 201);
        browser.close().await;
    });
    // Nothing the player and foreign pages sent changed anything.
    assert_eq!(
        server.get("/api/cameras/planted").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get("/api/cameras/added").status(), StatusCode::OK);
    assert_eq!(server.camera_state("cam"), "live");
}
